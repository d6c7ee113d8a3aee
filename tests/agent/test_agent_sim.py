"""pf-agent with the sim driver against the real farm: PostgreSQL, Redis,
pf-files and pf-scheduler replicas from tests/sched/conftest.py.

Every scenario ends with the two truths compared: the scheduler's record of
the job's attempts and the simulated printers' log of what they actually
printed (one line per finished print), which must agree — exactly once.
"""

import os
import signal
import time

import pytest

import conftest as agent_conftest
from conftest import gcode, sim_log_lines

if agent_conftest.sched is None:
    pytest.skip("tests/sched/conftest.py (the farm fixtures) is not there yet",
                allow_module_level=True)

sched = agent_conftest.sched
pb = sched.pb
unique = sched.unique
wait_until = sched.wait_until

JOB_TIMEOUT = 60


def _agent(agent_factory, farm, printer, profile, *extra, schedulers=None):
    addrs = schedulers or [s.address for s in farm.schedulers if s.process.poll() is None]
    return agent_factory(printer, ",".join(addrs), farm.files.address, "--profile", profile,
                         *extra)


def _succeeded_attempts(farm, job_id):
    return [a for a in farm.get_job(job_id).attempts
            if a.state == pb.ATTEMPT_STATE_SUCCEEDED]


def _long_farm(farm_factory, replicas=1):
    # Agents here are killed and restarted: give them time to come back
    # before their attempts count as lost.
    return farm_factory(replicas=replicas, extra_args=["--lost-grace", "30s"])


def test_print_end_to_end(farm, agent_factory):
    profile, printer = unique("simprof"), unique("sim")
    bundle = farm.put_bundle({profile: gcode(60, tag=printer)})
    agent = _agent(agent_factory, farm, printer, profile)
    farm.wait_printer(printer, pb.PRINTER_STATE_IDLE, timeout=30)
    job = farm.submit(bundle, count=1, constraints=pb.JobConstraints(profiles=[profile]))
    done = farm.wait_job(job.id, pb.JOB_STATE_DONE, timeout=JOB_TIMEOUT)
    assert done.succeeded == 1
    attempts = farm.get_job(job.id).attempts
    assert len(attempts) == 1 and attempts[0].printer_id == printer
    wait_until(lambda: sim_log_lines(agent.sim_log), 10, "the sim log line")
    assert sim_log_lines(agent.sim_log) == [[attempts[0].id, job.id, printer, "succeeded"]]
    # the sim printer clears its own bed (RunClearing) and takes the next copy
    p = farm.wait_printer(printer, pb.PRINTER_STATE_IDLE, timeout=15)
    assert p.capabilities.driver == "sim" and p.capabilities.auto_clear
    assert p.cached_files >= 1
    job2 = farm.submit(bundle, count=1, constraints=pb.JobConstraints(profiles=[profile]))
    farm.wait_job(job2.id, pb.JOB_STATE_DONE, timeout=JOB_TIMEOUT)
    wait_until(lambda: len(sim_log_lines(agent.sim_log)) == 2, 10, "two sim log lines")
    assert 'printfarm_agent_cache_hits_total 1' in agent.metrics()


def test_download_resumes_after_pf_files_restart(farm_factory, agent_factory):
    farm = _long_farm(farm_factory)
    profile, printer = unique("dlprof"), unique("dl")
    bundle = farm.put_bundle({profile: gcode(60, filler_bytes=96 << 20, tag=printer)})
    agent = _agent(agent_factory, farm, printer, profile)
    farm.wait_printer(printer, pb.PRINTER_STATE_IDLE, timeout=30)
    job = farm.submit(bundle, count=1, constraints=pb.JobConstraints(profiles=[profile]))
    blobs = os.path.join(agent.cache_dir, "blobs")
    deadline = time.monotonic() + 30

    def part_size():
        for name in os.listdir(blobs) if os.path.isdir(blobs) else []:
            if name.endswith(".part"):
                return os.path.getsize(os.path.join(blobs, name))
        return 0
    while part_size() == 0:
        assert time.monotonic() < deadline, "no download started:\n" + agent.log
        time.sleep(0.001)
    old = farm.files
    old.process.send_signal(signal.SIGKILL)
    old.process.wait(10)
    port = old.ports["grpc"]
    time.sleep(1)
    farm.files = agent_conftest.interop.start_pf_files(
        os.path.join(farm.workdir, "files-restarted"), ["--listen", "127.0.0.1:%d" % port],
        data_dir=old.data_dir, wait_ready=False)
    old.stop(expect_exit=None)
    farm.wait_job(job.id, pb.JOB_STATE_DONE, timeout=JOB_TIMEOUT)
    resumed = [l for l in agent.log.splitlines() if "event=download_started" in l]
    assert len(resumed) >= 2 and "resume_from=0 " not in resumed[-1] + " ", "\n".join(resumed)
    assert len(sim_log_lines(agent.sim_log)) == 1
    assert len(_succeeded_attempts(farm, job.id)) == 1


