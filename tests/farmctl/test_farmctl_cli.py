"""farmctl's contract with people and scripts: usage errors exit 2 with the
usage line; a stopped farm exits 3 with a message that says what to do; a
wrong token exits 1 with the server's UNAUTHENTICATED; a follower replica
redirects to the leader and the command works; flags beat PRINTFARM_*
variables, which beat the config file; and --json output matches the golden
files in golden/ (ids, digests of random data and times normalised).

PF_UPDATE_GOLDEN=1 rewrites the golden files from this run."""

import json
import os
import re
import subprocess

import pytest

from conftest import (SAMPLES, pb, run_farmctl, unique, wait_until)

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
CUBE_MK4_PLA = os.path.join(SAMPLES, "cube_mk4_PLA.gcode")
CUBE_ENDER3_PLA = os.path.join(SAMPLES, "cube_ender3_PLA.gcode")
HAND = os.path.join(os.path.dirname(SAMPLES), "handwritten")


def free_port():
    out = subprocess.run(["bash", os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "harness", "free_port.sh")], stdout=subprocess.PIPE,
        text=True, check=True)
    return int(out.stdout.strip())


# ---------------------------------------------------------------- usage

@pytest.mark.parametrize("args", [
    [],
    ["bogus"],
    ["jobs", "--bogus"],
    ["jobs", "extra-argument"],
    ["jobs", "--state", "sleeping"],
    ["job"],
    ["job", "explode", "j-1"],
    ["job", "show"],
    ["job", "priority", "j-1", "high"],
    ["job", "count", "j-1", "0"],
    ["printer", "materials", "p1"],
    ["printer", "materials", "p1", "PLA", "--extruder", "x"],
    ["submit"],
    ["submit", CUBE_MK4_PLA],  # a single gcode needs --profile
    ["submit", CUBE_MK4_PLA, "--profile", "mk4", "--count", "0"],
    ["bundle", "create", "out.pfb"],
    ["bundle", "create", "out.pfb", "--profile", "nofile"],
    ["events", "--after", "x"],
    ["--timeout", "soon", "jobs"],
    ["jobs", "--scheduler", "no-port"],
])
def test_usage_errors_exit_2(args):
    r = run_farmctl(*args, schedulers=["127.0.0.1:1"])
    assert r.rc == 2, r
    assert r.out == "", r
    assert r.err.startswith("farmctl"), r
    assert "usage: farmctl" in r.err or "farmctl --help" in r.err, r


def test_help_documents_exit_codes():
    r = run_farmctl("--help", check=0)
    for line in ("0  done", "1  a server refused", "2  usage error", "3  a service could not"):
        assert line in r.out, r
    for flag in ("--scheduler", "--files", "--discovery", "--token", "--tls-ca", "--tls-cert",
                 "--tls-key", "PRINTFARM_SCHEDULER", "PRINTFARM_TOKEN", "farmctl.conf"):
        assert flag in r.out, (flag, r)
    r = run_farmctl("job", "cancel", "--help", check=0)
    assert r.out.startswith("usage: farmctl job cancel ID"), r
    r = run_farmctl("help", "submit", check=0)
    assert "--idempotency-key" in r.out, r


# ---------------------------------------------------------------- no farm

def test_stopped_farm_exit_3_with_advice():
    port = free_port()
    r = run_farmctl("jobs", schedulers=["127.0.0.1:%d" % port])
    assert r.rc == 3, r
    assert r.out == ""
    assert r.err == ("farmctl: cannot reach the scheduler at 127.0.0.1:%d: connection refused"
                     " — is the farm running? (try: ./farm up)\n" % port), r
    # every replica down: one message naming them all
    p2 = free_port()
    r = run_farmctl("status", schedulers=["127.0.0.1:%d" % port, "127.0.0.1:%d" % p2])
    assert r.rc == 3, r
    assert "cannot reach the scheduler at 127.0.0.1:%d, 127.0.0.1:%d: connection refused" % (
        port, p2) in r.err, r
    # uploads need pf-files: same shape, its own hint
    r = run_farmctl("submit", CUBE_MK4_PLA, "--profile", "mk4",
                    schedulers=["127.0.0.1:%d" % port], files="127.0.0.1:%d" % p2)
    assert r.rc == 3, r
    assert r.err.startswith("farmctl: cannot reach pf-files at 127.0.0.1:%d: connection refused"
                            % p2), r


