"""Interop tests: a Python grpcio client against the C services.

At import time this generates Python modules from proto/ into a temporary
directory and puts it first on sys.path:

    printfarm.v1.<name>_pb2, printfarm.v1.<name>_pb2_grpc  for every
        proto/printfarm/v1/<name>.proto (common, files, scheduler,
        discovery, discovery_service)
    health_pb2, health_pb2_grpc  from /usr/share/grpc-proto (grpc.health.v1)

It uses `python3 -m grpc_tools.protoc` (Debian's grpc-tools bundles protoc
3.5.1). If that fails, it falls back to the system `protoc --python_out` and
builds the `*_pb2_grpc` stub classes from the service descriptors.

Environment:
    PF_BUILD_DIR   the CMake build directory (default: <repo>/build). When it
                   is set and a binary is missing the tests fail; when it is
                   not set they are skipped.
    PF_FILES_BIN   overrides the pf-files binary path.
    PF_INTEROP_STUBGEN=protoc  skip grpc_tools and use the fallback.

Server logs (stderr.log, stdout.log) and data dirs live under pytest's
basetemp (the last three runs are kept).
"""

import atexit
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_ROOT = os.path.join(REPO, "proto")
HEALTH_PROTO_DIR = "/usr/share/grpc-proto/grpc/health/v1"
BUILD_DIR_EXPLICIT = "PF_BUILD_DIR" in os.environ
BUILD_DIR = os.path.abspath(os.environ.get("PF_BUILD_DIR") or os.path.join(REPO, "build"))
MKCERTS = os.path.join(REPO, "tests", "certs", "mkcerts.sh")

# Every RPC the tests make gets this deadline (seconds), so a hung server
# fails a test instead of hanging the run.
RPC_TIMEOUT = 15
START_TIMEOUT = 15
STOP_TIMEOUT = 20


# --------------------------------------------------------------------------
# Python modules from the .proto files
# --------------------------------------------------------------------------

def _proto_files():
    files = sorted(glob.glob(os.path.join(PROTO_ROOT, "printfarm", "v1", "*.proto")))
    if not files:
        raise RuntimeError("no .proto files under %s" % PROTO_ROOT)
    return [os.path.relpath(f, PROTO_ROOT) for f in files]


def _run(cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _python_for_grpc_tools():
    for py in (sys.executable, "/usr/bin/python3"):
        if py and _run([py, "-c", "import grpc_tools.protoc"]).returncode == 0:
            return py
    return None


def _synthesize_grpc_module(pb2_name, out_dir):
    """Writes <pb2_name>_grpc.py with a <Service>Stub class per service.

    Used only when grpc_tools cannot parse the protos. The stubs are built
    from the descriptors at import time, with the names and call shapes
    grpc_tools would generate."""
    pkg, _, mod = pb2_name.rpartition(".")
    imp = ("from %s import %s as _pb2" % (pkg, mod)) if pkg else ("import %s as _pb2" % mod)
    src = '''"""Stubs built from descriptors (grpc_tools was not usable)."""
from google.protobuf import symbol_database as _sdb
%s


def _make(service):
    def __init__(self, channel):
        for m in service.methods:
            req = _sdb.Default().GetSymbol(m.input_type.full_name)
            resp = _sdb.Default().GetSymbol(m.output_type.full_name)
            kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                    (True, False): channel.stream_unary, (True, True): channel.stream_stream}[
                        (m.client_streaming, m.server_streaming)]
            setattr(self, m.name, kind("/%%s/%%s" %% (service.full_name, m.name),
                                       request_serializer=req.SerializeToString,
                                       response_deserializer=resp.FromString))
    return type(service.name + "Stub", (object,), {"__init__": __init__})


for _s in _pb2.DESCRIPTOR.services_by_name.values():
    globals()[_s.name + "Stub"] = _make(_s)
''' % imp
    with open(os.path.join(out_dir, *pb2_name.split(".")) + "_grpc.py", "w") as f:
        f.write(src)


def _generate_stubs(out_dir):
    protos = _proto_files()
    errors = []
    py = None if os.environ.get("PF_INTEROP_STUBGEN") == "protoc" else _python_for_grpc_tools()
    if py:
        r = _run([py, "-m", "grpc_tools.protoc", "-I" + PROTO_ROOT, "-I" + HEALTH_PROTO_DIR,
                  "--python_out=" + out_dir, "--grpc_python_out=" + out_dir]
                 + protos + ["health.proto"])
        if r.returncode == 0:
            return "grpc_tools"
        errors.append("grpc_tools.protoc: " + r.stdout)
    protoc = shutil.which("protoc")
    if protoc:
        r = _run([protoc, "-I" + PROTO_ROOT, "-I" + HEALTH_PROTO_DIR, "--python_out=" + out_dir]
                 + protos + ["health.proto"])
        if r.returncode == 0:
            for p in protos:
                _synthesize_grpc_module(p[:-len(".proto")].replace("/", ".") + "_pb2", out_dir)
            _synthesize_grpc_module("health_pb2", out_dir)
            return "protoc"
        errors.append("protoc: " + r.stdout)
    raise RuntimeError("cannot generate Python modules from %s:\n%s" % (PROTO_ROOT, "\n".join(errors)))


STUB_DIR = tempfile.mkdtemp(prefix="pf-interop-stubs-")
atexit.register(shutil.rmtree, STUB_DIR, True)
STUB_GENERATOR = _generate_stubs(STUB_DIR)
sys.path.insert(0, STUB_DIR)

# Fail here, once, if generation produced unusable modules.
from printfarm.v1 import files_pb2, files_pb2_grpc  # noqa: E402,F401
import health_pb2, health_pb2_grpc  # noqa: E402,E401,F401


def pytest_report_header(config):
    return ["printfarm interop: stubs from %s in %s; build dir %s"
            % (STUB_GENERATOR, STUB_DIR, BUILD_DIR)]


# --------------------------------------------------------------------------
# Running a server binary
# --------------------------------------------------------------------------

_PORT_RE = re.compile(r"\bport=(\d+)\b")


def binary_path(service, env_override):
    path = os.environ.get(env_override) or os.path.join(BUILD_DIR, "services", service, "pf-" + service)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        msg = "%s not built (%s)" % ("pf-" + service, path)
        if BUILD_DIR_EXPLICIT or env_override in os.environ:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg + "; set PF_BUILD_DIR")
    return path


