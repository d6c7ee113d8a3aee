"""Hostile-client tests: one real farm (PostgreSQL, Redis, pf-files,
pf-scheduler with bearer tokens, pf-discovery) attacked by Python grpcio
clients that misbehave, while a well-behaved client checks that it is still
served.

The farm reuses tests/sched/conftest.py (infra, Farm, Agent, EventWatch) and
the interop process wrapper; pf-discovery is started the way
tests/discovery/conftest.py starts it.

Fixtures
--------
stack (session)   Stack: .farm (Farm with tokens), .files, .scheduler,
                  .discovery (interop Server objects), .servers {name: Server},
                  .rss(name) -> KiB, .baseline {name: KiB},
                  .channel(name) -> a fresh channel for an offender (closed at
                  teardown), .health(name) -> ServingStatus.
                  At teardown every process gets SIGTERM and must exit 0, and
                  no log may hold a sanitizer report.
"""

import importlib.util
import os
import re
import sys

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("PF_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))

# In the sanitizer build, freed memory sits in ASan's quarantine (256 MiB by
# default), which would swamp the memory-growth figures; a small quarantine
# keeps use-after-free detection and makes RSS mean what the service holds.
if os.environ.get("PF_SANITIZE") == "1":
    opts = os.environ.get("ASAN_OPTIONS", "")
    os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=8"


def _load(name, path):
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


sched = _load("pf_sched_conftest", os.path.join(REPO, "tests", "sched", "conftest.py"))
interop = sched.interop

import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402

infra = sched.infra  # the session fixture: PostgreSQL + Redis from tests/harness

TOKENS = [
    ("admin", "hostile-admin", "admin-token-0123456789abcdef0123456789"),
    ("agent", "printer-real", "agent-token-real-0123456789abcdef012345"),
    ("agent", "rogue", "agent-token-rogue-0123456789abcdef01234"),
    ("viewer", "hostile-viewer", "viewer-token-0123456789abcdef0123456"),
]

SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|"
                          r"SUMMARY: (Address|Undefined|Leak)Sanitizer")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def sanitizer_reports(server):
    return [line for line in server.log.splitlines() if SANITIZER_RE.search(line)]


class Stack:
    def __init__(self, infra, workdir):
        self.channels = []
        self.discovery = None
        os.makedirs(os.path.join(workdir, "farm"))
        self.farm = sched.Farm(infra, os.path.join(workdir, "farm"), replicas=1,
                               tokens=TOKENS)
        try:
            self.files = self.farm.files
            self.scheduler = self.farm.leader()
            ddir = os.path.join(workdir, "discovery")
            os.makedirs(ddir)
            argv = [interop.binary_path("discovery", "PF_DISCOVERY_BIN"),
                    "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                    "--redis-url", infra.new_redis_url(), "--log-level", "debug",
                    "--probe-interval", "500ms", "--probe-timeout", "400ms"]
            self.discovery = interop.Server(argv, ddir)
            self.discovery.wait_listening()
            self.discovery.channel = self.discovery.new_channel()
        except BaseException:
            self.stop(check=False)
            raise
        self.servers = {"files": self.files, "scheduler": self.scheduler,
                        "discovery": self.discovery}
        self.baseline = {}

    def rss(self, name):
        return rss_kib(self.servers[name].process.pid)

    def channel(self, name):
        ch = grpc.insecure_channel(self.servers[name].address)
        self.channels.append(ch)
        return ch

    def metadata(self, name):
        """Call metadata a service needs (tokens are on for the scheduler only)."""
        return self.farm.metadata if name == "scheduler" else None

    def health(self, name, timeout=30):
        stub = health_pb2_grpc.HealthStub(self.servers[name].channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status

    def alive(self):
        return {n: s.process.poll() is None for n, s in self.servers.items()}

    def stop(self, check=True):
        for ch in self.channels:
            ch.close()
        errors = []
        if self.discovery is not None:
            try:
                self.discovery.stop(expect_exit=0 if check else None)
            except AssertionError as e:
                errors.append(str(e))
        try:
            self.farm.stop(check=check)
        except AssertionError as e:
            errors.append(str(e))
        if check:
            for s in [self.discovery, self.farm.files] + self.farm.schedulers:
                if s is not None and sanitizer_reports(s):
                    errors.append("%s logged sanitizer reports:\n%s"
                                  % (s.argv[0], "\n".join(sanitizer_reports(s)[:20])))
        if errors:
            raise AssertionError("\n".join(errors))


@pytest.fixture(scope="session")
def stack(infra, tmp_path_factory):
    s = Stack(infra, str(tmp_path_factory.mktemp("hostile")))
    yield s
    s.stop()
