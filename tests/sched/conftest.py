"""pf-scheduler integration tests: real PostgreSQL, Redis, pf-files and
pf-scheduler processes, driven by Python grpcio clients and scripted agents.

Stubs and the process wrapper (`Server`) come from tests/interop/conftest.py,
loaded here under another module name: at import it generates
printfarm.v1.*_pb2 / *_pb2_grpc into a temporary directory on sys.path.

Fixtures
--------
infra  (session)   PostgreSQL + Redis from tests/harness on free ports, in a
                   short temporary directory (chmod 755 for postgres).
                   infra.new_database() -> libpq URL of a fresh database;
                   infra.new_redis_url() -> URL of a flushed Redis db (0..15).
farm   (module)    a Farm: one pf-files and one pf-scheduler on a fresh
                   database, leader elected, no tokens, --lost-grace 3s.
farm_factory       factory(replicas=1, extra_args=(), tokens=None) -> Farm with
                   its own database; every farm is stopped at teardown.

Farm (all helpers use RPC_TIMEOUT and follow the current leader)
----
  farm.schedulers            [Server] replicas (Server.address, .process, .log)
  farm.leader(timeout)       the Server answering ListJobs with OK
  farm.stub                  SchedulerStub on the current leader's channel
  farm.stub_for(server)      SchedulerStub on one replica
  farm.files_stub            FilesStub of pf-files
  farm.metadata              default call metadata (bearer token) or None
  farm.md(name)              metadata for token `name` (tokens=[(role, name, token)])
  farm.upload(data) -> hex digest
  farm.put_bundle({profile: data | (data, GcodeMetadata kwargs)}, name=) -> hex
  farm.bundle(profiles, name=) -> hex: random small gcode per profile
  farm.submit(bundle_hex, count=1, **SubmitJobRequest fields) -> Job
  farm.get_job(id) -> GetJobResponse ; farm.job(id) -> Job
  farm.wait_job(id, pred, timeout) -> Job (pred(job) true, or pred a JobState)
  farm.printer(id) -> Printer or None (ListPrinters)
  farm.wait_printer(id, pred, timeout) -> Printer (pred a PrinterState or callable)
  farm.confirm_clear(printer_id, attempt_id="")
  farm.agent(printer_id, profile, **kw) -> Agent (connected, hello sent)
  farm.watch(after=0, **filters) -> EventWatch
  farm.sql(query, **vars) -> [tuple of str]: psql with :'var' substitution
  farm.start_scheduler(extra_args=()) -> Server ; farm.kill(server, sig)
  farm.stop() : SIGTERM everything; replicas not killed by a test must exit 0

Agent (a scripted printer on one Connect stream)
-----
  Agent(farm, printer_id, profile, materials=[(extruder, material, colour)],
        capabilities={...}, current=None | AgentAttempt kwargs, bed_clear=True,
        last_seq=0, metadata=None, target=None, hello=True)
  .messages, .welcome, .start_prints(), .wait(pred, timeout) -> SchedulerMessage
  .wait_start(timeout, exclude=()) -> StartPrint not yet consumed (consumes it)
  .event(attempt_id, kind, reason="", seq=None) -> seq (auto-incremented)
  .started(aid) / .succeeded(aid) / .failed(aid, reason) / .cancelled(aid)
  .status(state, attempt_id="", progress=0.0)
  .bed_cleared(attempt_id, automatic=False) -> seq
  .wait_ack(seq, timeout)
  .wait_closed(timeout) -> (code, details, trailing metadata dict)
  .close()  cancels the stream;  .reconnect(**hello overrides) -> new Agent
"""

import importlib.util
import itertools
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time

import grpc
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("PF_SOURCE_DIR") or os.path.dirname(os.path.dirname(_HERE))
HARNESS = os.path.join(REPO, "tests", "harness")

_spec = importlib.util.spec_from_file_location(
    "pf_interop_conftest", os.path.join(REPO, "tests", "interop", "conftest.py"))
interop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(interop)

