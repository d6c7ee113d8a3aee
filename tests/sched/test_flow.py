"""pf-scheduler end to end with scripted agents: dispatch, attempt events,
bed clearing, failure policy, quarantine, one stream per printer, event
replay, duplicate events, and agents that drop and come back (or not).

Every test uses its own printer profile, so tests sharing the module's farm
never match each other's jobs and printers."""

import time

import grpc
import pytest

from conftest import RPC_TIMEOUT, pb, unique, wait_until

GRACE = 3.0  # the module farm runs with --lost-grace 3s

JS = pb.JobState
PS = pb.PrinterState


def sql1(farm, query, **params):
    rows = farm.sql(query, **params)
    assert len(rows) == 1, (query, rows)
    return rows[0]


def printer_row(farm, pid):
    return sql1(farm, "SELECT awaiting_clear, quarantined, consecutive_failures, agent_acked_seq "
                      "FROM printers WHERE id = :'p'", p=pid)


def attempt_state(farm, aid):
    return sql1(farm, "SELECT state FROM attempts WHERE id = :'a'", a=aid)[0]


def job_row(farm, jid):
    return sql1(farm, "SELECT state, succeeded, in_progress, failed_attempts, lost_attempts "
                      "FROM jobs WHERE id = :'j'", j=jid)


def clear_bed(farm, agent, attempt_id=""):
    """ConfirmBedClear through the API; BedCleared from the agent if the API
    does not have it (yet)."""
    try:
        farm.confirm_clear(agent.printer_id, attempt_id)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        agent.wait_ack(agent.bed_cleared(attempt_id))
    wait_until(lambda: printer_row(farm, agent.printer_id)[0] == "f", RPC_TIMEOUT, "bed clear")


def connected(farm, pid, prof, **kw):
    a = farm.agent(pid, prof, **kw)
    a.wait_welcome()
    return a


def test_submit_dispatch_succeed(farm):
    prof = unique("flow")
    agent = connected(farm, unique("p"), prof)
    bundle = farm.bundle([prof], name="benchy")
    job = farm.submit(bundle, count=1, name="benchy")
    sp = agent.wait_start()
    assert sp.job_id == job.id
    assert sp.profile == prof
    assert sp.bundle.sha256 == bundle
    assert sp.attempt_id.startswith("a-")
    assert len(sp.file.sha256) == 64 and sp.size > 0
    assert attempt_state(farm, sp.attempt_id) == "dispatched"
    assert job_row(farm, job.id)[:3] == ("printing", "0", "1")

    agent.wait_ack(agent.started(sp.attempt_id))
    assert attempt_state(farm, sp.attempt_id) == "printing"
    agent.wait_ack(agent.succeeded(sp.attempt_id))
    assert attempt_state(farm, sp.attempt_id) == "succeeded"
    assert job_row(farm, job.id)[:3] == ("done", "1", "0")
    assert printer_row(farm, agent.printer_id)[0] == "t"  # awaiting_clear
    farm.wait_job(job.id, JS.JOB_STATE_DONE)
    p = farm.wait_printer(agent.printer_id, PS.PRINTER_STATE_AWAITING_CLEAR)
    assert p.profile == prof


def test_awaiting_clear_blocks_next_print(farm):
    prof = unique("clear")
    agent = connected(farm, unique("p"), prof)
    job = farm.submit(farm.bundle([prof]), count=2)
    sp = agent.wait_start()
    agent.wait_ack(agent.started(sp.attempt_id))
    agent.wait_ack(agent.succeeded(sp.attempt_id))
    assert job_row(farm, job.id)[:3] == ("queued", "1", "0")
    agent.no_start(2.5)  # the bed is not clear: nothing new
    clear_bed(farm, agent, sp.attempt_id)
    sp2 = agent.wait_start()
    assert sp2.job_id == job.id and sp2.attempt_id != sp.attempt_id
    agent.wait_ack(agent.started(sp2.attempt_id))
    agent.wait_ack(agent.succeeded(sp2.attempt_id))
    assert job_row(farm, job.id)[:3] == ("done", "2", "0")


