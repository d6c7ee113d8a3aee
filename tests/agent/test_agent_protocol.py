"""pf-agent against a scripted scheduler (fake_scheduler.py) and a real pf-files.

These pin the agent's side of the Connect protocol precisely — what Hello
says, seq numbering and acks, idempotent StartPrint, what happens across a
kill -9 of the agent, a dropped download, a leader redirect, a scheduler
outage, a corrupt cache — independently of the real scheduler (see
test_agent_sim.py for the same scenarios end to end).
"""

import hashlib
import os
import signal
import time

import pytest

from conftest import gcode, sim_log_lines, upload, scheduler_pb2 as pb, interop

start_pf_files = interop.start_pf_files


def _start(fake_db, printer, attempt, job, digest, size):
    fake_db.start_print(printer, attempt, job, digest, size)


def test_print_end_to_end(pf_files, fake_factory, fake_db, agent_factory):
    sched = fake_factory()
    digest, size = upload(pf_files.channel, gcode(60, tag="e2e"))
    agent = agent_factory("p-e2e", sched.address, pf_files.address)
    hello = fake_db.wait_connected("p-e2e")
    assert hello.profile == "test-profile"
    assert hello.capabilities.driver == "sim"
    assert hello.capabilities.can_pause
    assert [(m.extruder, m.material, m.colour) for m in hello.materials] == [(0, "PLA", "black")]
    assert not hello.HasField("current")
    assert hello.last_seq == 0
    assert hello.bed_clear

    _start(fake_db, "p-e2e", "a-1", "j-1", digest, size)
    fake_db.wait_event("p-e2e", "a-1", "SUCCEEDED")
    kinds = [e[1] for e in fake_db.attempt_events("p-e2e")]
    assert kinds == ["ATTEMPT_EVENT_KIND_STARTED", "ATTEMPT_EVENT_KIND_SUCCEEDED"]
    seqs = [e[0] for e in fake_db.attempt_events("p-e2e")]
    assert seqs == [1, 2]
    assert sim_log_lines(agent.sim_log) == [["a-1", "j-1", "p-e2e", "succeeded"]]
    # the file is in the cache, verified, and the next status says awaiting_clear
    with open(os.path.join(agent.cache_dir, "blobs", digest), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest
    rec = fake_db.printer("p-e2e")
    fake_db.wait(lambda: rec.statuses and rec.statuses[-1].state
                 == pb.PRINTER_STATE_AWAITING_CLEAR, 10, "awaiting_clear status")
    # RunClearing -> BedCleared{automatic}
    fake_db.send("p-e2e", pb.SchedulerMessage(run_clearing=pb.RunClearing(attempt_id="a-1")))
    fake_db.wait(lambda: any(m.WhichOneof("msg") == "bed_cleared" for m in rec.events), 15,
                 "bed_cleared")
    bc = [m for m in rec.events if m.WhichOneof("msg") == "bed_cleared"][0]
    assert bc.bed_cleared.automatic and bc.bed_cleared.attempt_id == "a-1" and bc.seq == 3
    fake_db.wait(lambda: rec.statuses[-1].state == pb.PRINTER_STATE_IDLE, 10, "idle status")
    metrics = agent.metrics()
    assert "printfarm_agent_download_bytes_total %d" % size in metrics
    assert 'printfarm_agent_prints_total{result="succeeded"} 1' in metrics
    assert "printfarm_agent_sessions_connected 1" in metrics


def test_start_print_is_idempotent(pf_files, fake_factory, fake_db, agent_factory):
    sched = fake_factory()
    digest, size = upload(pf_files.channel, gcode(60, tag="idem"))
    agent = agent_factory("p-idem", sched.address, pf_files.address)
    fake_db.wait_connected("p-idem")
    _start(fake_db, "p-idem", "a-1", "j-1", digest, size)
    _start(fake_db, "p-idem", "a-1", "j-1", digest, size)  # while downloading or printing
    fake_db.wait_event("p-idem", "a-1", "SUCCEEDED")
    _start(fake_db, "p-idem", "a-1", "j-1", digest, size)  # after it finished
    fake_db.wait(lambda: len(fake_db.wait_event("p-idem", "a-1", "SUCCEEDED")) >= 2, 10,
                 "the finished attempt re-reported")
    time.sleep(1)
    assert sim_log_lines(agent.sim_log) == [["a-1", "j-1", "p-idem", "succeeded"]]
    # a cancel for an attempt this printer never saw: cancelled, and never printed later
    fake_db.send("p-idem", pb.SchedulerMessage(cancel=pb.CancelPrint(attempt_id="a-9",
                                                                     reason="operator")))
    fake_db.wait_event("p-idem", "a-9", "CANCELLED")
    _start(fake_db, "p-idem", "a-9", "j-9", digest, size)
    fake_db.wait(lambda: len(fake_db.wait_event("p-idem", "a-9", "CANCELLED")) >= 2, 10,
                 "the cancelled attempt re-reported")
    time.sleep(1)
    assert [l[0] for l in sim_log_lines(agent.sim_log)] == ["a-1"]


def test_agent_killed_mid_print_is_not_printed_twice(pf_files, fake_factory, fake_db,
                                                     agent_factory):
    sched = fake_factory()
    # 600 s estimated x 0.01 = 6 s of printing
    digest, size = upload(pf_files.channel, gcode(600, tag="kill"))
    agent = agent_factory("p-kill", sched.address, pf_files.address)
    fake_db.wait_connected("p-kill")
    _start(fake_db, "p-kill", "a-1", "j-1", digest, size)
    fake_db.wait_event("p-kill", "a-1", "STARTED")
    time.sleep(1.0)
    agent.kill()
    agent.start()
    hello = fake_db.wait_connected("p-kill", hellos=2)
    assert hello.current.attempt_id == "a-1"
    assert hello.current.state == pb.ATTEMPT_STATE_PRINTING
    assert hello.last_seq == 1
    # a new leader re-sends StartPrint: reported, not started again
    _start(fake_db, "p-kill", "a-1", "j-1", digest, size)
    fake_db.wait_event("p-kill", "a-1", "SUCCEEDED", timeout=30)
    time.sleep(1)
    assert sim_log_lines(agent.sim_log) == [["a-1", "j-1", "p-kill", "succeeded"]]
    assert "sim_print_recovered" in agent.log


def test_download_resumes_after_pf_files_dies(tmp_path, fake_factory, fake_db, agent_factory):
    sched = fake_factory()
    files = start_pf_files(str(tmp_path / "files1"))
    files2 = None
    try:
        digest, size = upload(files.channel, gcode(60, filler_bytes=96 << 20, tag="big"))
        agent = agent_factory("p-dl", sched.address, files.address)
        fake_db.wait_connected("p-dl")
        part = os.path.join(agent.cache_dir, "blobs", digest + ".part")
        _start(fake_db, "p-dl", "a-1", "j-1", digest, size)
        deadline = time.monotonic() + 30
        while not (os.path.exists(part) and os.path.getsize(part) > 0):
            assert time.monotonic() < deadline, "the download never started:\n" + agent.log
            time.sleep(0.001)
        files.process.send_signal(signal.SIGKILL)
        files.process.wait(10)
        kept = os.path.getsize(part)
        assert 0 < kept < size
        port = files.ports["grpc"]
        time.sleep(1)
        files2 = start_pf_files(str(tmp_path / "files2"), ["--listen", "127.0.0.1:%d" % port],
                                data_dir=files.data_dir, wait_ready=False)
        fake_db.wait_event("p-dl", "a-1", "SUCCEEDED", timeout=60)
        resumed = [l for l in agent.log.splitlines() if "event=download_started" in l]
        assert any("resume_from=0" not in l for l in resumed[1:]), "\n".join(resumed)
        assert sim_log_lines(agent.sim_log) == [["a-1", "j-1", "p-dl", "succeeded"]]
    finally:
        files.stop(expect_exit=None)
        if files2 is not None:
            files2.stop(expect_exit=0)


def test_leader_redirect_and_failover(pf_files, fake_factory, fake_db, agent_factory):
    leader = fake_factory()
    follower = fake_factory(leader_address=leader.address)
    digest, size = upload(pf_files.channel, gcode(400, tag="leader"))
    agent = agent_factory("p-lead", follower.address, pf_files.address)
    fake_db.wait_connected("p-lead")
    assert follower.connects >= 1 and leader.connects >= 1
    agent.wait_log("event=leader_redirect")
    _start(fake_db, "p-lead", "a-1", "j-1", digest, size)
    fake_db.wait_event("p-lead", "a-1", "STARTED")
    # the leader dies; the old follower becomes leader on the same db
    port = follower.port
    leader.stop()
    follower.stop()
    new_leader = fake_factory(port=port)
    fake_db.wait_connected("p-lead", hellos=2)
    hello = fake_db.printer("p-lead").hellos[-1]
    assert hello.current.attempt_id == "a-1"
    _start(fake_db, "p-lead", "a-1", "j-1", digest, size)
    fake_db.wait_event("p-lead", "a-1", "SUCCEEDED", timeout=30)
    time.sleep(0.5)
    assert sim_log_lines(agent.sim_log) == [["a-1", "j-1", "p-lead", "succeeded"]]
    assert new_leader.connects >= 1


def test_events_buffered_while_scheduler_is_down(pf_files, fake_factory, fake_db, agent_factory):
    sched = fake_factory()
    digest, size = upload(pf_files.channel, gcode(200, tag="buffer"))
    agent = agent_factory("p-buf", sched.address, pf_files.address)
    fake_db.wait_connected("p-buf")
    _start(fake_db, "p-buf", "a-1", "j-1", digest, size)
    fake_db.wait_event("p-buf", "a-1", "STARTED")
    port = sched.port
    sched.stop()
    # the print (2 s) ends while nobody listens
    deadline = time.monotonic() + 20
    while not sim_log_lines(agent.sim_log):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    fake_factory(port=port)
    fake_db.wait_event("p-buf", "a-1", "SUCCEEDED", timeout=30)
    events = fake_db.attempt_events("p-buf", "a-1")
    assert [e[0] for e in events] == [1, 2]
    hello = fake_db.printer("p-buf").hellos[-1]
    assert hello.last_seq == 2 and hello.current.state == pb.ATTEMPT_STATE_SUCCEEDED


def test_corrupt_cached_file_is_downloaded_again(pf_files, fake_factory, fake_db, agent_factory):
    sched = fake_factory()
    data = gcode(60, tag="corrupt")
    digest, size = upload(pf_files.channel, data)
    agent = agent_factory("p-bad", sched.address, pf_files.address)
    fake_db.wait_connected("p-bad")
    _start(fake_db, "p-bad", "a-1", "j-1", digest, size)
    fake_db.wait_event("p-bad", "a-1", "SUCCEEDED")
    blob = os.path.join(agent.cache_dir, "blobs", digest)
    with open(blob, "r+b") as f:  # same size, one byte flipped
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0xFF]))
    _start(fake_db, "p-bad", "a-2", "j-2", digest, size)
    fake_db.wait_event("p-bad", "a-2", "SUCCEEDED")
    agent.wait_log("event=cache_corrupt")
    with open(blob, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest
    assert [l[0] for l in sim_log_lines(agent.sim_log)] == ["a-1", "a-2"]
    # a truncated file is caught by the size check too
    with open(blob, "r+b") as f:
        f.truncate(size // 2)
    _start(fake_db, "p-bad", "a-3", "j-3", digest, size)
    fake_db.wait_event("p-bad", "a-3", "SUCCEEDED")
    assert 'printfarm_agent_cache_corrupt_total 2' in agent.metrics()


def test_missing_file_fails_the_attempt_and_cancel_stops_a_print(pf_files, fake_factory, fake_db,
                                                                 agent_factory):
    sched = fake_factory()
    agent = agent_factory("p-fail", sched.address, pf_files.address)
    fake_db.wait_connected("p-fail")
    _start(fake_db, "p-fail", "a-1", "j-1", "ab" * 32, 10)
    ev = fake_db.wait_event("p-fail", "a-1", "FAILED")
    assert "could not fetch file" in ev[0][2]
    digest, size = upload(pf_files.channel, gcode(3000, tag="cancel"))
    _start(fake_db, "p-fail", "a-2", "j-2", digest, size)
    fake_db.wait_event("p-fail", "a-2", "STARTED")
    fake_db.send("p-fail", pb.SchedulerMessage(pause=pb.PausePrint(attempt_id="a-2")))
    rec = fake_db.printer("p-fail")
    fake_db.wait(lambda: rec.statuses[-1].state == pb.PRINTER_STATE_PAUSED, 10, "paused")
    fake_db.send("p-fail", pb.SchedulerMessage(resume=pb.ResumePrint(attempt_id="a-2")))
    fake_db.wait(lambda: rec.statuses[-1].state == pb.PRINTER_STATE_PRINTING, 10, "resumed")
    fake_db.send("p-fail", pb.SchedulerMessage(cancel=pb.CancelPrint(attempt_id="a-2",
                                                                     reason="operator")))
    ev = fake_db.wait_event("p-fail", "a-2", "CANCELLED")
    assert ev[0][2] == "operator"
    time.sleep(0.5)
    assert sim_log_lines(agent.sim_log) == [["a-2", "j-2", "p-fail", "cancelled"]]


def test_sim_faults_and_many_printers(pf_files, fake_factory, fake_db, agent_factory):
    sched = fake_factory()
    digest, size = upload(pf_files.channel, gcode(100, tag="fault"))
    agent = agent_factory("p-many", sched.address, pf_files.address, "--sim-printers", "3",
                          "--sim-fault", "thermal", "--sim-fail-at", "50")
    for i in (1, 2, 3):
        fake_db.wait_connected("p-many-%03d" % i)
    for i in (1, 2, 3):
        _start(fake_db, "p-many-%03d" % i, "a-%d" % i, "j-1", digest, size)
    for i in (1, 2, 3):
        ev = fake_db.wait_event("p-many-%03d" % i, "a-%d" % i, "FAILED")
        assert "thermal runaway" in ev[0][2]
    rec = fake_db.printer("p-many-001")
    fake_db.wait(lambda: any(s.state == pb.PRINTER_STATE_ERROR and "thermal" in s.error
                             for s in rec.statuses), 10, "an error status")
    assert sorted(l[0] for l in sim_log_lines(agent.sim_log)) == ["a-1", "a-2", "a-3"]
    assert all(l[3] == "failed" for l in sim_log_lines(agent.sim_log))


def test_bad_flags_and_corrupt_state_file(tmp_path, agent_factory):
    a = agent_factory("p-flags", "127.0.0.1:1", "127.0.0.1:1", "--sim-fault", "bogus",
                      start=False)
    with pytest.raises(AssertionError, match="sim-fault"):
        a.start()
    assert a.process.returncode == 2
    b = agent_factory("p-state", "127.0.0.1:1", "127.0.0.1:1", start=False)
    os.makedirs(b.state_dir)
    with open(os.path.join(b.state_dir, "p-state.state"), "w") as f:
        f.write("pf-agent-state 1\nlast_seq 3\n")
    with pytest.raises(AssertionError, match="state file .* is corrupt"):
        b.start()
    assert b.process.returncode == 1
