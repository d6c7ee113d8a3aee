"""pf-discovery integration tests: real Redis servers and real pf-discovery
(and pf-files) processes, driven by Python grpcio clients.

Stubs and the process wrapper (`Server`) come from tests/interop/conftest.py,
loaded here under another module name: at import it generates
printfarm.v1.*_pb2 / *_pb2_grpc (discovery_service_pb2_grpc.DiscoveryStub
included) into a temporary directory on sys.path.

Fixtures
--------
redis_base (session)  one Redis on a free loopback port (tests/harness/redis.sh);
                      its 16 databases are handed out by `redis_url`.
redis_url             a flushed database of redis_base, one per test.
redis_factory         factory() -> RedisServer of the test's own (stop/start it).
discovery_factory     factory(redis_url, *extra flags, tokens=None) -> Discovery
                      (a Server with .stub, .admin_get(path), .metric(name)).
                      Every one is SIGTERM'd at teardown; exit 0 is required
                      unless the test killed it (disc.killed = True).
pf_files_factory      from the interop conftest (real pf-files processes).

Environment: PF_BUILD_DIR as for the interop tests; PF_DISCOVERY_BIN overrides
the pf-discovery path.
"""

import importlib.util
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
HARNESS = os.path.join(TESTS, "harness")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


interop = _load("pf_interop_conftest", os.path.join(TESTS, "interop", "conftest.py"))
pf_files_factory = interop.pf_files_factory
binary_path = interop.binary_path
Server = interop.Server

from printfarm.v1 import common_pb2  # noqa: E402
from printfarm.v1 import discovery_pb2 as dpb  # noqa: E402
from printfarm.v1 import discovery_service_pb2_grpc as dgrpc  # noqa: E402

RPC_TIMEOUT = 10