def test_failure_retried_on_another_printer_then_job_failed(farm):
    prof = unique("fail")
    a = connected(farm, unique("pa"), prof)
    b = connected(farm, unique("pb"), prof)
    job = farm.submit(farm.bundle([prof]), count=1)
    agents = {a.printer_id: a, b.printer_id: b}

    def first_start():
        for ag in agents.values():
            if ag.start_prints():
                return ag
    first = wait_until(first_start, RPC_TIMEOUT, "a StartPrint")
    other = b if first is a else a
    sp1 = first.wait_start()
    first.wait_ack(first.started(sp1.attempt_id))
    first.wait_ack(first.failed(sp1.attempt_id, "thermal runaway"))
    assert attempt_state(farm, sp1.attempt_id) == "failed"
    # Clear the first printer at once: the job must still go to the other one
    # (it is excluded from the printer it failed on).
    clear_bed(farm, first)
    sp2 = other.wait_start()
    assert sp2.job_id == job.id and sp2.attempt_id != sp1.attempt_id
    first.no_start(1.0)
    other.wait_ack(other.started(sp2.attempt_id))
    other.wait_ack(other.failed(sp2.attempt_id, "layer shift"))
    j = farm.wait_job(job.id, JS.JOB_STATE_FAILED)
    assert j.failed_attempts == 2
    assert job_row(farm, job.id) == ("failed", "0", "0", "2", "0")
    clear_bed(farm, other)
    for ag in agents.values():
        ag.no_start(1.0)


def test_quarantine_after_three_failures_of_different_jobs(farm):
    prof = unique("quar")
    agent = connected(farm, unique("p"), prof)
    bundle = farm.bundle([prof])
    w = farm.watch(printer_id=agent.printer_id)
    for i in range(3):
        job = farm.submit(bundle, count=1, name="job%d" % i)
        sp = agent.wait_start()
        assert sp.job_id == job.id
        agent.wait_ack(agent.started(sp.attempt_id))
        agent.wait_ack(agent.failed(sp.attempt_id, "nozzle clog %d" % i))
        assert printer_row(farm, agent.printer_id)[2] == str(i + 1)
        if i < 2:
            assert printer_row(farm, agent.printer_id)[1] == "f"
            clear_bed(farm, agent)
    assert printer_row(farm, agent.printer_id)[1] == "t"
    w.wait(lambda e: e.kind == pb.EVENT_KIND_PRINTER_QUARANTINED, what="PRINTER_QUARANTINED")
    farm.wait_printer(agent.printer_id, PS.PRINTER_STATE_QUARANTINED)
    # Even with its bed clear, a quarantined printer gets nothing.
    farm.sql("UPDATE printers SET awaiting_clear = false WHERE id = :'p'", p=agent.printer_id)
    farm.submit(bundle, count=1, name="job-after")
    agent.no_start(2.5)


def test_success_resets_the_failure_streak(farm):
    prof = unique("streak")
    agent = connected(farm, unique("p"), prof)
    bundle = farm.bundle([prof])
    results = ["failed", "failed", "succeeded", "failed"]
    for i, res in enumerate(results):
        farm.submit(bundle, count=1, name="s%d" % i)
        sp = agent.wait_start()
        agent.wait_ack(agent.started(sp.attempt_id))
        if res == "failed":
            agent.wait_ack(agent.failed(sp.attempt_id))
        else:
            agent.wait_ack(agent.succeeded(sp.attempt_id))
        clear_bed(farm, agent)
    row = printer_row(farm, agent.printer_id)
    assert row[1] == "f" and row[2] == "1"


def test_second_stream_for_a_printer_is_refused(farm):
    prof = unique("dup")
    pid = unique("p")
    first = connected(farm, pid, prof)
    second = farm.agent(pid, prof)
    code, details, _ = second.wait_closed()
    assert code == grpc.StatusCode.ALREADY_EXISTS, details
    assert pid in details
    assert first.closed is None
    first.close()
    third = wait_until(lambda: (lambda a: a if a.wait_welcome() else None)(farm.agent(pid, prof)),
                       RPC_TIMEOUT, "a new stream once the first is gone")
    assert third.welcome.epoch >= 1


