"""pf-web's JSON API against a real farm: login and roles (the scheduler
decides them), precise HTTP errors for bad input, the viewer's refused
writes, job and printer actions, the SSE event stream with resume, the
admin endpoints, and 503 when the scheduler cannot be reached."""

import json
import socket
import subprocess
import threading
import urllib.request

from conftest import PROFILE, Http, gcode, interop, sched, start_web, wait_until

pb = sched.pb


def submit(h, count=1, est=600, **fields):
    f = {"count": str(count), "priority": "0"}
    f.update(fields)
    return h.post("/api/jobs", f, files={"gcode:" + PROFILE: ("cube.gcode",
                                                               gcode(est, tag=str(fields)))})


def read_sse(url, cookie, headers=None, want=1, timeout=60, into=None):
    """Reads SSE messages (dicts of field -> value) until `want` farm events;
    each is also appended to `into` as it arrives."""
    req = urllib.request.Request(url, headers=dict(headers or {}, Cookie=cookie))
    got = into if into is not None else []
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        msg = {}
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line == "":
                if msg.get("event") == "farm":
                    got.append(msg)
                    if len(got) >= want:
                        return got
                msg = {}
            elif not line.startswith(":") and ":" in line:
                k, v = line.split(":", 1)
                msg[k] = v.lstrip(" ")
    return got


def session_cookie(h):
    return "; ".join("%s=%s" % (c.name, c.value) for c in h.jar)