def test_local_file_errors_exit_1(tmp_path):
    r = run_farmctl("submit", str(tmp_path / "missing.gcode"), "--profile", "mk4",
                    schedulers=["127.0.0.1:1"])
    assert r.rc == 1 and "cannot open" in r.err and "missing.gcode" in r.err, r
    bad = tmp_path / "bad.pfb"
    bad.write_bytes(b"\0" * 257 + b"ustar\0" + b"\0" * 250)  # tar magic, bad checksum
    r = run_farmctl("bundle", "show", str(bad))
    assert r.rc == 1 and "is not a bundle file" in r.err, r


# ---------------------------------------------------------------- bundles

def test_bundle_create_reads_slicer_metadata(tmp_path):
    out = tmp_path / "cube.pfb"
    r = run_farmctl("--json", "bundle", "create", out, "--profile", "mk4=" + CUBE_MK4_PLA,
                    "--profile", "ender3=" + CUBE_ENDER3_PLA, "--label", "source=cube.stl",
                    check=0)
    doc = r.json
    b = doc["bundle"]
    assert b["name"] == "cube"
    assert [f["profile"] for f in b["files"]] == ["mk4", "ender3"]
    for f in b["files"]:
        m = f["metadata"]
        assert m["slicer"].startswith("PrusaSlicer 2."), m
        assert m["material"] == "PLA" and m["colour"] == "#000000", m
        assert 60 < m["estimated_seconds"] < 3600, m
        assert m["filament_mm"] > 0 and m["filament_g"] > 0 and m["nozzle_mm"] == 0.4, m
    assert b["files"][0]["metadata"]["printer_model"] == "MK4"
    assert b["files"][1]["metadata"]["printer_model"] == "Ender-3 V2"
    # a POSIX tar: the manifest first, then one gcode per profile
    listing = subprocess.run(["tar", "tf", str(out)], stdout=subprocess.PIPE, text=True,
                             check=True).stdout.split()
    assert listing == ["bundle.pb", "gcode/mk4.gcode", "gcode/ender3.gcode"]
    # bundle show reads it back (and checks the digests)
    r2 = run_farmctl("--json", "bundle", "show", out, check=0)
    assert r2.json["bundle"] == b
    r3 = run_farmctl("bundle", "show", out, check=0)
    assert "PROFILE" in r3.out and "PrusaSlicer" in r3.out and "mk4" in r3.out, r3
    # a corrupted gcode inside is refused
    data = bytearray(out.read_bytes())
    i = data.index(b"G1 ")
    data[i] = ord("X")
    out.write_bytes(bytes(data))
    r4 = run_farmctl("bundle", "show", out)
    assert r4.rc == 1 and "does not match its manifest" in r4.err, r4


def test_gcode_without_metadata_is_accepted_with_a_warning(tmp_path):
    plain = tmp_path / "plain.gcode"
    plain.write_text("G28\nG1 X10 Y10 F3000\nG1 X20 E1\n")
    r = run_farmctl("--json", "bundle", "create", tmp_path / "p.pfb", "--profile",
                    "mk4=%s" % plain, check=0)
    assert "warning: '%s' has no slicer metadata" % plain in r.err, r
    m = r.json["bundle"]["files"][0]["metadata"]
    assert m == {"slicer": "", "estimated_seconds": 0, "filament_mm": 0, "filament_g": 0,
                 "material": "", "colour": "", "printer_model": "", "nozzle_mm": 0}


def test_handwritten_excerpts_parse(tmp_path):
    """The OrcaSlicer/BambuStudio/Cura excerpts in samples/handwritten/ (written
    from the documented formats) give their metadata to a bundle."""
    want = {"orcaslicer": "OrcaSlicer", "bambustudio": "BambuStudio", "cura": "Cura"}
    for stem, slicer in want.items():
        path = os.path.join(HAND, "%s-excerpt.gcode" % stem)
        r = run_farmctl("--json", "bundle", "create", tmp_path / (stem + ".pfb"), "--profile",
                        "p=" + path, check=0)
        m = r.json["bundle"]["files"][0]["metadata"]
        assert m["slicer"].lower().startswith(slicer.lower()), (stem, m)
        assert m["estimated_seconds"] > 0 and m["material"] != "", (stem, m)


# ---------------------------------------------------------------- against a farm