@pytest.mark.parametrize("first", [
    pb.AgentMessage(status=pb.PrinterStatus(state=pb.PRINTER_STATE_IDLE)),
    pb.AgentMessage(),
])
def test_first_message_must_be_hello(farm, first):
    a = farm.agent(unique("p"), unique("x"), hello=False)
    a.send(first)
    code, details, _ = a.wait_closed()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details


@pytest.mark.parametrize("pid", ["", "x" * 65, "has space", "slash/es", "ünï"])
def test_bad_printer_id_is_refused(farm, pid):
    a = farm.agent(pid, "prof")
    code, details, _ = a.wait_closed()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert farm.sql("SELECT count(*) FROM printers WHERE id = :'p'", p=pid) == [("0",)]


@pytest.mark.parametrize("prof", ["", "y" * 65, "mk4 s"])
def test_bad_profile_is_refused(farm, prof):
    pid = unique("p")
    a = farm.agent(pid, prof)
    code, details, _ = a.wait_closed()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "profile" in details
    assert farm.sql("SELECT count(*) FROM printers WHERE id = :'p'", p=pid) == [("0",)]


def test_attempt_event_needs_seq_and_own_attempt(farm):
    prof = unique("seq")
    a = connected(farm, unique("p"), prof)
    a.event("a-nope", pb.ATTEMPT_EVENT_KIND_STARTED, seq=0)
    code, details, _ = a.wait_closed()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    b = connected(farm, unique("p"), prof)
    b.started("a-not-this-printers")
    code, details, _ = b.wait_closed()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details


def test_duplicate_attempt_event_is_acked_and_changes_nothing(farm):
    prof = unique("dupev")
    agent = connected(farm, unique("p"), prof)
    job = farm.submit(farm.bundle([prof]), count=2)
    sp = agent.wait_start()
    s1 = agent.started(sp.attempt_id)
    agent.wait_ack(s1)
    agent.started(sp.attempt_id, seq=s1)  # a resend after a lost ack
    s2 = agent.succeeded(sp.attempt_id)
    agent.wait_ack(s2)
    agent.succeeded(sp.attempt_id, seq=s2)
    agent.succeeded(sp.attempt_id, seq=s1)  # older than acked: also a repeat
    # Every repeat is acked again...
    wait_until(lambda: agent.acks().count(s2) >= 2 and agent.acks().count(s1) >= 3,
               RPC_TIMEOUT, "acks of the repeats")
    # ...and changed nothing.
    assert job_row(farm, job.id)[:3] == ("queued", "1", "0")
    assert printer_row(farm, agent.printer_id)[3] == str(s2)
    n = farm.sql("SELECT count(*) FROM events WHERE attempt_id = :'a'", a=sp.attempt_id)
    assert n == [("3",)]  # dispatched, started, succeeded


def test_welcome_reports_acked_seq(farm):
    prof = unique("welc")
    pid = unique("p")
    agent = connected(farm, pid, prof)
    assert agent.welcome.acked_seq == 0
    farm.submit(farm.bundle([prof]), count=1)
    sp = agent.wait_start()
    s = agent.started(sp.attempt_id)
    agent.wait_ack(s)
    agent.close()
    again = agent.reconnect(current=dict(attempt_id=sp.attempt_id,
                                         state=pb.ATTEMPT_STATE_PRINTING))
    assert again.wait_welcome().acked_seq == s
    assert again.welcome.status_interval_ms == 1000


def test_start_print_resent_when_agent_never_got_it(farm):
    prof = unique("resend")
    agent = connected(farm, unique("p"), prof)
    farm.submit(farm.bundle([prof]), count=1)
    sp = agent.wait_start()
    agent.close()  # as if StartPrint was lost with the connection
    again = agent.reconnect(current=None)
    again.wait_welcome()
    sp2 = again.wait_start()
    assert sp2.attempt_id == sp.attempt_id
    assert sp2.file.sha256 == sp.file.sha256
    again.wait_ack(again.started(sp2.attempt_id))
    again.wait_ack(again.succeeded(sp2.attempt_id))
    assert attempt_state(farm, sp.attempt_id) == "succeeded"


