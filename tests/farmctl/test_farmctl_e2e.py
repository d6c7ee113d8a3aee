"""The whole farm end to end, driven only through farmctl: real PostgreSQL,
Redis, pf-files, two pf-scheduler replicas and three pf-agent sim printers
(two profiles, two materials). Ten jobs with counts and constraints are
submitted with `farmctl submit` (bundles from `farmctl bundle create` over the
sliced samples, and single gcode files); then every copy must have been
printed exactly `count` times on a printer that matches — the agents' sim
logs (what the printers really printed) and `farmctl jobs --json` /
`farmctl job show --json` (what the scheduler recorded) must agree.

Also: `farmctl events --after 0` replays the whole history, every seq once
and in order; `events --follow` survives a leader failover without gaps or
repeats; bed clearing confirmed with `farmctl printer clear` on a printer
that cannot clear itself (a scripted agent without auto_clear: the sim driver
always clears its own bed)."""

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import (FARMCTL, SAMPLES, clean_env, pb, run_farmctl, sim_log_lines, unique,
                      wait_until)

JOB_TIMEOUT = 240

PRINTERS = {
    # id: (profile, material, colour)
    "e2e-mk4-pla": ("mk4", "PLA", "black"),
    "e2e-mk4-petg": ("mk4", "PETG", "white"),
    "e2e-ender3-pla": ("ender3", "PLA", "black"),
}


def sample(name):
    return os.path.join(SAMPLES, name)


@pytest.fixture
def farm(farm_factory):
    return farm_factory(replicas=2, extra_args=["--lost-grace", "10s"])


def start_printers(farm, agent_factory):
    scheds = ",".join(s.address for s in farm.schedulers)
    agents = {}
    for pid, (profile, mat, colour) in PRINTERS.items():
        agents[pid] = agent_factory(pid, scheds, farm.files.address, "--profile", profile,
                                    "--materials", "0=%s:%s" % (mat, colour),
                                    "--sim-speed", "0.01", "--sim-heat-seconds", "0.2")
    for pid in PRINTERS:
        farm.wait_printer(pid, pb.PRINTER_STATE_IDLE, timeout=30)
    return agents


def make_bundles(tmp_path):
    out = {}
    for model in ("cube", "token"):
        for mat in ("PLA", "PETG"):
            path = str(tmp_path / ("%s-%s.pfb" % (model, mat)))
            run_farmctl("bundle", "create", path, "--name", "%s-%s" % (model, mat),
                        "--profile", "mk4=" + sample("%s_mk4_%s.gcode" % (model, mat)),
                        "--profile", "ender3=" + sample("%s_ender3_%s.gcode" % (model, mat)),
                        check=0)
            out["%s-%s" % (model, mat)] = path
    return out


