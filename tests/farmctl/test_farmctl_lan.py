"""farmctl finds the farm by pf-discovery's LAN beacon (--farm NAME) and
`farmctl status` lists what a real pf-discovery knows.

Runs inside a network namespace of its own (in_netns.sh, from CMake): the
multicast beacon travels on that namespace's loopback only. The farm is real:
PostgreSQL, Redis, pf-files and two pf-scheduler replicas registered with a
real pf-discovery that sends the beacon of farm "farm-lan" every 300 ms."""

import os
import signal

import pytest

from conftest import SAMPLES, run_farmctl, sched, wait_until

FARM = "farm-lan"


@pytest.fixture(scope="module")
def lan_farm(infra, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("lanfarm"))
    disc_dir = os.path.join(workdir, "disc")
    os.makedirs(disc_dir)
    binary = sched.interop.binary_path("discovery", "PF_DISCOVERY_BIN")
    disc = sched.Server([binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                         "--redis-url", infra.new_redis_url(), "--log-level", "debug",
                         "--farm", FARM, "--beacon", "on", "--beacon-interval", "300ms",
                         "--probe-interval", "500ms", "--probe-timeout", "500ms"], disc_dir)
    farm = None
    try:
        disc.wait_listening(timeout=30)
        reg = ["--discovery", disc.address]
        farm = sched.Farm(infra, workdir, replicas=2, extra_args=reg, files_args=reg)
        yield farm, disc
    finally:
        if farm is not None:
            farm.stop(check=False)
        disc.stop(expect_exit=None)


def farmctl_by_beacon(*args, **kw):
    """farmctl given nothing but the farm's name (no --scheduler/--files)."""
    return run_farmctl("--farm", FARM, "--timeout", "30s", *args, **kw)


def test_status_by_beacon_lists_real_instances(lan_farm):
    farm, disc = lan_farm
    leader = farm.leader()

    def everyone_serving():
        r = farmctl_by_beacon("--json", "status")
        if r.rc != 0:
            return None
        inst = r.json["discovery"]["instances"]
        kinds = sorted(i["instance"]["kind"] for i in inst if i["health"] == "serving")
        return r if kinds.count("scheduler") == 2 and "files" in kinds else None

    r = wait_until(everyone_serving, 60, "farmctl status to show both schedulers and "
                   "pf-files serving through pf-discovery")
    st = r.json
    assert st["discovery"]["configured"] is True
    assert st["discovery"]["address"] == disc.address, st
    assert st["scheduler"]["leader"] == leader.address, st
    assert st["files"]["address"] == farm.files.address, st
    addrs = {i["instance"]["address"] for i in st["discovery"]["instances"]}
    assert {s.address for s in farm.schedulers} <= addrs, st
    text = farmctl_by_beacon("status", check=0).out
    assert "discovery  %s:" % disc.address in text, text
    assert "leader %s" % leader.address in text, text


def test_submit_and_list_by_beacon(lan_farm):
    farm, _ = lan_farm
    r = farmctl_by_beacon("submit", os.path.join(SAMPLES, "cube_mk4_PLA.gcode"),
                          "--profile", "mk4", "--count", "2", "--material", "PLA", check=0)
    job_id = r.out.strip()
    assert job_id.startswith("j-"), r
    jobs = farmctl_by_beacon("--json", "jobs", check=0).json
    assert job_id in [j["id"] for j in jobs["jobs"]], jobs
    # The same job, seen through the explicitly configured leader.
    shown = run_farmctl("--json", "job", "show", job_id, farm=farm, check=0).json
    assert shown["job"]["count"] == 2, shown


def test_explicit_address_wins_over_beacon(lan_farm):
    """--farm fills in only what is not given: an explicit (dead) scheduler
    address is used as given, and the failure names it."""
    r = farmctl_by_beacon("jobs", schedulers=["127.0.0.1:1"])
    assert r.rc == 3, r
    assert "127.0.0.1:1" in r.err, r


def test_unknown_farm_name_says_what_to_check(lan_farm):
    r = run_farmctl("--farm", "no-such-farm", "--timeout", "2s", "jobs")
    assert r.rc == 3, r
    assert "no beacon of farm 'no-such-farm' heard on 239.255.70.70:7570" in r.err, r
    bad = run_farmctl("--farm", "bad name!", "jobs")
    assert bad.rc == 2 and "bad farm name 'bad name!'" in bad.err, bad
    port = run_farmctl("--farm", FARM, "--beacon-port", "70000", "jobs")
    assert port.rc == 2 and "bad beacon port '70000'" in port.err, port


def test_status_shows_a_dead_instance(lan_farm):
    """The health column is pf-discovery's own probe: a stopped pf-files is
    reported as not serving (or gone) while the schedulers stay serving."""
    farm, _ = lan_farm
    files_addr = farm.files.address
    farm.files.process.send_signal(signal.SIGKILL)
    farm.files.process.wait(10)

    def files_down():
        r = farmctl_by_beacon("--json", "status", "--files", files_addr)
        inst = r.json["discovery"]["instances"] if r.json else []
        mine = [i for i in inst if i["instance"]["address"] == files_addr]
        return r if not mine or mine[0]["health"] != "serving" else None

    r = wait_until(files_down, 60, "pf-discovery to notice pf-files is gone")
    assert r.json["files"]["health"] != "serving", r.json
    sched_health = [i["health"] for i in r.json["discovery"]["instances"]
                    if i["instance"]["kind"] == "scheduler"]
    assert sched_health.count("serving") == 2, r.json