def test_finished_attempt_reported_in_hello_is_applied(farm):
    prof = unique("hellodone")
    agent = connected(farm, unique("p"), prof)
    job = farm.submit(farm.bundle([prof]), count=1)
    sp = agent.wait_start()
    agent.wait_ack(agent.started(sp.attempt_id))
    agent.close()
    again = agent.reconnect(current=dict(attempt_id=sp.attempt_id,
                                         state=pb.ATTEMPT_STATE_SUCCEEDED))
    again.wait_welcome()
    wait_until(lambda: job_row(farm, job.id)[:2] == ("done", "1"), RPC_TIMEOUT, "job done")
    assert attempt_state(farm, sp.attempt_id) == "succeeded"


def test_agent_back_within_grace_keeps_its_attempt(farm):
    prof = unique("grace")
    agent = connected(farm, unique("p"), prof)
    job = farm.submit(farm.bundle([prof]), count=1)
    sp = agent.wait_start()
    agent.wait_ack(agent.started(sp.attempt_id))
    agent.close()
    time.sleep(GRACE / 3)
    again = agent.reconnect(current=dict(attempt_id=sp.attempt_id,
                                         state=pb.ATTEMPT_STATE_PRINTING, progress=0.5))
    again.wait_welcome()
    time.sleep(GRACE + 1.5)
    assert attempt_state(farm, sp.attempt_id) == "printing"
    again.no_start(0)
    assert not any(m.HasField("cancel") for m in again.messages)
    again.wait_ack(again.succeeded(sp.attempt_id))
    assert job_row(farm, job.id)[:5] == ("done", "1", "0", "0", "0")


def test_agent_away_past_grace_loses_attempt_and_copy_is_redispatched(farm):
    prof = unique("lost")
    a = connected(farm, unique("pa"), prof)
    job = farm.submit(farm.bundle([prof]), count=1)
    sp = a.wait_start()
    a.wait_ack(a.started(sp.attempt_id))
    w = farm.watch(job_id=job.id)
    a.close()
    b = connected(farm, unique("pb"), prof)  # ready, but the copy is still a's
    b.no_start(GRACE / 2)
    ev = w.wait(lambda e: e.kind == pb.EVENT_KIND_ATTEMPT_LOST, timeout=GRACE + 10,
                what="ATTEMPT_LOST")
    assert ev.attempt_id == sp.attempt_id
    assert attempt_state(farm, sp.attempt_id) == "lost"
    sp2 = b.wait_start()
    assert sp2.job_id == job.id and sp2.attempt_id != sp.attempt_id
    assert job_row(farm, job.id)[2:] == ("1", "0", "1")  # in_progress, failed, lost
    # The agent that comes back after all is told to drop the old attempt.
    again = a.reconnect(current=dict(attempt_id=sp.attempt_id, state=pb.ATTEMPT_STATE_PRINTING))
    again.wait_welcome()
    m = again.wait(lambda m: m.HasField("cancel"), what="CancelPrint")
    assert m.cancel.attempt_id == sp.attempt_id
    b.wait_ack(b.started(sp2.attempt_id))
    b.wait_ack(b.succeeded(sp2.attempt_id))
    farm.wait_job(job.id, JS.JOB_STATE_DONE)


def test_new_printer_with_full_bed_waits_for_clear(farm):
    prof = unique("newbed")
    agent = connected(farm, unique("p"), prof, bed_clear=False)
    assert printer_row(farm, agent.printer_id)[0] == "t"
    job = farm.submit(farm.bundle([prof]), count=1)
    agent.no_start(1.5)
    clear_bed(farm, agent)
    sp = agent.wait_start()
    assert sp.job_id == job.id
    # Once known, the scheduler owns the bed state: an agent that reconnects
    # still thinking its bed is full (ConfirmBedClear is not sent to agents)
    # does not undo an operator's confirmation.
    agent.wait_ack(agent.started(sp.attempt_id))
    agent.wait_ack(agent.succeeded(sp.attempt_id))
    clear_bed(farm, agent)
    agent.close()
    again = agent.reconnect(bed_clear=False, current=dict(attempt_id=sp.attempt_id,
                                                          state=pb.ATTEMPT_STATE_SUCCEEDED))
    again.wait_welcome()
    assert printer_row(farm, agent.printer_id)[0] == "f"