def test_login_roles_and_errors(web_farm):
    wf = web_farm(printers=1, web_args=["--max-upload", "256K"])
    printer = wf.agents[0].args[wf.agents[0].args.index("--printer-id") + 1]
    anon = Http(wf.url)

    # Not logged in: every API read and write is 401, pages are served.
    assert anon.get("/api/printers")[0] == 401
    assert anon.get("/api/events")[0] == 401
    assert anon.post("/api/jobs/j-x/hold")[0] == 401
    status, page = anon.get("/")
    assert status == 200 and b"Printfarm" in page
    assert anon.get("/no-such-page")[0] == 404
    assert anon.get("/api/no-such-endpoint")[0] == 404

    # Bad logins.
    assert anon.post("/api/login", {"token": ""})[0] == 400
    assert anon.post("/api/login", {"token": "bad token"})[0] == 400
    status, body = anon.post("/api/login", {"token": "0" * 32})
    assert status == 401 and "token" in body["error"]
    assert anon.get("/api/login")[0] == 405

    # Roles come from the scheduler.
    viewer = Http(wf.url)
    assert viewer.login(wf.tokens["viewer"]) == "viewer"
    cookie = viewer.last_headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    op = wf.http("operator")
    admin = Http(wf.url)
    assert admin.login(wf.tokens["admin"]) == "operator"  # admin acts as an operator
    assert op.get("/api/session")[1]["role"] == "operator"

    status, body = viewer.get("/api/printers")
    assert status == 200 and printer in [p["id"] for p in body["printers"]]
    p = [p for p in body["printers"] if p["id"] == printer][0]
    assert p["state"] == "idle" and p["profile"] == PROFILE

    # A viewer's writes are refused, and nothing changes.
    status, job = submit(op, count=1, hold="1")
    assert status == 200, job
    job_id = job["job"]["id"]
    assert job["job"]["state"] == "held"
    for path, fields in [("/api/jobs/%s/release" % job_id, None),
                         ("/api/jobs/%s/priority" % job_id, {"priority": "3"}),
                         ("/api/jobs/%s/cancel" % job_id, None),
                         ("/api/printers/%s/clear" % printer, None),
                         ("/api/printers/%s/release" % printer, None)]:
        status, body = viewer.post(path, fields)
        assert status == 403, (path, status, body)
        assert "operator" in body["error"]
    assert submit(viewer)[0] == 403
    assert viewer.get("/api/jobs/" + job_id)[1]["job"]["state"] == "held"

    # Precise errors for an operator's bad input.
    cases = [
        (op.post("/api/jobs/j-does-not-exist/hold"), 404),
        (op.get("/api/jobs/j-does-not-exist"), 404),
        (op.post("/api/printers/no-such-printer/clear"), 404),
        (op.post("/api/jobs/%s/priority" % job_id, {"priority": "high"}), 400),
        (op.post("/api/jobs/%s/priority" % job_id, {"priority": "99999999999"}), 400),
        (op.post("/api/jobs/%s/priority" % job_id, {}), 400),
        (op.post("/api/jobs/%s/count" % job_id, {"count": "0"}), 400),
        (op.post("/api/jobs/%s/explode" % job_id), 404),
        (op.get("/api/jobs/%s/hold" % job_id), 405),
        (op.get("/api/jobs/bad%20id"), 400),
        (op.post("/api/jobs", {"count": "1"}), 400),
        (op.post("/api/jobs", {"count": "many"},
                 files={"gcode:" + PROFILE: ("a.gcode", gcode(60))}), 400),
        (op.post("/api/jobs", {}, files={"gcode:bad profile!": ("a.gcode", gcode(60))}), 400),
        (op.post("/api/jobs", {}, files={"gcode:" + PROFILE: ("a.gcode", b"")}), 400),
        (op.post("/api/jobs", {}, files={"gcode:" + PROFILE: ("big.gcode", gcode(60, 300000))}),
         413),
        (op.post("/api/jobs/%s/hold" % job_id, headers={"Content-Type": "application/json"}),
         200),
        (op.post("/api/printers/%s/release" % printer), 409),
        (op.request("POST", "/api/jobs/%s/hold" % job_id, data=b'{"x":1}',
                    headers={"Content-Type": "application/json"}), 415),
    ]
    for i, ((status, body), want) in enumerate(cases):
        assert status == want, (i, status, body)
        if want != 200:
            assert isinstance(body, dict) and body["error"], (i, body)

    # Job actions change the scheduler's state.
    status, body = op.post("/api/jobs/%s/priority" % job_id, {"priority": "-4"})
    assert status == 200 and body["job"]["priority"] == -4
    assert wf.farm.job(job_id).priority == -4
    status, body = op.post("/api/jobs/%s/cancel" % job_id)
    assert status == 200 and body["job"]["state"] == "cancelled"
    assert wf.farm.job(job_id).state == pb.JOB_STATE_CANCELLED
    status, body = op.post("/api/jobs/%s/hold" % job_id)
    assert status == 409, body

    status, body = op.get("/api/jobs")
    assert status == 200
    listed = [j for j in body["jobs"] if j["id"] == job_id][0]
    bundle = body["bundles"][listed["bundle"]["sha256"]]
    assert bundle["files"][0]["profile"] == PROFILE
    assert bundle["files"][0]["metadata"]["estimated_seconds"] == 600

    # Health names the leader the redirect found.
    status, body = viewer.get("/api/health")
    assert status == 200 and body["scheduler"]["ok"]
    assert body["scheduler"]["leader"] == wf.farm.leader().address

    # Logging out ends the session server-side.
    assert viewer.post("/api/logout")[0] == 200
    assert viewer.get("/api/printers")[0] == 401

    # Admin endpoints.
    with urllib.request.urlopen(wf.admin_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'printfarm_web_http_requests_total{route="api",code="403"}' in text
    with urllib.request.urlopen(wf.admin_url + "/healthz", timeout=10) as r:
        assert r.status == 200


def test_event_stream_resumes_from_cursor(web_farm):
    wf = web_farm(printers=1)
    op = wf.http("operator")
    cookie = session_cookie(op)
    first = read_sse(wf.url + "/api/events?after=0", cookie, want=2)
    seqs = [int(m["id"]) for m in first]
    assert seqs == sorted(seqs) and len(set(seqs)) == 2
    for m in first:
        ev = json.loads(m["data"])
        assert ev["seq"] == int(m["id"]) and ev["kind"]
    assert "printer_connected" in [json.loads(m["data"])["kind"] for m in first]
    # A browser reconnecting with Last-Event-ID gets what came after it.
    resumed = read_sse(wf.url + "/api/events", cookie, {"Last-Event-ID": str(seqs[0])}, want=1)
    assert [int(m["id"]) for m in resumed] == seqs[1:2]
    # A new event arrives live on an open stream.
    live = []
    t = threading.Thread(target=lambda: live.extend(read_sse(
        wf.url + "/api/events?after=%d" % seqs[-1], cookie, want=1)), daemon=True)
    t.start()
    status, job = submit(op, count=1, hold="1")
    assert status == 200
    t.join(60)
    assert len(live) == 1 and int(live[0]["id"]) > seqs[-1]
    ev = json.loads(live[0]["data"])
    assert ev["kind"] == "job_submitted" and ev["job_id"] == job["job"]["id"]
    # A bad cursor is a 400.
    status, body = Http(wf.url).request("GET", "/api/events?after=-1",
                                        headers={"Cookie": cookie})
    assert status == 400, body


def test_leader_failover_keeps_api_and_stream(web_farm):
    wf = web_farm(printers=1, replicas=2)
    op = wf.http("operator")
    cookie = session_cookie(op)
    old = wf.farm.leader()
    live = []

    def reader():
        try:
            read_sse(wf.url + "/api/events?after=0", cookie, want=1000, timeout=90, into=live)
        except Exception:
            pass  # ends with pf-web at teardown

    threading.Thread(target=reader, daemon=True).start()
    wait_until(lambda: len(live) >= 2 or None, 60, "the first events")
    wf.farm.kill(old)
    new = wf.farm.leader()
    assert new is not old
    # The API finds the new leader (the dead replica gives no redirect).
    status, body = submit(op, count=1, hold="1")
    assert status == 200, body
    job_id = body["job"]["id"]
    status, body = op.get("/api/health")
    assert status == 200 and body["scheduler"]["leader"] == new.address
    # The stream resumed after its last seq: the job's event arrives, and no
    # seq comes twice or out of order.
    wait_until(lambda: any(json.loads(m["data"]).get("job_id") == job_id for m in list(live))
               or None, 60, "the job's event on the stream after the failover")
    events = [json.loads(m["data"]) for m in list(live)]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    assert [e["kind"] for e in events].count("leader_elected") >= 2


def test_scheduler_unreachable_is_503(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = "127.0.0.1:%d" % s.getsockname()[1]  # bound, never listening: refused
    try:
        web = start_web(str(tmp_path / "web"), dead, dead, ["--timeout", "2s"])
        try:
            status, body = Http("http://127.0.0.1:%d" % web.ports["grpc"]).post(
                "/api/login", {"token": "a" * 32})
            assert status == 503, body
            assert "ListPrinters" in body["error"]
        finally:
            web.stop(expect_exit=0)
    finally:
        s.close()


def test_help_lists_flags_with_env():
    r = subprocess.run([interop.binary_path("web", "PF_WEB_BIN"), "--help"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0
    for flag in ("--listen", "--admin-listen", "--scheduler", "--files", "--discovery",
                 "--tls-cert", "PRINTFARM_SCHEDULER"):
        assert flag in r.stdout
    r = subprocess.run([interop.binary_path("web", "PF_WEB_BIN"), "--no-such-flag"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 2


def test_cross_site_post_is_refused(web_farm):
    wf = web_farm(printers=1)
    op = wf.http("operator")
    host = wf.url.split("//", 1)[1]
    status, body = op.post("/api/logout", {}, headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-site" in body["error"]
    assert op.get("/api/session")[0] == 200  # still logged in
    status, body = op.post("/api/logout", {}, headers={"Origin": "http://" + host})
    assert status == 200


def test_health_lists_discovery_instances(web_farm, tmp_path):
    from printfarm.v1 import common_pb2, discovery_pb2 as dpb
    from printfarm.v1 import discovery_service_pb2_grpc as dgrpc
    wf = web_farm(printers=1)
    leader = wf.farm.leader()
    d = tmp_path / "disc"
    d.mkdir()
    disc = interop.Server([interop.binary_path("discovery", "PF_DISCOVERY_BIN"), "--listen",
                           "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--redis-url",
                           wf.farm.infra.new_redis_url(), "--probe-interval", "500ms",
                           "--probe-timeout", "400ms"], str(d))
    web = None
    try:
        disc.wait_listening(timeout=30)
        stub = dgrpc.DiscoveryStub(disc.new_channel())
        stub.Register(dpb.RegisterRequest(
            instance=dpb.Instance(kind=dpb.INSTANCE_KIND_SCHEDULER, id="sched-a",
                                  address=leader.address,
                                  labels=[common_pb2.Label(key="role", value="leader")]),
            ttl_seconds=60), timeout=15)
        web = start_web(str(tmp_path / "web-disc"), leader.address, wf.farm.files.address,
                        ["--discovery", disc.address])
        h = Http("http://127.0.0.1:%d" % web.ports["grpc"])
        assert h.login(wf.tokens["viewer"]) == "viewer"

        def serving():
            status, body = h.get("/api/health")
            assert status == 200, body
            inst = [s for s in body["discovery"]["instances"] if s["instance"]["id"] == "sched-a"]
            return inst if inst and inst[0]["health"] == "serving" else None

        inst = wait_until(serving, 60, "the scheduler instance probed as serving")[0]
        assert inst["instance"]["kind"] == "scheduler"
        assert inst["instance"]["address"] == leader.address
        assert {"key": "role", "value": "leader"} in inst["instance"]["labels"]
    finally:
        if web is not None:
            web.stop(expect_exit=0)
        disc.stop(expect_exit=0)
