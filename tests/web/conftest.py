"""Fixtures for the pf-web tests: a real farm (PostgreSQL, Redis, pf-files,
pf-scheduler with tokens, pf-agent sim printers) plus pf-web, and a headless
Chromium driven through the DevTools protocol.

The farm comes from tests/sched/conftest.py and the agents from
tests/agent/conftest.py (loaded as modules, fixtures re-exported), as
tests/farmctl does.

  web_farm(tmp_path, farm_factory, agent_factory, printers=1, est=...) -> WebFarm
      .farm, .agents, .web (Server), .url, .admin_url, .tokens {role: token}
  Http(base): urllib client with its own cookie jar;
      .get/.post(path, fields=None, files=None, headers=None) -> (status, json)
  Chromium(workdir): headless browser; .page -> Page with .navigate(url),
      .eval(expr), .wait(expr, timeout, what), .set_files(selector, paths),
      .screenshot(path)
"""

import base64
import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)


sys.path.insert(0, TESTS)
import farm_fixtures  # noqa: E402

agent_mod, sched = farm_fixtures.load(globals(), "pf-web tests")

interop = sched.interop
wait_until = sched.wait_until
unique = sched.unique
gcode = agent_mod.gcode
PROFILE = "test-profile"  # agent_factory's default profile
ARTEFACTS = os.environ.get("PF_WEB_ARTEFACTS") or os.path.join(os.getcwd(), "artefacts")


# --------------------------------------------------------------------------- HTTP

class Http:
    """A browser-like HTTP client: cookies kept, errors returned not raised."""

    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.last_headers = None

    def request(self, method, path, data=None, headers=None, timeout=60):
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers or {})
        try:
            with self.opener.open(req, timeout=timeout) as r:
                body, status, self.last_headers = r.read(), r.status, r.headers
        except urllib.error.HTTPError as e:
            body, status, self.last_headers = e.read(), e.code, e.headers
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, fields=None, files=None, headers=None, timeout=60):
        headers = dict(headers or {})
        if files:
            boundary = uuid.uuid4().hex
            parts = []
            for k, v in (fields or {}).items():
                parts.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                              % (boundary, k, v)).encode())
            for k, (fname, content) in files.items():
                parts.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"; "
                              "filename=\"%s\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                              % (boundary, k, fname)).encode() + content + b"\r\n")
            parts.append(("--%s--\r\n" % boundary).encode())
            data = b"".join(parts)
            headers["Content-Type"] = "multipart/form-data; boundary=" + boundary
        elif fields is not None:
            data = urllib.parse.urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = b""
        return self.request("POST", path, data=data, headers=headers, timeout=timeout)

    def login(self, token):
        status, body = self.post("/api/login", {"token": token})
        assert status == 200, (status, body)
        return body["role"]


# --------------------------------------------------------------------------- farm + pf-web