def test_auto_clear_printer_gets_run_clearing(farm):
    prof = unique("auto")
    agent = connected(farm, unique("p"), prof,
                      capabilities={"driver": "scripted", "extruders": 1, "auto_clear": True})
    job = farm.submit(farm.bundle([prof]), count=2)
    sp = agent.wait_start()
    agent.wait_ack(agent.started(sp.attempt_id))
    agent.wait_ack(agent.succeeded(sp.attempt_id))
    m = agent.wait(lambda m: m.HasField("run_clearing"), what="RunClearing")
    assert m.run_clearing.attempt_id == sp.attempt_id
    agent.no_start(1.0)
    agent.wait_ack(agent.bed_cleared(sp.attempt_id, automatic=True))
    sp2 = agent.wait_start()
    assert sp2.job_id == job.id


def test_watch_events_replays_and_resumes_without_gaps(farm):
    prof = unique("watch")
    first = farm.watch(after=0)
    agent = connected(farm, unique("p"), prof)
    job = farm.submit(farm.bundle([prof]), count=1)
    sp = agent.wait_start()
    agent.wait_ack(agent.started(sp.attempt_id))
    mid = first.wait(lambda e: e.kind == pb.EVENT_KIND_ATTEMPT_STARTED and
                     e.attempt_id == sp.attempt_id, what="ATTEMPT_STARTED")
    first.close()
    cursor = mid.seq
    seen_first = [e for e in first.snapshot() if e.seq <= cursor]
    # From 0: everything, in order, without gaps.
    assert [e.seq for e in seen_first] == list(range(1, cursor + 1))
    agent.wait_ack(agent.succeeded(sp.attempt_id))
    farm.wait_job(job.id, JS.JOB_STATE_DONE)
    last = int(farm.sql("SELECT max(seq) FROM events")[0][0])
    resumed = farm.watch(after=cursor)
    resumed.wait_seq(last)
    got = [e.seq for e in resumed.snapshot() if e.seq <= last]
    assert got == list(range(cursor + 1, last + 1))
    kinds = {e.kind for e in resumed.snapshot() if e.job_id == job.id}
    assert pb.EVENT_KIND_ATTEMPT_SUCCEEDED in kinds and pb.EVENT_KIND_JOB_DONE in kinds
    # Stored events and streamed ones agree.
    rows = farm.sql("SELECT seq, kind, job_id, printer_id, attempt_id FROM events "
                    "WHERE seq > :'c' AND seq <= :'l' ORDER BY seq", c=cursor, l=last)
    streamed = [(str(e.seq), str(e.kind), e.job_id, e.printer_id, e.attempt_id)
                for e in resumed.snapshot() if e.seq <= last]
    assert rows == streamed
    # Live: a new event reaches the open stream.
    farm.submit(farm.bundle([prof]), count=1, hold=True)
    resumed.wait_seq(last + 1)


def test_watch_events_filters(farm):
    prof = unique("wfilt")
    agent = connected(farm, unique("p"), prof)
    w = farm.watch(printer_id=agent.printer_id, kinds=[pb.EVENT_KIND_ATTEMPT_STARTED])
    farm.submit(farm.bundle([prof]), count=1)
    sp = agent.wait_start()
    agent.wait_ack(agent.started(sp.attempt_id))
    ev = w.wait(lambda e: e.attempt_id == sp.attempt_id, what="ATTEMPT_STARTED")
    assert ev.kind == pb.EVENT_KIND_ATTEMPT_STARTED
    assert ev.attempt_state == pb.ATTEMPT_STATE_PRINTING
    assert all(e.kind == pb.EVENT_KIND_ATTEMPT_STARTED and e.printer_id == agent.printer_id
               for e in w.snapshot())


def test_watch_events_rejects_unknown_kind(farm):
    w = farm.watch(kinds=[999])
    wait_until(lambda: w.closed, RPC_TIMEOUT, "the watch to end")
    assert w.closed[0] == grpc.StatusCode.INVALID_ARGUMENT, w.closed


def test_watch_only_new(farm):
    before = int(farm.sql("SELECT last FROM event_seq")[0][0])
    w = farm.watch(only_new=True)
    time.sleep(0.5)
    prof = unique("onlynew")
    farm.submit(farm.bundle([prof]), count=1, hold=True)
    ev = w.wait(lambda e: True, what="a new event")
    assert ev.seq > before


