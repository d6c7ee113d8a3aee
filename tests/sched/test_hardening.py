"""pf-scheduler against clients that never say hello and leaders that die:
a Connect stream with no hello is ended after --hello-timeout, and a
follower names a leader in `printfarm-leader` only while that leader's Redis
lease is live."""

import os
import signal
import subprocess
import time

import grpc

from conftest import RPC_TIMEOUT, interop, pb, unique, wait_until

LEADER_KEY = "printfarm-leader"
LEASE_KEY = "printfarm:scheduler:leader"


def test_help_documents_hello_timeout():
    binary = interop.binary_path("scheduler", "PF_SCHEDULER_BIN")
    out = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=30).stdout
    line = [x for x in out.splitlines() if "--hello-timeout" in x]
    assert len(line) == 1, out
    assert "DEADLINE_EXCEEDED" in line[0], line
    assert "PRINTFARM_HELLO_TIMEOUT" in line[0], line
    assert "default: 10s" in line[0], line


def test_silent_connect_ends_after_hello_timeout(farm_factory):
    farm = farm_factory(extra_args=["--hello-timeout", "1s"])
    prof = unique("hello")
    good = farm.agent(unique("p"), prof)
    good.wait_welcome()

    t0 = time.monotonic()
    silent = [farm.agent(unique("silent"), prof, hello=False) for _ in range(3)]
    for s in silent:
        code, details, _ = s.wait_closed(timeout=30)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED, (code, details)
        assert "no hello within 1000 ms" in details, details
    # Never before the timeout: the deadline counts from the stream opening.
    assert time.monotonic() - t0 >= 1.0

    # An agent that says hello late, but within the timeout, is served.
    late = farm.agent(unique("late"), prof, hello=False)
    time.sleep(0.2)
    late.send_hello()
    late.wait_welcome()

    # Past the timeout, the agents that said hello are untouched: their
    # streams stay open and their messages are still acknowledged.
    time.sleep(2.5)
    for a in (good, late):
        assert a.closed is None, a.closed
        seq = a.bed_cleared()
        a.wait_ack(seq)
        assert farm.printer(a.printer_id).state == pb.PRINTER_STATE_IDLE

    # A stream that sends something other than a hello first still gets
    # INVALID_ARGUMENT at once, not the deadline.
    wrong = farm.agent(unique("wrong"), prof, hello=False)
    wrong.status(pb.PRINTER_STATE_IDLE)
    code, details, _ = wrong.wait_closed()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "first message on Connect must be a hello" in details


def _redis(farm, *args):
    hostport, db = farm.redis_url.split("//", 1)[1].rsplit("/", 1)
    host, port = hostport.split(":")
    r = subprocess.run(["redis-cli", "-h", host, "-p", port, "-n", db] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _refusal(farm, srv):
    """(code, trailer) of a ListJobs on srv; (OK, None) when it answers."""
    try:
        farm.stub_for(srv).ListJobs(pb.ListJobsRequest(page_size=1), timeout=RPC_TIMEOUT)
        return grpc.StatusCode.OK, None, ""
    except grpc.RpcError as e:
        return e.code(), dict(e.trailing_metadata() or ()).get(LEADER_KEY), e.details()


class _EpochLock:
    """Holds leader_epoch's row FOR UPDATE in an open psql transaction, so a
    new leader's fence (UPDATE leader_epoch) waits until release()."""

    def __init__(self, pg_url):
        self.p = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", pg_url],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.p.stdin.write("BEGIN;\nSELECT epoch FROM leader_epoch WHERE id = 1 FOR UPDATE;\n"
                           "\\echo locked\n")
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise AssertionError("psql ended: %s" % self.p.stderr.read())
            if line.strip() == "locked":
                return

    def release(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("ROLLBACK;\n\\q\n")
                self.p.stdin.close()
                self.p.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait(10)


def test_follower_stops_naming_a_dead_leader_once_its_lease_is_gone(farm_factory):
    farm = farm_factory(replicas=2)
    old = farm.leader()
    follower = farm.followers()[0]
    wait_until(lambda: _refusal(farm, follower)[1] == old.address, RPC_TIMEOUT,
               "the follower to name the leader")
    assert _redis(farm, "GET", LEASE_KEY).startswith(old.address + "|")

    # With the epoch row locked, the follower that wins the lease cannot fence
    # it: it holds the lease without being leader for as long as we like.
    lock = _EpochLock(farm.pg_url)
    try:
        farm.kill(old)
        # While the dead leader's key is live, naming it is right; once Redis
        # has dropped it (or it names someone else), never again.
        wait_until(lambda: not _redis(farm, "GET", LEASE_KEY).startswith(old.address + "|"),
                   RPC_TIMEOUT, "the dead leader's lease to expire")
        seen = []
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            code, trailer, details = _refusal(farm, follower)
            seen.append((code, trailer, details))
            assert trailer != old.address, seen[-1]
            assert old.address not in details, seen[-1]
            time.sleep(0.05)
        # The follower won the lease but is not leader yet: it says so.
        assert _redis(farm, "GET", LEASE_KEY).startswith(follower.address + "|")
        code, trailer, details = _refusal(farm, follower)
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        assert trailer is None, trailer
        assert "no leader is known yet" in details, details
    finally:
        lock.release()
    # Released, the fence goes through and the follower leads.
    wait_until(lambda: _refusal(farm, follower)[0] == grpc.StatusCode.OK, 30,
               "the follower to become leader")
    assert farm.leader() is follower


def test_follower_follows_a_changed_lease(farm_factory):
    farm = farm_factory(replicas=2)
    leader = farm.leader()
    follower = farm.followers()[0]
    wait_until(lambda: _refusal(farm, follower)[1] == leader.address, RPC_TIMEOUT,
               "the follower to name the leader")
    # Stop the leader's process (it can neither renew nor release), then hand
    # its lease to another address by hand, with a long TTL.
    lock = _EpochLock(farm.pg_url)
    os.kill(leader.process.pid, signal.SIGSTOP)
    try:
        _redis(farm, "SET", LEASE_KEY, "127.0.0.1:9|elsewhere", "PX", "60000")
        wait_until(lambda: _refusal(farm, follower)[1] == "127.0.0.1:9", RPC_TIMEOUT,
                   "the follower to name the new holder")
        # Deleted: the follower takes the lease itself and, fenced out by the
        # lock, names nobody rather than the address it knew.
        _redis(farm, "DEL", LEASE_KEY)
        wait_until(lambda: _redis(farm, "GET", LEASE_KEY).startswith(follower.address + "|"),
                   RPC_TIMEOUT, "the follower to take the lease")
        code, trailer, details = _refusal(farm, follower)
        assert code == grpc.StatusCode.UNAVAILABLE and trailer is None, (code, trailer, details)
        assert "no leader is known yet" in details, details
    finally:
        lock.release()
        farm.kill(leader)  # stopped: SIGKILL works on a stopped process
    wait_until(lambda: _refusal(farm, follower)[0] == grpc.StatusCode.OK, 30,
               "the follower to become leader")