def wait_until(pred, timeout, what="condition", interval=0.05):
    """Polls pred() until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except grpc.RpcError as e:
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s%s" % (
                timeout, what, (" (last error: %s %s)" % (last_exc.code(), last_exc.details()))
                if last_exc else ""))
        time.sleep(interval)


def _sh(*argv):
    r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr))
    return r.stdout.strip()


def free_port():
    return int(_sh("bash", os.path.join(HARNESS, "free_port.sh")))


def closed_port():
    """A loopback port nothing listens on (bound and released at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------

class RedisServer:
    """A throw-away redis-server on a free loopback port, in its own dir."""

    def __init__(self, directory, port=None):
        self.dir = directory
        self.port = port or free_port()
        self.start()

    def start(self):
        self.url = _sh("bash", os.path.join(HARNESS, "redis.sh"), "start", self.dir,
                       str(self.port))

    def stop(self):
        subprocess.run(["bash", os.path.join(HARNESS, "redis.sh"), "stop", self.dir])

    def cli(self, *args, db=0):
        return _sh("redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "-n", str(db), *args)


@pytest.fixture(scope="session")
def redis_base(tmp_path_factory):
    srv = RedisServer(str(tmp_path_factory.mktemp("redis")))
    yield srv
    srv.stop()


_redis_db = itertools.count(0)


@pytest.fixture
def redis_url(redis_base):
    n = next(_redis_db) % 16
    redis_base.cli("FLUSHDB", db=n)
    return "%s/%d" % (redis_base.url, n)


@pytest.fixture
def redis_factory(tmp_path):
    made = []

    def factory():
        srv = RedisServer(str(tmp_path / ("redis%d" % len(made))))
        made.append(srv)
        return srv

    yield factory
    for srv in made:
        srv.stop()


# --------------------------------------------------------------------------
# pf-discovery
# --------------------------------------------------------------------------

class Discovery(Server):
    killed = False

    @property
    def stub(self):
        if self.channel is None:
            self.channel = self.new_channel()
        return dgrpc.DiscoveryStub(self.channel)

    def admin_get(self, path):
        """(HTTP status, body) of GET on the admin port."""
        url = "http://127.0.0.1:%d%s" % (self.ports["admin"], path)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name):
        """The value of an unlabelled metric (None when absent)."""
        _, body = self.admin_get("/metrics")
        m = re.search(r"^%s (\S+)$" % re.escape(name), body, re.M)
        return float(m.group(1)) if m else None

    def kill(self, sig=signal.SIGKILL):
        self.killed = True
        self.process.send_signal(sig)
        self.process.wait(10)


def discovery_argv(redis, extra=()):
    binary = binary_path("discovery", "PF_DISCOVERY_BIN")
    return [binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--redis-url", redis, "--log-level", "debug",
            "--probe-interval", "500ms", "--probe-timeout", "400ms"] + list(extra)


@pytest.fixture
def discovery_factory(tmp_path):
    made = []
    counter = itertools.count(1)

    def factory(redis, *extra, tokens=None, wait=True):
        d = tmp_path / ("disc%d" % next(counter))
        d.mkdir()
        extra = list(extra)
        if tokens:
            path = d / "tokens"
            path.write_text("".join("%s %s %s\n" % t for t in tokens))
            extra += ["--tokens", str(path)]
        srv = Discovery(discovery_argv(redis, extra), str(d))
        made.append(srv)
        if wait:
            srv.wait_listening()
        return srv

    yield factory
    errors = []
    for srv in made:
        try:
            srv.stop(expect_exit=None if srv.killed else 0)
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


# --------------------------------------------------------------------------
# helpers for the tests
# --------------------------------------------------------------------------

KIND = {"scheduler": dpb.INSTANCE_KIND_SCHEDULER, "files": dpb.INSTANCE_KIND_FILES,
        "agent": dpb.INSTANCE_KIND_AGENT, "discovery": dpb.INSTANCE_KIND_DISCOVERY,
        "web": dpb.INSTANCE_KIND_WEB}


def instance(kind, id, address, labels=None, version="1.0"):
    return dpb.Instance(kind=KIND.get(kind, kind), id=id, address=address, version=version,
                        labels=[common_pb2.Label(key=k, value=v)
                                for k, v in (labels or {}).items()])


def register(stub, kind, id, address, ttl=15, labels=None, version="1.0", metadata=None):
    return stub.Register(dpb.RegisterRequest(instance=instance(kind, id, address, labels, version),
                                             ttl_seconds=ttl),
                         timeout=RPC_TIMEOUT, metadata=metadata)


def listed(stub, kind=0, labels=None):
    """{(kind name, id): InstanceStatus} of List."""
    req = dpb.ListInstancesRequest(kind=KIND.get(kind, kind),
                                   labels=[common_pb2.Label(key=k, value=v)
                                           for k, v in (labels or {}).items()])
    r = stub.List(req, timeout=RPC_TIMEOUT)
    names = {v: k for k, v in KIND.items()}
    return {(names[s.instance.kind], s.instance.id): s for s in r.instances}


def expect_code(code, fn, *args, **kw):
    """Calls fn; it must fail with `code`. Returns the details text."""
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    assert e.value.code() == code, "got %s %r, want %s" % (e.value.code(), e.value.details(), code)
    return e.value.details()


class Watch:
    """A Watch stream read by a thread; events accumulate in .events."""

    def __init__(self, stub, kind=0, send_initial=True):
        import threading
        self.events = []
        self.closed = None
        self._cond = threading.Condition()
        self.call = stub.Watch(dpb.WatchInstancesRequest(kind=KIND.get(kind, kind),
                                                         send_initial=send_initial))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for ev in self.call:
                with self._cond:
                    self.events.append(ev)
                    self._cond.notify_all()
            result = (grpc.StatusCode.OK, "")
        except grpc.RpcError as e:
            result = (e.code(), e.details())
        with self._cond:
            self.closed = result
            self._cond.notify_all()

    def wait(self, pred, timeout=RPC_TIMEOUT, what="an event", start=0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, ev in enumerate(self.events[start:]):
                    if pred(ev):
                        return start + i, ev
                if self.closed is not None:
                    raise AssertionError("watch ended %s waiting for %s" % (self.closed, what))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %s within %ss; got %s" % (
                        what, timeout, [(e.type, e.instance.instance.id) for e in self.events]))
                self._cond.wait(left)

    def wait_closed(self, timeout=RPC_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.closed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("watch still open after %ss" % timeout)
                self._cond.wait(left)
            return self.closed

    def close(self):
        self.call.cancel()
        self._reader.join(5)
