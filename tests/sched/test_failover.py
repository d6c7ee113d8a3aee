"""pf-scheduler leadership: followers redirect with `printfarm-leader`, and a
leader killed with SIGKILL in the middle of dispatching is replaced without
losing an attempt or starting one twice."""

import signal
import threading
import time

import grpc
import pytest

from conftest import RPC_TIMEOUT, pb, unique, wait_until

LEADER_KEY = "printfarm-leader"


def test_follower_answers_unavailable_with_leader(farm_factory):
    farm = farm_factory(replicas=2)
    leader = farm.leader()
    follower = farm.followers()[0]
    wait_until(lambda: _trailer_of(farm, follower), RPC_TIMEOUT, "the follower to know the leader")
    try:
        farm.stub_for(follower).ListJobs(pb.ListJobsRequest(), timeout=RPC_TIMEOUT)
        raise AssertionError("a follower answered ListJobs")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        md = dict(e.trailing_metadata() or ())
        assert md.get(LEADER_KEY) == leader.address, md
    # Agents and watchers are redirected the same way.
    a = farm.agent(unique("p"), unique("prof"), target=follower.address)
    code, details, md = a.wait_closed()
    assert code == grpc.StatusCode.UNAVAILABLE, details
    assert md.get(LEADER_KEY) == leader.address, md
    w = farm.watch(target=follower.address)
    wait_until(lambda: w.closed, RPC_TIMEOUT, "the watch on the follower to end")
    assert w.closed[0] == grpc.StatusCode.UNAVAILABLE
    assert w.closed[2].get(LEADER_KEY) == leader.address


def _trailer_of(farm, srv):
    try:
        farm.stub_for(srv).ListJobs(pb.ListJobsRequest(), timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        return dict(e.trailing_metadata() or ()).get(LEADER_KEY)
    return None


def test_leader_steps_down_and_streams_end_on_sigterm(farm_factory):
    farm = farm_factory(replicas=2)
    old = farm.leader()
    prof = unique("term")
    a = farm.agent(unique("p"), prof)
    a.wait_welcome()
    t0 = time.monotonic()
    farm.schedulers.remove(old)
    old.stop(expect_exit=0)  # SIGTERM: hands the lease over at once
    code, _, _ = a.wait_closed()
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    new = farm.leader(timeout=10)
    assert new is not old
    assert time.monotonic() - t0 < 10


def test_leader_that_loses_its_lease_steps_down_and_redirects(farm_factory):
    """The lease moves to the other replica behind the leader's back (as after
    a long pause): the old leader sees it on its next renew, steps down, ends
    its streams naming the new leader, and the new one fences a newer epoch."""
    import re
    import subprocess
    farm = farm_factory(replicas=2)
    old = farm.leader()
    new = farm.followers()[0]
    epoch = int(farm.sql("SELECT epoch FROM leader_epoch")[0][0])
    a = farm.agent(unique("p"), unique("prof"))
    a.wait_welcome()
    w = farm.watch()
    instance = re.search(r"event=scheduler_ready .*instance=(\S+)", new.log).group(1)
    r = subprocess.run(["redis-cli", "-u", farm.redis_url, "SET", "printfarm:scheduler:leader",
                        instance, "PX", "5000"], capture_output=True, text=True)
    assert r.returncode == 0 and "OK" in r.stdout, r
    code, details, md = a.wait_closed(timeout=10)
    assert code == grpc.StatusCode.UNAVAILABLE, details
    assert md.get(LEADER_KEY) == new.address, md
    wait_until(lambda: w.closed, RPC_TIMEOUT, "the watch to end")
    assert w.closed[0] == grpc.StatusCode.UNAVAILABLE
    assert farm.leader(timeout=10) is new
    assert int(farm.sql("SELECT epoch FROM leader_epoch")[0][0]) == epoch + 1
    assert _trailer_of(farm, old) == new.address
    again = farm.agent(a.printer_id, a.profile)
    assert again.wait_welcome().epoch == epoch + 1


class Printer:
    """A scripted agent that follows the leader and prints what it is told,
    idempotently by attempt id, like pf-agent."""

    def __init__(self, farm, pid, prof):
        self.farm = farm
        self.pid = pid
        self.prof = prof
        self.agent = None
        self.current = None  # dict for AgentHello.current
        self.connects = 0

    def connect(self):
        self.agent = self.farm.agent(self.pid, self.prof, current=self.current,
                                     seq_start=self.agent.seq if self.agent else 0)
        self.agent.wait_welcome()
        self.connects += 1


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.02, 0.05, 0.2])
def test_kill_leader_mid_dispatch(farm_factory, delay):
    """SIGKILL the leader `delay` seconds after SubmitJob: before, during or
    after the round that records and sends the copies."""
    farm = farm_factory(replicas=2, extra_args=["--dispatch-interval", "200ms"])
    prof = unique("fo")
    n = 8
    printers = [Printer(farm, unique("fo-p%d" % i), prof) for i in range(n)]
    for p in printers:
        p.connect()
    bundle = farm.bundle([prof])
    old = farm.leader()
    old_epoch = int(farm.sql("SELECT epoch FROM leader_epoch")[0][0])

    # Submit, then kill the leader while it dispatches the copies.
    job = farm.submit(bundle, count=n)
    time.sleep(delay)
    t0 = time.monotonic()
    farm.kill(old, signal.SIGKILL)

    got_before = {}
    for p in printers:
        p.agent.wait_closed(timeout=10)
        sps = p.agent.start_prints()
        assert len(sps) <= 1, "%s got %d StartPrints from one leader" % (p.pid, len(sps))
        if sps:
            got_before[p.pid] = sps[0].attempt_id
            p.current = dict(attempt_id=sps[0].attempt_id, state=pb.ATTEMPT_STATE_DISPATCHED)

    new = farm.leader(timeout=15)
    took = time.monotonic() - t0
    recorded_before = int(farm.sql("SELECT count(*) FROM attempts WHERE epoch = :'e'",
                                   e=old_epoch)[0][0])
    assert new is not old
    assert int(farm.sql("SELECT epoch FROM leader_epoch")[0][0]) > old_epoch

    # Agents follow the leader, reporting what they hold.
    for p in printers:
        p.connect()

    # Everyone ends up with exactly one attempt; those that had one keep it.
    final = {}
    for p in printers:
        if p.pid in got_before:
            # The new leader keeps the attempt the agent reports (a StartPrint
            # again would carry the same id: checked below).
            final[p.pid] = got_before[p.pid]
        else:
            sp = p.agent.wait_start(timeout=20)
            final[p.pid] = sp.attempt_id
    for p in printers:
        aid = final[p.pid]
        for sp in p.agent.start_prints():
            assert sp.attempt_id == aid, "%s was sent %s and %s" % (p.pid, aid, sp.attempt_id)
        p.agent.wait_ack(p.agent.started(aid))
        p.agent.wait_ack(p.agent.succeeded(aid))
    assert len(set(final.values())) == n, final

    j = farm.wait_job(job.id, pb.JOB_STATE_DONE, timeout=20)
    assert j.succeeded == n and j.in_progress == 0 and j.lost_attempts == 0
    rows = farm.sql("SELECT id, printer_id, state FROM attempts WHERE job_id = :'j'", j=job.id)
    assert len(rows) == n, rows
    assert all(r[2] == "succeeded" for r in rows), rows
    assert {r[0]: r[1] for r in rows} == {aid: pid for pid, aid in final.items()}
    # Nothing more is started anywhere.
    for p in printers:
        p.agent.no_start(0.5)
    print("failover (kill %.0f ms after submit): new leader answered %.2fs after SIGKILL; "
          "%d attempts recorded and %d StartPrints delivered by the old leader, of %d"
          % (delay * 1000, took, recorded_before, len(got_before), n))