from printfarm.v1 import common_pb2, files_pb2, files_pb2_grpc  # noqa: E402
from printfarm.v1 import scheduler_pb2 as pb  # noqa: E402
from printfarm.v1 import scheduler_pb2_grpc as pb_grpc  # noqa: E402

Server = interop.Server
RPC_TIMEOUT = 15
LEADER_TIMEOUT = 30


def sha256(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def digest(hexstr):
    return common_pb2.Digest(sha256=hexstr)


def wait_until(pred, timeout, what="condition", interval=0.05):
    """Polls pred() until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except grpc.RpcError as e:  # a replica in the middle of a failover
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s%s" % (
                timeout, what, (" (last error: %s)" % last_exc) if last_exc else ""))
        time.sleep(interval)


# --------------------------------------------------------------------------
# PostgreSQL + Redis
# --------------------------------------------------------------------------

def _sh(*argv):
    r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr))
    return r.stdout.strip()


class Infra:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pfs-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.pg_dir = os.path.join(self.dir, "pg")
        self.redis_dir = os.path.join(self.dir, "redis")
        self.pg_url = None
        self.redis_base = None
        self._db = itertools.count(1)
        self._redis_db = itertools.count(0)
        self.pg_url = _sh("bash", os.path.join(HARNESS, "pg.sh"), "start", self.pg_dir,
                          _sh("bash", os.path.join(HARNESS, "free_port.sh")))
        try:
            self.redis_base = _sh("bash", os.path.join(HARNESS, "redis.sh"), "start",
                                  self.redis_dir, _sh("bash", os.path.join(HARNESS, "free_port.sh")))
        except BaseException:
            self.stop()
            raise

    def new_database(self):
        name = "pf_%d_%d" % (os.getpid(), next(self._db))
        _sh("psql", "-X", "-q", self.pg_url.rsplit("/", 1)[0] + "/postgres", "-c",
            "CREATE DATABASE %s" % name)
        return self.pg_url.rsplit("/", 1)[0] + "/" + name

    def new_redis_url(self):
        n = next(self._redis_db)
        if n >= 16:
            raise RuntimeError("out of Redis databases (16 farms per session)")
        url = "%s/%d" % (self.redis_base, n)
        host, port = self.redis_base.split("//", 1)[1].split(":")
        _sh("redis-cli", "-h", host, "-p", port, "-n", str(n), "FLUSHDB")
        return url

    def stop(self):
        subprocess.run(["bash", os.path.join(HARNESS, "pg.sh"), "stop", self.pg_dir])
        subprocess.run(["bash", os.path.join(HARNESS, "redis.sh"), "stop", self.redis_dir])
        subprocess.run(["rm", "-rf", self.dir])


@pytest.fixture(scope="session")
def infra():
    i = Infra()
    yield i
    i.stop()


# --------------------------------------------------------------------------
# Scripted agent
# --------------------------------------------------------------------------

_CLOSE = object()


class Agent:
    """One Connect stream speaking for printer `printer_id`."""

    def __init__(self, farm, printer_id, profile, materials=(), capabilities=None,
                 current=None, bed_clear=True, last_seq=0, metadata=None, target=None,
                 hello=True, cached=(), agent_version="scripted-1", seq_start=None):
        self.farm = farm
        self.printer_id = printer_id
        self.profile = profile
        self.materials = list(materials)
        self.capabilities = dict(capabilities or {"driver": "scripted", "extruders": 1})
        self.current = current
        self.bed_clear = bed_clear
        self.cached = list(cached)
        self.agent_version = agent_version
        self.metadata = metadata if metadata is not None else farm.metadata
        self.seq = last_seq if seq_start is None else seq_start
        self.last_seq = last_seq
        self.messages = []
        self.welcome = None
        self.acked = 0
        self.closed = None  # (code, details, trailers) once the stream ended
        self._consumed = set()
        self._cond = threading.Condition()
        self._out = queue.Queue()
        self.target = target or farm.leader().address
        self.channel = grpc.insecure_channel(self.target)
        stub = pb_grpc.SchedulerStub(self.channel)
        self.call = stub.Connect(self._requests(), metadata=self.metadata)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        farm._agents.append(self)
        if hello:
            self.send_hello()

    # ---- plumbing ----
    def _requests(self):
        while True:
            m = self._out.get()
            if m is _CLOSE:
                return
            yield m

    def _read(self):
        try:
            for m in self.call:
                with self._cond:
                    self.messages.append(m)
                    if m.HasField("welcome"):
                        self.welcome = m.welcome
                    if m.HasField("ack"):
                        self.acked = max(self.acked, m.ack.seq)
                    self._cond.notify_all()
            result = (grpc.StatusCode.OK, "", {})
        except grpc.RpcError as e:
            result = (e.code(), e.details(), dict(e.trailing_metadata() or ()))
        with self._cond:
            self.closed = result
            self._cond.notify_all()

    def send(self, msg):
        self._out.put(msg)

    def half_close(self):
        self._out.put(_CLOSE)

    def close(self):
        """Drops the stream (like a crashed agent or a lost network)."""
        self.call.cancel()
        self._out.put(_CLOSE)
        self._reader.join(5)
        self.channel.close()

    # ---- what the agent says ----
    def hello_msg(self):
        caps = pb.AgentCapabilities(**self.capabilities)
        h = pb.AgentHello(printer_id=self.printer_id, profile=self.profile, capabilities=caps,
                          agent_version=self.agent_version, bed_clear=self.bed_clear,
                          last_seq=self.last_seq)
        for ext, mat, col in self.materials:
            h.materials.add(extruder=ext, material=mat, colour=col)
        for d in self.cached:
            h.cached.add(sha256=d)
        if self.current is not None:
            h.current.CopyFrom(pb.AgentAttempt(**self.current))
        return pb.AgentMessage(hello=h)

    def send_hello(self):
        self.send(self.hello_msg())

    def next_seq(self):
        self.seq += 1
        return self.seq

    def event(self, attempt_id, kind, reason="", seq=None, progress=0.0):
        if seq is None:
            seq = 0 if kind == pb.ATTEMPT_EVENT_KIND_PROGRESS else self.next_seq()
        self.send(pb.AgentMessage(seq=seq, attempt_event=pb.AttemptEvent(
            attempt_id=attempt_id, kind=kind, reason=reason, progress=progress,
            time_unix_ms=int(time.time() * 1000))))
        return seq

    def started(self, aid, **kw):
        return self.event(aid, pb.ATTEMPT_EVENT_KIND_STARTED, **kw)

    def succeeded(self, aid, **kw):
        return self.event(aid, pb.ATTEMPT_EVENT_KIND_SUCCEEDED, **kw)

    def failed(self, aid, reason="scripted failure", **kw):
        return self.event(aid, pb.ATTEMPT_EVENT_KIND_FAILED, reason=reason, **kw)

    def cancelled(self, aid, reason="cancelled", **kw):
        return self.event(aid, pb.ATTEMPT_EVENT_KIND_CANCELLED, reason=reason, **kw)

    def status(self, state, attempt_id="", progress=0.0):
        self.send(pb.AgentMessage(status=pb.PrinterStatus(state=state, attempt_id=attempt_id,
                                                          progress=progress)))

    def bed_cleared(self, attempt_id="", automatic=False, seq=None):
        seq = self.next_seq() if seq is None else seq
        self.send(pb.AgentMessage(seq=seq, bed_cleared=pb.BedCleared(automatic=automatic,
                                                                     attempt_id=attempt_id)))
        return seq

    # ---- what the agent heard ----
    def wait(self, pred, timeout=RPC_TIMEOUT, what="a scheduler message"):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if pred(m):
                        return m
                if self.closed is not None:
                    raise AssertionError("%s: stream ended %s while waiting for %s"
                                         % (self.printer_id, self.closed, what))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: no %s within %ss; got %s"
                                         % (self.printer_id, what, timeout, self.messages))
                self._cond.wait(left)

    def wait_welcome(self, timeout=RPC_TIMEOUT):
        return self.wait(lambda m: m.HasField("welcome"), timeout, "welcome").welcome

    def start_prints(self):
        with self._cond:
            return [m.start_print for m in self.messages if m.HasField("start_print")]

    def wait_start(self, timeout=RPC_TIMEOUT, consume=True):
        """The first StartPrint not consumed yet."""
        def pred(m):
            return m.HasField("start_print") and id(m) not in self._consumed
        m = self.wait(pred, timeout, "StartPrint")
        if consume:
            self._consumed.add(id(m))
        return m.start_print

    def no_start(self, seconds):
        """Asserts that no unconsumed StartPrint arrives within `seconds`."""
        time.sleep(seconds)
        with self._cond:
            extra = [m for m in self.messages
                     if m.HasField("start_print") and id(m) not in self._consumed]
        assert not extra, "%s: unexpected StartPrint %s" % (self.printer_id, extra)

    def wait_ack(self, seq, timeout=RPC_TIMEOUT):
        self.wait(lambda m: m.HasField("ack") and m.ack.seq >= seq, timeout, "ack %d" % seq)

    def acks(self):
        with self._cond:
            return [m.ack.seq for m in self.messages if m.HasField("ack")]

    def wait_closed(self, timeout=RPC_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.closed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: stream still open after %ss" % (self.printer_id, timeout))
                self._cond.wait(left)
            return self.closed

    def reconnect(self, target=None, **overrides):
        """A new stream for the same printer (after close() or the stream ended);
        the Hello carries `current` and the highest seq used."""
        kw = dict(materials=self.materials, capabilities=self.capabilities,
                  current=self.current, bed_clear=self.bed_clear, last_seq=self.seq,
                  metadata=self.metadata, cached=self.cached, target=target)
        kw.update(overrides)
        return Agent(self.farm, self.printer_id, self.profile, **kw)


# --------------------------------------------------------------------------
# Event watcher
# --------------------------------------------------------------------------

class EventWatch:
    def __init__(self, farm, after=0, target=None, metadata=None, **filters):
        self.events = []
        self.closed = None
        self._cond = threading.Condition()
        self.channel = grpc.insecure_channel(target or farm.leader().address)
        req = pb.WatchEventsRequest(after=after, **filters)
        self.call = pb_grpc.SchedulerStub(self.channel).WatchEvents(
            req, metadata=metadata if metadata is not None else farm.metadata)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        farm._watches.append(self)

    def _read(self):
        try:
            for ev in self.call:
                with self._cond:
                    self.events.append(ev)
                    self._cond.notify_all()
            result = (grpc.StatusCode.OK, "", {})
        except grpc.RpcError as e:
            result = (e.code(), e.details(), dict(e.trailing_metadata() or ()))
        with self._cond:
            self.closed = result
            self._cond.notify_all()

    def wait(self, pred, timeout=RPC_TIMEOUT, what="an event"):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                if self.closed is not None:
                    raise AssertionError("watch ended %s waiting for %s" % (self.closed, what))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %s within %ss" % (what, timeout))
                self._cond.wait(left)

    def wait_seq(self, seq, timeout=RPC_TIMEOUT):
        return self.wait(lambda e: e.seq >= seq, timeout, "event seq >= %d" % seq)

    def snapshot(self):
        with self._cond:
            return list(self.events)

    def close(self):
        self.call.cancel()
        self._reader.join(5)
        self.channel.close()


# --------------------------------------------------------------------------
# The farm
# --------------------------------------------------------------------------

class Farm:
    def __init__(self, infra, workdir, replicas=1, extra_args=(), tokens=None, files_args=()):
        self.infra = infra
        self.workdir = workdir
        self.pg_url = infra.new_database()
        self.redis_url = infra.new_redis_url()
        self.extra_args = list(extra_args)
        self.schedulers = []
        self.killed = set()
        self._agents = []
        self._watches = []
        self._leader = None
        self._stubs = {}
        self._n = itertools.count(1)
        self.tokens = list(tokens or [])
        self.tokens_file = None
        self.metadata = None
        if self.tokens:
            self.tokens_file = os.path.join(workdir, "tokens")
            with open(self.tokens_file, "w") as f:
                for role, name, tok in self.tokens:
                    f.write("%s %s %s\n" % (role, name, tok))
            admins = [n for r, n, _ in self.tokens if r == "admin"]
            if admins:
                self.metadata = self.md(admins[0])
        self.files = interop.start_pf_files(os.path.join(workdir, "files"), extra_args=files_args)
        self.files_stub = files_pb2_grpc.FilesStub(self.files.channel)
        try:
            for _ in range(replicas):
                self.start_scheduler()
            self.leader(LEADER_TIMEOUT)
        except BaseException:
            self.stop(check=False)
            raise

    def md(self, name):
        for _, n, tok in self.tokens:
            if n == name:
                return (("authorization", "Bearer " + tok),)
        raise KeyError(name)

    # ---- processes ----
    def start_scheduler(self, extra_args=()):
        binary = interop.binary_path("scheduler", "PF_SCHEDULER_BIN")
        d = os.path.join(self.workdir, "sched%d" % next(self._n))
        os.makedirs(d, exist_ok=True)
        argv = [binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                "--database-url", self.pg_url, "--redis-url", self.redis_url,
                "--files", self.files.address, "--log-level", "debug"]
        if self.tokens_file:
            argv += ["--tokens", self.tokens_file]
        argv += self.extra_args + list(extra_args)
        srv = Server(argv, d)
        try:
            srv.wait_listening(timeout=30)
            srv.channel = srv.new_channel()
        except BaseException:
            srv.stop(expect_exit=None)
            raise
        self.schedulers.append(srv)
        return srv

    def kill(self, srv, sig=signal.SIGKILL):
        self.killed.add(id(srv))
        srv.process.send_signal(sig)
        srv.process.wait(10)
        if self._leader is srv:
            self._leader = None

    def alive(self):
        return [s for s in self.schedulers if s.process.poll() is None]

    def stub_for(self, srv):
        st = self._stubs.get(id(srv))
        if st is None:
            st = self._stubs[id(srv)] = pb_grpc.SchedulerStub(srv.channel)
        return st

    def _answers(self, srv):
        try:
            self.stub_for(srv).ListJobs(pb.ListJobsRequest(page_size=1), timeout=5,
                                        metadata=self.metadata)
            return True
        except grpc.RpcError:
            return False

    def leader(self, timeout=LEADER_TIMEOUT):
        """The replica that answers as leader (cached while it keeps answering)."""
        if self._leader is not None and self._leader.process.poll() is None and \
                self._answers(self._leader):
            return self._leader
        self._leader = None

        def find():
            for s in self.alive():
                if self._answers(s):
                    return s
            return None
        self._leader = wait_until(find, timeout, "a leader among %d replicas" % len(self.alive()),
                                  interval=0.1)
        return self._leader

    def followers(self):
        lead = self.leader()
        return [s for s in self.alive() if s is not lead]

    @property
    def stub(self):
        return self.stub_for(self.leader())

    def stop(self, check=True):
        for a in self._agents:
            try:
                a.close()
            except Exception:
                pass
        for w in self._watches:
            try:
                w.close()
            except Exception:
                pass
        errors = []
        for s in self.schedulers:
            want = None if (id(s) in self.killed or not check) else 0
            try:
                s.stop(expect_exit=want)
            except AssertionError as e:
                errors.append(str(e))
        try:
            self.files.stop(expect_exit=0 if check else None)
        except AssertionError as e:
            errors.append(str(e))
        if errors:
            raise AssertionError("\n".join(errors))

    # ---- files ----
    def upload(self, data):
        r = interop_upload(self.files_stub, data)
        return r.digest.sha256

    def put_bundle(self, files, name="bundle"):
        b = files_pb2.Bundle(name=name)
        for profile, spec in files.items():
            meta = {}
            if isinstance(spec, tuple):
                spec, meta = spec
            hexd = self.upload(spec)
            f = b.files.add(profile=profile, size=len(spec))
            f.digest.sha256 = hexd
            if meta:
                f.metadata.CopyFrom(common_pb2.GcodeMetadata(**meta))
        r = self.files_stub.PutBundle(files_pb2.PutBundleRequest(bundle=b), timeout=RPC_TIMEOUT)
        return r.digest.sha256

    def bundle(self, profiles, name="bundle"):
        return self.put_bundle({p: (b";scripted gcode for %s\nG28\n" % p.encode())
                                + os.urandom(16) for p in profiles}, name=name)

    # ---- scheduler calls ----
    def submit(self, bundle_hex, count=1, **kw):
        req = pb.SubmitJobRequest(bundle=digest(bundle_hex), count=count, **kw)
        return self.stub.SubmitJob(req, timeout=RPC_TIMEOUT, metadata=self.metadata).job

    def get_job(self, job_id):
        return self.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=RPC_TIMEOUT,
                                metadata=self.metadata)

    def job(self, job_id):
        return self.get_job(job_id).job

    def wait_job(self, job_id, pred, timeout=RPC_TIMEOUT):
        if isinstance(pred, int):
            state = pred
            pred = lambda j: j.state == state  # noqa: E731
        return wait_until(lambda: (lambda j: j if pred(j) else None)(self.job(job_id)),
                          timeout, "job %s" % job_id)

    def printers(self):
        out, token = [], ""
        while True:
            r = self.stub.ListPrinters(pb.ListPrintersRequest(page_size=1000, page_token=token),
                                       timeout=RPC_TIMEOUT, metadata=self.metadata)
            out.extend(r.printers)
            token = r.next_page_token
            if not token:
                return out

    def printer(self, printer_id):
        for p in self.printers():
            if p.id == printer_id:
                return p
        return None

    def wait_printer(self, printer_id, pred, timeout=RPC_TIMEOUT):
        if isinstance(pred, int):
            state = pred
            pred = lambda p: p.state == state  # noqa: E731
        return wait_until(lambda: (lambda p: p if p is not None and pred(p) else None)(
            self.printer(printer_id)), timeout, "printer %s" % printer_id)

    def confirm_clear(self, printer_id, attempt_id=""):
        return self.stub.ConfirmBedClear(
            pb.ConfirmBedClearRequest(printer_id=printer_id, attempt_id=attempt_id),
            timeout=RPC_TIMEOUT, metadata=self.metadata)

    def agent(self, printer_id, profile, **kw):
        return Agent(self, printer_id, profile, **kw)

    def watch(self, after=0, **kw):
        return EventWatch(self, after=after, **kw)

    # ---- database ----
    def sql(self, query, **params):
        """Runs one query with psql; values go in as :'name' variables.
        Returns rows as tuples of strings (NULL is '')."""
        argv = ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", self.pg_url]
        for k, v in params.items():
            argv += ["-v", "%s=%s" % (k, v)]
        r = subprocess.run(argv, input=query, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        if r.returncode != 0:
            raise AssertionError("psql failed: %s\n%s" % (query, r.stderr))
        return [tuple(line.split("\t")) for line in r.stdout.splitlines() if line != ""]


def interop_upload(stub, data):
    def reqs():
        yield files_pb2.UploadRequest(header=files_pb2.UploadHeader(size=len(data)))
        for i in range(0, len(data), 256 * 1024):
            yield files_pb2.UploadRequest(chunk=data[i:i + 256 * 1024])
    return stub.Upload(reqs(), timeout=RPC_TIMEOUT)


@pytest.fixture(scope="module")
def farm(infra, tmp_path_factory):
    f = Farm(infra, str(tmp_path_factory.mktemp("farm")), replicas=1,
             extra_args=["--lost-grace", "3s"])
    yield f
    f.stop()


@pytest.fixture
def farm_factory(infra, tmp_path):
    made = []
    n = itertools.count(1)

    def factory(replicas=1, extra_args=(), tokens=None):
        d = str(tmp_path / ("farm%d" % next(n)))
        os.makedirs(d, exist_ok=True)
        f = Farm(infra, d, replicas=replicas, extra_args=extra_args, tokens=tokens)
        made.append(f)
        return f

    yield factory
    errors = []
    for f in made:
        try:
            f.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


_unique = itertools.count(1)


def unique(prefix):
    """A name unused in this session: printer ids, profiles (keeps tests that
    share one farm from matching each other's jobs and printers)."""
    return "%s-%d-%d" % (prefix, os.getpid() % 10000, next(_unique))