def test_metrics_and_readyz(farm):
    import urllib.request
    port = farm.leader().ports["admin"]
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    for name in ("printfarm_scheduler_leader 1", "printfarm_scheduler_epoch",
                 "printfarm_scheduler_dispatch_latency_seconds_bucket",
                 "printfarm_scheduler_dispatch_round_seconds_count",
                 "printfarm_scheduler_attempts_total", "printfarm_scheduler_jobs",
                 "printfarm_scheduler_awaiting_clear_seconds"):
        assert name in text, name
    r = urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=5)
    assert r.status == 200


def test_live_status_is_shown_by_list_printers(farm):
    prof = unique("live")
    agent = connected(farm, unique("p"), prof)
    farm.submit(farm.bundle([prof]), count=1)
    sp = agent.wait_start()
    agent.wait_ack(agent.started(sp.attempt_id))
    st = pb.PrinterStatus(state=pb.PRINTER_STATE_PRINTING, attempt_id=sp.attempt_id,
                          progress=0.25)
    st.temperatures.add(sensor="bed", actual=59.5, target=60)
    st.temperatures.add(sensor="T0", actual=214, target=215)
    agent.send(pb.AgentMessage(status=st))

    def shown():
        p = farm.printer(agent.printer_id)
        return p if p is not None and abs(p.progress - 0.25) < 1e-6 else None
    p = wait_until(shown, RPC_TIMEOUT, "the status in ListPrinters")
    assert p.state == PS.PRINTER_STATE_PRINTING
    assert p.current_attempt_id == sp.attempt_id
    temps = {t.sensor: (t.actual, t.target) for t in p.temperatures}
    assert temps.get("bed") == (59.5, 60) and temps.get("T0") == (214, 215), temps
    agent.close()
    farm.wait_printer(agent.printer_id, PS.PRINTER_STATE_OFFLINE)


def test_connect_roles(farm_factory):
    tokens = [("admin", "root", "admin-token-0123456789"),
              ("agent", "tok-p1", "agent-token-p1-0123456789"),
              ("operator", "op", "operator-token-0123456789"),
              ("viewer", "v", "viewer-token-0123456789")]
    farm = farm_factory(tokens=tokens)
    prof = unique("roles")
    ok = farm.agent("tok-p1", prof, metadata=farm.md("tok-p1"))
    assert ok.wait_welcome().epoch >= 1
    other = farm.agent("tok-p2", prof, metadata=farm.md("tok-p1"))
    code, details, _ = other.wait_closed()
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    for name in ("op", "v"):
        a = farm.agent("tok-p3", prof, metadata=farm.md(name))
        assert a.wait_closed()[0] == grpc.StatusCode.PERMISSION_DENIED
    anon = farm.agent("tok-p3", prof, metadata=())
    assert anon.wait_closed()[0] == grpc.StatusCode.UNAUTHENTICATED
    admin = farm.agent("tok-p4", prof)  # the farm's default metadata is the admin's
    admin.wait_welcome()
    assert farm.sql("SELECT id FROM printers ORDER BY id") == [("tok-p1",), ("tok-p4",)]
    # Every role may watch events; no token may not.
    for name in ("v", "tok-p1", "op", "root"):
        w = farm.watch(metadata=farm.md(name))
        w.wait(lambda e: e.kind == pb.EVENT_KIND_LEADER_ELECTED, what="LEADER_ELECTED")
    w = farm.watch(metadata=())
    wait_until(lambda: w.closed, RPC_TIMEOUT, "the anonymous watch to end")
    assert w.closed[0] == grpc.StatusCode.UNAUTHENTICATED