def test_kill_leader_repeatedly_under_load(farm_factory):
    """Several jobs, printers that keep printing, and the leader killed twice
    (a replacement replica is started each time): every copy is printed
    exactly once."""
    farm = farm_factory(replicas=2, extra_args=["--dispatch-interval", "200ms"])
    prof = unique("load")
    n_printers, n_jobs, copies = 6, 4, 3
    printers = [Printer(farm, unique("ld-p%d" % i), prof) for i in range(n_printers)]
    for p in printers:
        p.connect()
    bundle = farm.bundle([prof])
    jobs = [farm.submit(bundle, count=copies, name="load%d" % i).id for i in range(n_jobs)]
    total = n_jobs * copies
    done_attempts = set()
    started = {}  # attempt -> printer
    lock = threading.Lock()
    kills = 0
    deadline = time.monotonic() + 120

    while True:
        with lock:
            if len(done_attempts) == total:
                break
        assert time.monotonic() < deadline, "only %d of %d copies printed" % (
            len(done_attempts), total)
        if kills < 2 and len(done_attempts) >= (kills + 1) * total // 3:
            farm.kill(farm.leader(), signal.SIGKILL)
            farm.start_scheduler()
            kills += 1
        for p in printers:
            a = p.agent
            if a.closed is not None:
                # Stream ended (leader died): reconnect to whoever leads now.
                try:
                    farm.leader(timeout=15)
                    p.connect()
                except AssertionError:
                    continue
                continue
            for sp in a.start_prints():
                aid = sp.attempt_id
                if aid in done_attempts:
                    continue
                prev = started.setdefault(aid, p.pid)
                assert prev == p.pid, "attempt %s sent to %s and %s" % (aid, prev, p.pid)
                if p.current and p.current["attempt_id"] != aid and \
                        p.current["state"] != pb.ATTEMPT_STATE_SUCCEEDED:
                    raise AssertionError("%s got %s while printing %s" % (p.pid, aid,
                                                                          p.current))
                p.current = dict(attempt_id=aid, state=pb.ATTEMPT_STATE_PRINTING)
                try:
                    a.wait_ack(a.started(aid), timeout=5)
                    a.wait_ack(a.succeeded(aid), timeout=5)
                except AssertionError:
                    break  # the stream ended; the next pass reconnects
                p.current = dict(attempt_id=aid, state=pb.ATTEMPT_STATE_SUCCEEDED)
                with lock:
                    done_attempts.add(aid)
                try:
                    farm.confirm_clear(p.pid)
                except grpc.RpcError:
                    pass
                if farm.sql("SELECT awaiting_clear FROM printers WHERE id = :'p'",
                            p=p.pid) == [("t",)]:
                    try:
                        a.wait_ack(a.bed_cleared(aid), timeout=5)
                    except AssertionError:
                        break
        time.sleep(0.05)

    for jid in jobs:
        j = farm.wait_job(jid, pb.JOB_STATE_DONE, timeout=20)
        assert j.succeeded == copies and j.lost_attempts == 0, j
    rows = farm.sql("SELECT a.state, count(*) FROM attempts a JOIN jobs j ON j.id = a.job_id "
                    "WHERE j.name LIKE 'load%' GROUP BY a.state")
    assert rows == [("succeeded", str(total))], rows