def test_follower_redirects_to_the_leader(two_replicas, tmp_path):
    farm = two_replicas
    follower = farm.followers()[0]
    leader = farm.leader()
    r = run_farmctl("--json", "jobs", schedulers=[follower.address], files=farm.files.address,
                    check=0)
    assert isinstance(r.json["jobs"], list)
    # a change through the follower lands on the leader
    r = run_farmctl("submit", CUBE_MK4_PLA, "--profile", "mk4", "--hold", "--queue",
                    unique("q"), schedulers=[follower.address], files=farm.files.address,
                    check=0)
    job_id = r.out.strip()
    assert re.fullmatch(r"j-[0-9A-Z]{26}", job_id), r
    assert farm.job(job_id).state == pb.JOB_STATE_HELD
    # status names the leader and each replica's role
    st = run_farmctl("--json", "status", farm=farm, check=0).json
    roles = {x["address"]: x["role"] for x in st["scheduler"]["replicas"]}
    assert roles == {leader.address: "leader", follower.address: "follower"}, st
    assert st["scheduler"]["leader"] == leader.address
    assert st["files"]["health"] == "serving"
    assert st["jobs"]["by_state"]["held"] >= 1
    assert st["discovery"] == {"configured": False, "address": None, "error": "",
                               "instances": []}
    text = run_farmctl("status", farm=farm, check=0).out
    assert "discovery  not configured" in text and "leader %s" % leader.address in text
    # a dead first address is skipped
    r = run_farmctl("jobs", "--limit", "1", schedulers=["127.0.0.1:%d" % free_port(),
                                                        follower.address], check=0)
    run_farmctl("job", "cancel", job_id, farm=farm, check=0)


def test_redirect_to_unreachable_leader_falls_through(farm_factory):
    """A follower names the leader by its --advertise address; when that does
    not resolve from here (a leader inside Docker advertising its compose
    name), farmctl tries the next configured address, and when there is none
    says what to fix."""
    farm = farm_factory(replicas=1, extra_args=["--advertise", "leader.invalid:7400"])
    leader = farm.leader()
    # (a later flag wins: the follower advertises a name of its own)
    follower = farm.start_scheduler(extra_args=["--advertise", "follower.invalid:7401"])
    assert farm.leader() is leader

    def redirected():  # the follower learns the leader from the lease
        r = run_farmctl("jobs", schedulers=[follower.address], files=farm.files.address)
        return r if "leader.invalid" in r.err else None

    r = wait_until(redirected, 30, "the follower to redirect to the leader")
    assert r.rc == 3, r
    assert "cannot reach the scheduler at leader.invalid:7400" in r.err, r
    assert "--advertise address must be reachable" in r.err, r
    r = run_farmctl("--json", "jobs", schedulers=[follower.address, leader.address],
                    files=farm.files.address, check=0)
    assert isinstance(r.json["jobs"], list), r


def test_wrong_token(farm_factory, tmp_path):
    farm = farm_factory(tokens=[("admin", "root", "root-token-0123456789abcdef"),
                                ("viewer", "wall", "viewer-token-0123456789abc")])
    r = run_farmctl("jobs", "--token", "not-the-token-0123456789", farm=farm)
    assert r.rc == 1, r
    assert "UNAUTHENTICATED" in r.err and "check the token" in r.err, r
    r = run_farmctl("jobs", farm=farm)  # no token at all
    assert r.rc == 1 and "UNAUTHENTICATED" in r.err, r
    # a viewer may look but not change
    run_farmctl("jobs", "--token", "viewer-token-0123456789abc", farm=farm, check=0)
    r = run_farmctl("job", "hold", "j-01AAAAAAAAAAAAAAAAAAAAAAAA", "--token",
                    "viewer-token-0123456789abc", farm=farm)
    assert r.rc == 1 and "PERMISSION_DENIED" in r.err, r
    # the token from the environment and from the config file
    run_farmctl("jobs", farm=farm, env={"PRINTFARM_TOKEN": "root-token-0123456789abcdef"},
                check=0)
    (tmp_path / "farmctl.conf").write_text("# test\ntoken = root-token-0123456789abcdef\n")
    run_farmctl("jobs", farm=farm, cwd=str(tmp_path), check=0)