def test_ten_jobs_through_farmctl(farm, agent_factory, tmp_path):
    agents = start_printers(farm, agent_factory)
    b = make_bundles(tmp_path)
    A, B, C = "e2e-mk4-pla", "e2e-mk4-petg", "e2e-ender3-pla"
    ALL = {A, B, C}
    # (file, count, extra farmctl args, printers allowed)
    plan = [
        (b["cube-PLA"], 3, ["--material", "PLA", "--colour", "black"], {A, C}),
        (b["token-PLA"], 2, ["--material", "PLA"], {A, C}),
        (b["cube-PETG"], 2, ["--material", "PETG", "--colour", "white"], {B}),
        (b["token-PETG"], 1, ["--material", "petg"], {B}),  # case-insensitive
        (b["cube-PLA"], 1, ["--material", "PLA", "--profile", "ender3"], {C}),
        (b["token-PLA"], 2, ["--material", "PLA", "--profile", "mk4"], {A}),
        (sample("token_ender3_PLA.gcode"), 1, ["--profile", "ender3", "--material", "PLA"], {C}),
        (sample("cube_mk4_PETG.gcode"), 1, ["--profile", "mk4", "--material", "PETG",
                                              "--colour", "white"], {B}),
        (b["cube-PLA"], 1, ["--priority", "10"], ALL),
        (b["token-PLA"], 1, ["--hold", "--idempotency-key", unique("e2e-key")], ALL),
    ]
    jobs = []
    for path, count, extra, allowed in plan:
        r = run_farmctl("submit", path, "--count", count, *extra, farm=farm, check=0)
        jid = r.out.strip()
        assert re.fullmatch(r"j-[0-9A-Z]{26}", jid), r
        jobs.append((jid, count, allowed))

    # the held job waits; the same idempotency key gives the same job back
    held = jobs[-1][0]
    time.sleep(2)
    j = run_farmctl("--json", "job", "show", held, farm=farm, check=0).json
    assert j["job"]["state"] == "held" and j["attempts"] == [], j
    r = run_farmctl("--json", "submit", plan[-1][0], "--count", 1, *plan[-1][2], farm=farm,
                    check=0)
    assert r.json["duplicate"] and r.json["job"]["id"] == held, r
    run_farmctl("job", "release", held, farm=farm, check=0)

    def all_done():
        listed = run_farmctl("--json", "jobs", farm=farm, check=0).json["jobs"]
        mine = {x["id"]: x for x in listed if x["id"] in {jid for jid, _, _ in jobs}}
        return mine if len(mine) == len(jobs) and all(
            x["state"] == "done" for x in mine.values()) else None
    listed = wait_until(all_done, JOB_TIMEOUT, "all ten jobs done", interval=1)

    # what the printers printed (sim logs) ...
    lines = []
    for pid, agent in agents.items():
        for attempt, job, printer, result in sim_log_lines(agent.sim_log):
            assert printer == pid
            lines.append((attempt, job, printer, result))
    attempts_logged = [x[0] for x in lines]
    assert len(attempts_logged) == len(set(attempts_logged)), "an attempt printed twice"
    for jid, count, allowed in jobs:
        printed = [x for x in lines if x[1] == jid and x[3] == "succeeded"]
        assert len(printed) == count, (jid, count, printed)
        assert {x[2] for x in printed} <= allowed, (jid, allowed, printed)
        # ... and what the scheduler recorded, through farmctl
        job = listed[jid]
        assert (job["succeeded"], job["count"], job["in_progress"]) == (count, count, 0), job
        shown = run_farmctl("--json", "job", "show", jid, farm=farm, check=0).json
        ok = [a for a in shown["attempts"] if a["state"] == "succeeded"]
        assert sorted(a["id"] for a in ok) == sorted(x[0] for x in printed), (shown, printed)
        for a in ok:
            profile, mat, colour = PRINTERS[a["printer_id"]]
            assert a["profile"] == profile, a
    assert sum(c for _, c, _ in jobs) == 15
    assert len([x for x in lines if x[3] == "succeeded"]) == 15
    assert all(x[3] == "succeeded" for x in lines), lines

    # every printer idle again (the sim driver clears its own bed); a
    # confirmation through farmctl on a clear bed is accepted and changes nothing
    for pid in PRINTERS:
        farm.wait_printer(pid, pb.PRINTER_STATE_IDLE, timeout=30)
        r = run_farmctl("--json", "printer", "clear", pid, farm=farm, check=0)
        assert r.json["printer"]["state"] == "idle", r
    table = run_farmctl("printers", farm=farm, check=0).out
    for pid, (profile, mat, colour) in PRINTERS.items():
        assert re.search(r"^%s\s+%s\s+idle\s+0=%s:%s" % (pid, profile, mat, colour), table,
                         re.M), table
    st = run_farmctl("--json", "status", farm=farm, check=0).json
    assert st["jobs"]["by_state"]["done"] == 10 and st["printers"]["by_state"]["idle"] == 3, st

    # the whole history from cursor 0: every seq once, in order, matching a
    # direct WatchEvents reader
    r = run_farmctl("--json", "events", "--after", "0", farm=farm, check=0)
    events = r.lines_json()
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    watch = farm.watch(after=0)
    wait_until(lambda: watch.snapshot() and watch.snapshot()[-1].seq >= seqs[-1], 30,
               "the python watcher to catch up")
    assert [e.seq for e in watch.snapshot()][:len(seqs)] == seqs
    kinds = [e["kind"] for e in events]
    assert kinds.count("job_submitted") == 10
    assert kinds.count("job_done") == 10
    assert kinds.count("attempt_succeeded") == 15
    assert kinds.count("job_held") + kinds.count("job_released") >= 1
    # the text form, and a cursor in the middle gives exactly the rest
    mid = seqs[len(seqs) // 2]
    rest = run_farmctl("--json", "events", "--after", mid, farm=farm, check=0).lines_json()
    assert [e["seq"] for e in rest] == seqs[seqs.index(mid) + 1:]
    text = run_farmctl("events", "--after", "0", "--kind", "job_done", farm=farm, check=0).out
    assert len(text.splitlines()) == 10 and "job_done" in text, text


def test_bed_clear_through_farmctl(farm, tmp_path):
    """A printer that cannot clear its own bed waits in awaiting_clear until an
    operator confirms with `farmctl printer clear`; only then does the next
    copy start."""
    pid, profile = unique("manual"), unique("manualprof")
    agent = farm.agent(pid, profile, materials=[(0, "PLA", "black")],
                       capabilities={"driver": "scripted", "extruders": 1, "auto_clear": False})
    agent.wait_welcome()
    farm.wait_printer(pid, pb.PRINTER_STATE_IDLE)
    r = run_farmctl("submit", sample("cube_mk4_PLA.gcode"), "--profile", profile, "--count", 2,
                    "--material", "PLA", farm=farm, check=0)
    jid = r.out.strip()
    first = agent.wait_start()
    assert first.job_id == jid
    agent.wait_ack(agent.started(first.attempt_id))
    agent.wait_ack(agent.succeeded(first.attempt_id))
    farm.wait_printer(pid, pb.PRINTER_STATE_AWAITING_CLEAR)
    r = run_farmctl("--json", "printers", "--state", "awaiting_clear", farm=farm, check=0)
    assert pid in [p["id"] for p in r.json["printers"]], r
    time.sleep(2)
    assert len(agent.start_prints()) == 1, "a copy started on an uncleared bed"
    # a confirmation naming another attempt is refused (FAILED_PRECONDITION)
    r = run_farmctl("printer", "clear", pid, "--attempt", "a-01AAAAAAAAAAAAAAAAAAAAAAAA",
                    farm=farm)
    assert r.rc == 1 and "FAILED_PRECONDITION" in r.err, r
    r = run_farmctl("printer", "clear", pid, "--attempt", first.attempt_id, farm=farm, check=0)
    assert r.out.strip() == "printer %s bed clear: idle" % pid, r
    second = agent.wait_start(timeout=15)
    assert second.job_id == jid and second.attempt_id != first.attempt_id
    agent.wait_ack(agent.started(second.attempt_id))
    agent.wait_ack(agent.succeeded(second.attempt_id))
    farm.wait_job(jid, pb.JOB_STATE_DONE)
    farm.wait_printer(pid, pb.PRINTER_STATE_AWAITING_CLEAR)
    run_farmctl("printer", "clear", pid, farm=farm, check=0)
    farm.wait_printer(pid, pb.PRINTER_STATE_IDLE)
    ev = run_farmctl("--json", "events", "--after", "0", "--printer", pid, "--kind",
                     "bed_cleared", farm=farm, check=0).lines_json()
    assert len(ev) == 2 and all(e["printer_id"] == pid for e in ev), ev
    agent.close()


def test_events_follow_survives_a_leader_failover(farm, tmp_path):
    q = unique("follow")
    proc = subprocess.Popen(
        [FARMCTL, "--scheduler", ",".join(s.address for s in farm.schedulers), "--json",
         "events", "--follow", "--new"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    seen = []
    lock = threading.Lock()

    def read():
        for line in proc.stdout:
            with lock:
                seen.append(line)
    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        time.sleep(1)
        j1 = run_farmctl("submit", sample("cube_mk4_PLA.gcode"), "--profile", "mk4",
                         "--queue", q, "--hold", farm=farm, check=0).out.strip()
        wait_until(lambda: any(j1 in s for s in seen), 20, "the first job's event")
        farm.kill(farm.leader())
        farm.leader(timeout=30)
        j2 = run_farmctl("submit", sample("token_mk4_PLA.gcode"), "--profile", "mk4",
                         "--queue", q, "--hold", farm=farm, check=0).out.strip()
        wait_until(lambda: any(j2 in s for s in seen), 40, "the second job's event after "
                   "the failover")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(15)
        finally:
            if proc.poll() is None:
                proc.kill()
        t.join(5)
    assert rc == 0, proc.stderr.read()
    import json
    with lock:
        evs = [json.loads(s) for s in seen]
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(set(seqs)), "an event printed twice or out of order: %s" % seqs
    # nothing missed between the first and the last event printed
    all_seqs = [e["seq"] for e in run_farmctl("--json", "events", "--after", seqs[0] - 1,
                                              farm=farm, check=0).lines_json()]
    assert seqs == [s for s in all_seqs if s <= seqs[-1]], (seqs, all_seqs)