def test_printer_in_error_gets_nothing_until_idle(farm):
    prof = unique("err")
    agent = connected(farm, unique("p"), prof)
    w = farm.watch(printer_id=agent.printer_id, kinds=[pb.EVENT_KIND_PRINTER_STATE_CHANGED])
    agent.send(pb.AgentMessage(status=pb.PrinterStatus(state=pb.PRINTER_STATE_ERROR,
                                                       error="thermal runaway on T0")))
    ev = w.wait(lambda e: e.printer_state == PS.PRINTER_STATE_ERROR, what="error event")
    assert "thermal runaway" in ev.text
    job = farm.submit(farm.bundle([prof]), count=1)
    agent.no_start(1.5)
    agent.status(pb.PRINTER_STATE_IDLE)
    sp = agent.wait_start()
    assert sp.job_id == job.id
    w.wait(lambda e: e.printer_state == PS.PRINTER_STATE_IDLE, what="back to idle")


def update_printer(farm, pid, **groups):
    req = pb.UpdatePrinterRequest(id=pid)
    if "materials" in groups:
        for ext, mat, col in groups["materials"]:
            req.materials.items.add(extruder=ext, material=mat, colour=col)
    if "labels" in groups:
        for k, v in groups["labels"]:
            req.labels.items.add(key=k, value=v)
    if "queues" in groups:
        for q, wgt in groups["queues"]:
            req.queues.items.add(queue=q, weight=wgt)
    if "windows" in groups:
        req.windows.SetInParent()
        for start, end in groups["windows"]:
            req.windows.items.add(start_minute=start, end_minute=end)
    return farm.stub.UpdatePrinter(req, timeout=RPC_TIMEOUT, metadata=farm.metadata).printer


def test_constraints_choose_the_printer(farm):
    """Stored operator settings (written by UpdatePrinter) reach the solver:
    materials, labels, queues."""
    prof = unique("cons")
    a = connected(farm, unique("pa"), prof)
    b = connected(farm, unique("pb"), prof)
    update_printer(farm, a.printer_id, materials=[(0, "PLA", "black")], labels=[("site", "lab")])
    update_printer(farm, b.printer_id, materials=[(0, "PETG", "#ff0000")],
                   labels=[("site", "garage"), ("enclosed", "")])
    bundle = farm.bundle([prof])
    c = pb.JobConstraints()
    c.materials.add(material="petg")  # case-insensitive
    j1 = farm.submit(bundle, count=1, constraints=c)
    sp = b.wait_start()
    assert sp.job_id == j1.id
    a.no_start(0.5)

    c = pb.JobConstraints()
    c.printer_labels.add(key="site", value="lab")
    j2 = farm.submit(bundle, count=1, constraints=c)
    sp = a.wait_start()
    assert sp.job_id == j2.id

    # Nobody has nylon, and nobody serves queue "night": these wait.
    c = pb.JobConstraints()
    c.materials.add(material="nylon")
    farm.submit(bundle, count=1, constraints=c)
    queue = unique("night")
    j4 = farm.submit(bundle, count=1, queue=queue)
    for ag in (a, b):
        aid = ag.start_prints()[-1].attempt_id
        ag.wait_ack(ag.started(aid))
        ag.wait_ack(ag.succeeded(aid))
    c2 = farm.submit(bundle, count=1, name="after")  # plain job, any printer
    clear_bed(farm, a)
    sp = a.wait_start()
    assert sp.job_id == c2.id
    # b now serves the night queue only: it gets j4 (not the nylon job).
    update_printer(farm, b.printer_id, queues=[(queue, 1)])
    clear_bed(farm, b)
    sp = b.wait_start()
    assert sp.job_id == j4.id


def test_availability_windows_apply_to_hand_cleared_printers(farm):
    prof = unique("win")
    agent = connected(farm, unique("p"), prof)
    now_min = int(time.time() // 60) % 1440
    # A one-minute window two hours away: an hour-long print never fits.
    update_printer(farm, agent.printer_id,
                   windows=[((now_min + 120) % 1440, (now_min + 121) % 1440 or 1440)])
    bundle = farm.put_bundle({prof: (b"G28\n" + bytes(8), {"estimated_seconds": 3600})})
    job = farm.submit(bundle, count=1)
    agent.no_start(1.5)
    # Someone is around from 10 minutes ago for the next five hours.
    update_printer(farm, agent.printer_id,
                   windows=[((now_min - 10) % 1440, (now_min + 300) % 1440 or 1440)])
    sp = agent.wait_start()
    assert sp.job_id == job.id
    assert sp.metadata.estimated_seconds == 3600