def test_agent_killed_and_restarted_mid_print(farm_factory, agent_factory):
    farm = _long_farm(farm_factory)
    profile, printer = unique("killprof"), unique("kill")
    bundle = farm.put_bundle({profile: gcode(600, tag=printer)})  # 6 s at speed 0.01
    agent = _agent(agent_factory, farm, printer, profile)
    farm.wait_printer(printer, pb.PRINTER_STATE_IDLE, timeout=30)
    job = farm.submit(bundle, count=1, constraints=pb.JobConstraints(profiles=[profile]))
    farm.wait_printer(printer, lambda p: p.state == pb.PRINTER_STATE_PRINTING and
                      p.progress > 0.05, timeout=30)
    agent.kill()
    time.sleep(0.5)
    agent.start()
    farm.wait_job(job.id, pb.JOB_STATE_DONE, timeout=JOB_TIMEOUT)
    attempts = farm.get_job(job.id).attempts
    assert len(attempts) == 1, attempts
    wait_until(lambda: sim_log_lines(agent.sim_log), 10, "the sim log line")
    assert sim_log_lines(agent.sim_log) == [[attempts[0].id, job.id, printer, "succeeded"]]
    assert "event=sim_print_recovered" in agent.log


def test_leader_killed_while_printing(farm_factory, agent_factory):
    farm = _long_farm(farm_factory, replicas=2)
    profile, printer = unique("leadprof"), unique("lead")
    bundle = farm.put_bundle({profile: gcode(600, tag=printer)})
    follower = farm.followers()[0]
    # the agent knows both replicas and starts at the follower: redirected
    agent = _agent(agent_factory, farm, printer, profile,
                   schedulers=[follower.address, farm.leader().address])
    farm.wait_printer(printer, pb.PRINTER_STATE_IDLE, timeout=30)
    job = farm.submit(bundle, count=1, constraints=pb.JobConstraints(profiles=[profile]))
    farm.wait_printer(printer, lambda p: p.state == pb.PRINTER_STATE_PRINTING and
                      p.progress > 0.05, timeout=30)
    farm.kill(farm.leader())
    new_leader = farm.leader(timeout=30)
    assert new_leader is follower
    farm.wait_job(job.id, pb.JOB_STATE_DONE, timeout=JOB_TIMEOUT)
    attempts = farm.get_job(job.id).attempts
    assert len(attempts) == 1, attempts
    wait_until(lambda: sim_log_lines(agent.sim_log), 10, "the sim log line")
    assert sim_log_lines(agent.sim_log) == [[attempts[0].id, job.id, printer, "succeeded"]]


def test_corrupt_cached_file_is_downloaded_again(farm, agent_factory):
    profile, printer = unique("badprof"), unique("bad")
    data = gcode(60, tag=printer)
    bundle = farm.put_bundle({profile: data})
    agent = _agent(agent_factory, farm, printer, profile)
    farm.wait_printer(printer, pb.PRINTER_STATE_IDLE, timeout=30)
    job = farm.submit(bundle, count=1, constraints=pb.JobConstraints(profiles=[profile]))
    farm.wait_job(job.id, pb.JOB_STATE_DONE, timeout=JOB_TIMEOUT)
    blob = os.path.join(agent.cache_dir, "blobs", sched.sha256(data))
    with open(blob, "r+b") as f:
        f.seek(5)
        f.write(b"#")
    job2 = farm.submit(bundle, count=1, constraints=pb.JobConstraints(profiles=[profile]))
    farm.wait_job(job2.id, pb.JOB_STATE_DONE, timeout=JOB_TIMEOUT)
    agent.wait_log("event=cache_corrupt")
    with open(blob, "rb") as f:
        assert sched.sha256(f.read()) == sched.sha256(data)
    assert len(sim_log_lines(agent.sim_log)) == 2