def start_web(workdir, scheduler, files, extra=()):
    binary = interop.binary_path("web", "PF_WEB_BIN")
    os.makedirs(workdir, exist_ok=True)
    argv = [binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--scheduler", scheduler, "--files", files, "--log-level", "debug"] + list(extra)
    srv = interop.Server(argv, workdir)
    try:
        srv.wait_listening(timeout=30)
    except BaseException:
        srv.stop(expect_exit=None)
        raise
    return srv


class WebFarm:
    def __init__(self, farm, agents, web, tokens):
        self.farm = farm
        self.agents = agents
        self.web = web
        self.tokens = tokens
        self.url = "http://127.0.0.1:%d" % web.ports["grpc"]
        self.admin_url = "http://127.0.0.1:%d" % web.ports["admin"]

    def http(self, role=None):
        h = Http(self.url)
        if role:
            assert h.login(self.tokens[role]) == role
        return h


@pytest.fixture
def web_farm(tmp_path, farm_factory, agent_factory):
    """factory(printers=1, web_args=(), replicas=1) -> WebFarm (pf-web gets every
    replica in --scheduler, the leader first); pf-web is stopped at
    teardown and must exit 0 (leak-free under ASan)."""
    webs = []

    def factory(printers=1, web_args=(), replicas=1):
        tokens = {r: secrets.token_hex(16) for r in ("admin", "operator", "viewer")}
        ids = [unique("web-p") for _ in range(printers)]
        agent_tokens = {pid: secrets.token_hex(16) for pid in ids}
        entries = [(r, r + "-user", t) for r, t in tokens.items()]
        entries += [("agent", pid, t) for pid, t in agent_tokens.items()]
        farm = farm_factory(replicas=replicas, tokens=entries)
        sched_addr = ",".join([farm.leader().address] + [s.address for s in farm.schedulers
                                                          if s is not farm.leader()])
        agents = [agent_factory(pid, sched_addr, farm.files.address, "--token", agent_tokens[pid])
                  for pid in ids]
        for pid in ids:
            farm.wait_printer(pid, sched.pb.PRINTER_STATE_IDLE, timeout=60)
        web = start_web(str(tmp_path / ("web%d" % len(webs))), sched_addr, farm.files.address,
                        web_args)
        webs.append(web)
        return WebFarm(farm, agents, web, tokens)

    yield factory
    errors = []
    for w in webs:
        try:
            w.stop(expect_exit=0)
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


# --------------------------------------------------------------------------- Chromium

CHROMIUM = os.environ.get("PF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


class Page:
    """One page target over the DevTools websocket (one request at a time)."""

    def __init__(self, ws_url):
        import websocket
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, timeout=60, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise AssertionError("%s failed: %s" % (method, msg["error"]))
                return msg.get("result", {})
            self.events.append(msg)
        raise AssertionError("no answer to %s within %ss" % (method, timeout))

    def eval(self, expr, timeout=60):
        r = self.call("Runtime.evaluate", timeout=timeout, expression=expr, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError("JS error in %r: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait(self, expr, timeout, what, interval=0.2):
        deadline = time.monotonic() + timeout
        while True:
            v = self.eval(expr)
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %ss waiting for %s (%s)" % (timeout, what,
                                                                                  expr))
            time.sleep(interval)

    def navigate(self, url):
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'", 60, "the page to load")

    def set_files(self, selector, paths):
        self.call("DOM.getDocument")
        r = self.call("Runtime.evaluate", expression="document.querySelector(%s)"
                      % json.dumps(selector))
        self.call("DOM.setFileInputFiles", files=list(paths), objectId=r["result"]["objectId"])

    def screenshot(self, path):
        r = self.call("Page.captureScreenshot", format="png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))
        return path

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


class Chromium:
    def __init__(self, workdir, width=1280, height=900):
        if not os.access(CHROMIUM, os.X_OK):
            pytest.fail("chromium not found (%s)" % CHROMIUM, pytrace=False)
        self.profile = tempfile.mkdtemp(prefix="pfweb-chrome-", dir=workdir)
        self.log = open(os.path.join(workdir, "chromium.log"), "w")
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--remote-debugging-port=0", "--user-data-dir=" + self.profile,
                "--window-size=%d,%d" % (width, height), "about:blank"]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.page = None
        try:
            port_file = os.path.join(self.profile, "DevToolsActivePort")
            wait_until(lambda: os.path.exists(port_file) and open(port_file).read().strip(), 60,
                       "chromium's DevToolsActivePort")
            self.port = int(open(port_file).read().split()[0])
            targets = wait_until(lambda: [t for t in self._json("/json/list")
                                          if t.get("type") == "page"], 30, "a page target")
            self.page = Page(targets[0]["webSocketDebuggerUrl"])
            self.page.call("Page.enable")
            self.page.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _json(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path), timeout=10) as r:
            return json.loads(r.read())

    def close(self):
        if self.page is not None:
            self.page.close()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def chromium(tmp_path):
    browsers = []

    def factory(**kw):
        b = Chromium(str(tmp_path), **kw)
        browsers.append(b)
        return b

    yield factory
    for b in browsers:
        b.close()