class Server:
    """One server process. Iterating gives (channel, ports, process).

    ports is {"grpc": N, "admin": N or None}; `log` holds stderr so far."""

    def __init__(self, argv, workdir, env=None):
        self.argv = argv
        self.workdir = workdir
        self.lines = []
        self.ports = {"grpc": None, "admin": None}
        self.channel = None
        self._channels = []
        self._cond = threading.Condition()
        self._log = open(os.path.join(workdir, "stderr.log"), "w")
        self._stdout = open(os.path.join(workdir, "stdout.log"), "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._stdout,
                                        stderr=subprocess.PIPE, cwd=workdir, env=full_env)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def __iter__(self):
        return iter((self.channel, self.ports, self.process))

    @property
    def log(self):
        with self._cond:
            return "".join(self.lines)

    def _read_stderr(self):
        for raw in iter(self.process.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            self._log.write(line)
            self._log.flush()
            with self._cond:
                self.lines.append(line)
                m = _PORT_RE.search(line)
                if m and "event=admin_listening" in line:
                    self.ports["admin"] = int(m.group(1))
                elif m and "event=listening" in line:
                    self.ports["grpc"] = int(m.group(1))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_listening(self, timeout=START_TIMEOUT, admin=True):
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.ports["grpc"] is None or (admin and self.ports["admin"] is None):
                if self.process.poll() is not None:
                    raise AssertionError("%s exited with %s before listening:\n%s"
                                         % (self.argv[0], self.process.returncode, "".join(self.lines)))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s logged no event=listening%s port within %ss:\n%s"
                                         % (self.argv[0], "/admin_listening" if admin else "",
                                            timeout, "".join(self.lines)))
                self._cond.wait(min(left, 0.1))
        return self.ports

    @property
    def address(self):
        return "127.0.0.1:%d" % self.ports["grpc"]

    def new_channel(self, credentials=None, options=None, wait_ready=True):
        target = self.address
        if credentials is None:
            ch = grpc.insecure_channel(target, options=options)
        else:
            ch = grpc.secure_channel(target, credentials, options=options)
        self._channels.append(ch)
        if wait_ready:
            grpc.channel_ready_future(ch).result(timeout=START_TIMEOUT)
        return ch

    def stop(self, expect_exit=0):
        """SIGTERM, wait, and check the exit code (None: don't check)."""
        for ch in self._channels:
            ch.close()
        self._channels = []
        timed_out = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                timed_out = True
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        self._log.close()
        self._stdout.close()
        rc = self.process.returncode
        if timed_out:
            raise AssertionError("%s did not exit within %ss of SIGTERM:\n%s"
                                 % (self.argv[0], STOP_TIMEOUT, self.log))
        if expect_exit is not None and rc != expect_exit:
            raise AssertionError("%s exited with %s after SIGTERM (want %s):\n%s"
                                 % (self.argv[0], rc, expect_exit, self.log))
        return rc


def start_pf_files(workdir, extra_args=(), data_dir=None, wait_ready=True, credentials=None):
    """Starts pf-files on 127.0.0.1:0 with its own data dir under workdir."""
    binary = binary_path("files", "PF_FILES_BIN")
    os.makedirs(workdir, exist_ok=True)
    data_dir = data_dir or os.path.join(workdir, "data")
    os.makedirs(data_dir, exist_ok=True)
    argv = [binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--data-dir", data_dir] + list(extra_args)
    srv = Server(argv, workdir)
    srv.data_dir = data_dir
    try:
        srv.wait_listening()
        if wait_ready:
            srv.channel = srv.new_channel(credentials)
    except BaseException:
        srv.stop(expect_exit=None)
        raise
    return srv


@pytest.fixture(scope="module")
def pf_files(tmp_path_factory):
    """One plaintext pf-files (no tokens) shared by a test module.

    Yields a Server: `channel, ports, process = pf_files` also works. On
    teardown: SIGTERM, then the exit code must be 0."""
    srv = start_pf_files(str(tmp_path_factory.mktemp("pf-files")))
    yield srv
    srv.stop(expect_exit=0)


@pytest.fixture
def pf_files_factory(tmp_path):
    """Starts pf-files with extra flags: factory(extra_args, ...) -> Server.

    Every server started is stopped at teardown and must exit 0."""
    started = []
    counter = [0]

    def factory(extra_args=(), **kw):
        counter[0] += 1
        srv = start_pf_files(str(tmp_path / ("srv%d" % counter[0])), extra_args, **kw)
        started.append(srv)
        return srv

    yield factory
    errors = []
    for srv in started:
        try:
            srv.stop(expect_exit=0)
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A directory made by tests/certs/mkcerts.sh (CA, server, client, self-signed)."""
    d = str(tmp_path_factory.mktemp("certs"))
    r = _run(["sh", MKCERTS, d])
    assert r.returncode == 0, "mkcerts.sh failed:\n" + r.stdout
    return d


def read_file(path):
    with open(path, "rb") as f:
        return f.read()