def test_configuration_precedence(two_replicas, tmp_path):
    farm = two_replicas
    good = farm.leader().address
    dead = "127.0.0.1:%d" % free_port()
    conf = tmp_path / "farmctl.conf"
    conf.write_text("scheduler = %s\nfiles=%s\n" % (good, farm.files.address))
    # the file alone
    run_farmctl("jobs", "--limit", "1", cwd=str(tmp_path), check=0)
    # a variable beats the file
    r = run_farmctl("jobs", cwd=str(tmp_path), env={"PRINTFARM_SCHEDULER": dead})
    assert r.rc == 3 and dead in r.err, r
    # a flag beats the variable
    run_farmctl("jobs", "--scheduler", good, cwd=str(tmp_path),
                env={"PRINTFARM_SCHEDULER": dead}, check=0)
    # --config / PRINTFARM_CONFIG name another file
    other = tmp_path / "other.conf"
    other.write_text("scheduler = %s\n" % dead)
    r = run_farmctl("jobs", "--config", other, cwd=str(tmp_path))
    assert r.rc == 3, r
    # a bad file is a usage error naming the line
    conf.write_text("scheduler = %s\ncolour = blue\n" % good)
    r = run_farmctl("jobs", cwd=str(tmp_path))
    assert r.rc == 2 and "farmctl.conf:2: unknown key 'colour'" in r.err, r
    r = run_farmctl("jobs", "--config", tmp_path / "nope.conf", cwd=str(tmp_path))
    assert r.rc == 2 and "nope.conf" in r.err, r


def test_not_found_and_refused_changes_exit_1(two_replicas):
    farm = two_replicas
    r = run_farmctl("job", "show", "j-01AAAAAAAAAAAAAAAAAAAAAAAA", farm=farm)
    assert r.rc == 1 and "NOT_FOUND" in r.err, r
    r = run_farmctl("printer", "show", "no-such-printer", farm=farm)
    assert r.rc == 1 and "no printer 'no-such-printer'" in r.err, r
    r = run_farmctl("printer", "clear", "no-such-printer", farm=farm)
    assert r.rc == 1 and "NOT_FOUND" in r.err, r
    r = run_farmctl("submit", CUBE_MK4_PLA, "--profile", "mk4", "--count", "2", "--queue",
                    unique("q"), farm=farm, check=0)
    jid = r.out.strip()
    run_farmctl("job", "cancel", jid, farm=farm, check=0)
    r = run_farmctl("job", "hold", jid, farm=farm)
    assert r.rc == 1 and "FAILED_PRECONDITION" in r.err, r


# ---------------------------------------------------------------- golden JSON

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"


def normalise(doc, tmp=""):
    """Ids, times and per-run names become placeholders; seq numbers become
    their order."""
    seqs = {}

    def walk(v, key=None):
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            v = re.sub(r"\bj-" + ULID, "<job>", v)
            v = re.sub(r"\ba-" + ULID, "<attempt>", v)
            v = re.sub(r"golden-\d+-\d+", "<queue>", v)
            if tmp:
                v = v.replace(tmp, "<tmp>")
            return v
        if key is not None and key.endswith("_unix_ms") and v:
            return "<time>"
        if key == "seq":
            return seqs.setdefault(v, len(seqs) + 1)
        return v
    return walk(doc)


def check_golden(name, doc):
    path = os.path.join(GOLDEN, name + ".json")
    text = json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    if os.environ.get("PF_UPDATE_GOLDEN") == "1":
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return
    with open(path) as f:
        want = f.read()
    assert text == want, "%s differs from the golden file %s:\n%s" % (name, path, text)


def test_golden_json(two_replicas, tmp_path):
    farm = two_replicas
    tmp = str(tmp_path)
    queue = unique("golden")
    r = run_farmctl("--json", "bundle", "create", tmp_path / "cube.pfb",
                    "--profile", "mk4=" + CUBE_MK4_PLA, "--profile", "ender3=" + CUBE_ENDER3_PLA,
                    "--name", "cube", check=0)
    check_golden("bundle_create", normalise(r.json, tmp))

    r = run_farmctl("--json", "submit", tmp_path / "cube.pfb", "--count", "3", "--priority",
                    "-2", "--material", "PLA", "--colour", "black", "--queue", queue,
                    "--profile", "mk4", "--label", "room=lab", "--hold",
                    "--idempotency-key", "golden-key", farm=farm, check=0)
    sub = r.json
    jid = sub["job"]["id"]
    assert sub["uploaded"] in (0, 1, 2) and not sub["duplicate"]
    sub["uploaded"] = sub["uploaded_bytes"] = "<depends on earlier tests>"
    check_golden("submit", normalise(sub, tmp))
    # the same key again: the same job, marked duplicate, nothing uploaded
    r = run_farmctl("--json", "submit", tmp_path / "cube.pfb", "--count", "3", "--priority",
                    "-2", "--material", "PLA", "--colour", "black", "--queue", queue,
                    "--profile", "mk4", "--label", "room=lab", "--hold",
                    "--idempotency-key", "golden-key", farm=farm, check=0)
    assert r.json["duplicate"] and r.json["job"]["id"] == jid and r.json["uploaded"] == 0

    run_farmctl("job", "priority", jid, "-5", farm=farm, check=0)
    r = run_farmctl("--json", "job", "count", jid, "4", farm=farm, check=0)
    check_golden("job_count", normalise(r.json, tmp))
    r = run_farmctl("--json", "job", "show", jid, farm=farm, check=0)
    check_golden("job_show", normalise(r.json, tmp))
    r = run_farmctl("--json", "jobs", "--queue", queue, farm=farm, check=0)
    check_golden("jobs", normalise(r.json, tmp))
    r = run_farmctl("--json", "job", "cancel", jid, "--reason", "golden test", farm=farm,
                    check=0)
    check_golden("job_cancel", normalise(r.json, tmp))
    r = run_farmctl("--json", "events", "--after", "0", "--job", jid, "--wait", "500ms",
                    farm=farm, check=0)
    check_golden("events", normalise(r.lines_json(), tmp))

    # a printer: a scripted agent with a fixed identity
    agent = farm.agent("golden-printer", "mk4", materials=[(0, "PLA", "black"), (1, "PETG", "")],
                       capabilities={"driver": "scripted", "firmware": "test 1", "extruders": 2,
                                     "can_pause": True})
    agent.wait_welcome()
    farm.wait_printer("golden-printer", pb.PRINTER_STATE_IDLE)
    r = run_farmctl("--json", "printer", "materials", "golden-printer", "--extruder", "1",
                    "PETG:#ffffff", farm=farm, check=0)
    assert [(m["extruder"], m["material"], m["colour"]) for m in r.json["printer"]["materials"]] \
        == [(0, "PLA", "black"), (1, "PETG", "#ffffff")], r
    r = run_farmctl("--json", "printer", "show", "golden-printer", farm=farm, check=0)
    check_golden("printer_show", normalise(r.json, tmp))
    r = run_farmctl("--json", "printers", "--state", "idle", farm=farm, check=0)
    assert "golden-printer" in [p["id"] for p in r.json["printers"]]
    r = run_farmctl("printer", "show", "golden-printer", farm=farm, check=0)
    assert "extruder 1:   PETG #ffffff" in r.out, r
    agent.close()


def test_status_lists_discovery_instances(two_replicas):
    """`farmctl status --discovery` lists what pf-discovery's List returns (a
    Python stand-in speaks the Discovery service here, so the test does not
    depend on pf-discovery being built)."""
    from concurrent import futures

    import grpc
    from printfarm.v1 import discovery_pb2 as dpb
    from printfarm.v1 import discovery_service_pb2_grpc as dgrpc

    class Fake(dgrpc.DiscoveryServicer):
        def List(self, request, context):
            r = dpb.ListInstancesResponse()
            s = r.instances.add(health=dpb.INSTANCE_HEALTH_SERVING, latency_us=1500,
                                last_seen_unix_ms=1)
            s.instance.kind = dpb.INSTANCE_KIND_SCHEDULER
            s.instance.id = "sched-1"
            s.instance.address = "10.1.2.3:7400"
            s.instance.version = "0.1.0"
            s = r.instances.add(health=dpb.INSTANCE_HEALTH_UNREACHABLE,
                                probe_error="connection refused")
            s.instance.kind = dpb.INSTANCE_KIND_AGENT
            s.instance.id = "mk4-03"
            s.instance.address = "10.1.2.9:7600"
            return r

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    dgrpc.add_DiscoveryServicer_to_server(Fake(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        farm = two_replicas
        st = run_farmctl("--json", "status", "--discovery", "127.0.0.1:%d" % port, farm=farm,
                         check=0).json
        d = st["discovery"]
        assert d["configured"] and d["error"] == "", d
        assert [(i["instance"]["kind"], i["instance"]["id"], i["health"])
                for i in d["instances"]] == [("scheduler", "sched-1", "serving"),
                                             ("agent", "mk4-03", "unreachable")], d
        text = run_farmctl("status", "--discovery", "127.0.0.1:%d" % port, farm=farm,
                           check=0).out
        assert re.search(r"^scheduler\s+sched-1\s+10\.1\.2\.3:7400\s+serving\s+1\.5 ms", text,
                         re.M), text
        assert re.search(r"^agent\s+mk4-03\s+10\.1\.2\.9:7600\s+unreachable.*connection refused",
                         text, re.M), text
    finally:
        server.stop(0)
    # configured but down: the rest is still shown, and the exit code says so
    r = run_farmctl("status", "--discovery", "127.0.0.1:%d" % free_port(), farm=two_replicas)
    assert r.rc == 3 and "jobs" in r.out and "pf-discovery at" in r.err, r
