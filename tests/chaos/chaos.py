#!/usr/bin/env python3
"""Chaos suite for Printfarm's exactly-once promise.

Runs a farm of real processes -- 3 pf-scheduler replicas, pf-files,
pf-discovery, PostgreSQL and Redis (tests/harness), pf-agent processes hosting
simulated printers -- submits jobs with constraints and priorities, and while
they print injects faults on a seeded random schedule:

  kill_leader     SIGKILL of the scheduler leader, restarted on its port
  pause_leader    SIGSTOP of the leader for longer than its lease, then SIGCONT
  restart_redis   Redis stopped and started again (it keeps no data)
  restart_pg      PostgreSQL stopped with `pg_ctl stop -m immediate`, started
  cut_agent       an agent process killed and kept away for a while
  restart_agent   an agent process killed (SIGKILL or SIGTERM) and restarted
  restart_files   pf-files killed during downloads and restarted

At the end it compares the printers' own records (the sim logs: one line per
print a printer actually did) with the scheduler's API and database: every job
printed exactly its count, no attempt printed twice, no acknowledged submit
missing, every event number present once, every blob verifies. It prints a
summary and exits 1 on any violation, naming the seed that reproduces it.

    tests/chaos/chaos.py --build-dir build --config short --seed 7
    tests/chaos/chaos.py --build-dir build --config long          # 30 minutes
    tests/chaos/chaos.py --build-dir build --duration 30m --printers 200 --copies 2000

See docs/reliability.md for the figures of recorded runs.
"""

import argparse
import collections
import hashlib
import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)

CONFIGS = {
    # ctest `chaos`: a few minutes in the normal build
    "short": dict(duration="150s", printers=50, agents=4, copies=300, kill_interval="10s",
                  fault_interval="4s", lost_grace="20s", print_seconds=9.5),
    # ctest `chaos` in the sanitizer build: smaller and slower prints
    "asan": dict(duration="120s", printers=24, agents=4, copies=100, kill_interval="12s",
                 fault_interval="6s", lost_grace="30s", print_seconds=11),
    # the soak run of docs/reliability.md
    "long": dict(duration="30m", printers=200, agents=8, copies=2000, kill_interval="10s",
                 fault_interval="5s", lost_grace="20s", print_seconds=120),
}

# (profile, material, colour) of each agent process, round-robin.
GROUPS = [("mk4", "PLA", "black"), ("mini", "PETG", "white"), ("mk4", "PETG", "white"),
          ("mini", "PLA", "red")]

FAULT_KINDS = ["pause_leader", "restart_redis", "restart_pg", "cut_agent", "restart_agent",
               "restart_files"]

LEASE_TTL_S = 1.5  # pf-scheduler's default --lease-ttl
RPC_TIMEOUT = 10
# Servers come back on the same port within seconds: reconnect quickly.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000)]


def seconds(text):
    text = str(text).strip()
    for suffix, mult in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(suffix) and text[:-len(suffix)].replace(".", "", 1).isdigit():
            return float(text[:-len(suffix)]) * mult
    return float(text)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="short",
                   help="preset sizes; the flags below override it")
    p.add_argument("--seed", type=int, default=None, help="fault schedule seed (default: random)")
    p.add_argument("--duration", help="fault window, e.g. 150s or 30m")
    p.add_argument("--printers", type=int, help="simulated printers in total")
    p.add_argument("--agents", type=int, help="pf-agent processes hosting them (at least 4)")
    p.add_argument("--copies", type=int, help="copies to print in total")
    p.add_argument("--kill-interval", help="mean time between leader kills")
    p.add_argument("--fault-interval", help="mean time between other faults")
    p.add_argument("--lost-grace", help="pf-scheduler --lost-grace")
    p.add_argument("--print-seconds", type=float,
                   help="simulated print time (default: fits the copies into the duration)")
    p.add_argument("--gcode-size", type=int, default=256 << 10, help="bytes per gcode file")
    p.add_argument("--build-dir", default=os.environ.get("PF_BUILD_DIR")
                   or os.path.join(REPO, "build"))
    p.add_argument("--workdir", help="where logs and data go (default: a new /tmp/pfc-*)")
    p.add_argument("--keep", action="store_true", help="keep the workdir even on success")
    p.add_argument("--tamper", action="store_true",
                   help="checks the checker: before the checks, copy one printed attempt into "
                   "another printer's log; passes only if exactly that is reported")
    a = p.parse_args(argv)
    for k, v in CONFIGS[a.config].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 1 << 31)
    a.duration_s = seconds(a.duration)
    a.kill_interval_s = seconds(a.kill_interval)
    a.fault_interval_s = seconds(a.fault_interval)
    a.lost_grace_s = seconds(a.lost_grace)
    if a.agents < len(GROUPS) or a.printers < a.agents:
        p.error("need --agents >= %d and --printers >= --agents" % len(GROUPS))
    return a


ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["PF_BUILD_DIR"] = os.path.abspath(ARGS.build_dir)


def _load(name, path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# The harness, stubs and process wrappers of the other suites.
agent_conftest = _load("pf_agent_conftest", os.path.join(TESTS, "agent", "conftest.py"))
sched = agent_conftest.sched
interop = agent_conftest.interop
pb = sched.pb
from printfarm.v1 import files_pb2, files_pb2_grpc, common_pb2  # noqa: E402
from printfarm.v1 import scheduler_pb2_grpc as pb_grpc  # noqa: E402

import grpc  # noqa: E402

HARNESS = os.path.join(TESTS, "harness")


def log(msg):
    sys.stdout.write("%s chaos: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


def free_port():
    return int(sched._sh("bash", os.path.join(HARNESS, "free_port.sh")))


class Managed:
    """A restartable server process on a fixed port (interop.Server per run)."""

    def __init__(self, name, workdir, argv_fn):
        self.name = name
        self.workdir = workdir
        self.argv_fn = argv_fn
        self.srv = None
        self.runs = 0
        self.expected_down = False  # killed or paused by the chaos driver
        self.paused = False

    def start(self, timeout=90):
        self.runs += 1
        d = os.path.join(self.workdir, "%s-run%d" % (self.name, self.runs))
        os.makedirs(d, exist_ok=True)
        self.srv = interop.Server(self.argv_fn(), d)
        self.srv.lines = _Tail()
        self.srv.wait_listening(timeout=timeout)
        self.expected_down = False
        return self

    @property
    def process(self):
        return self.srv.process

    def alive(self):
        return self.srv is not None and self.srv.process.poll() is None

    def kill(self, sig=signal.SIGKILL):
        self.expected_down = True
        if self.paused:
            self.cont()
        if self.alive():
            self.srv.process.send_signal(sig)
            try:
                self.srv.process.wait(30)
            except subprocess.TimeoutExpired:
                self.srv.process.kill()
                self.srv.process.wait()
        self.srv.stop(expect_exit=None)

    def stop(self):
        """SIGTERM; returns the exit code (None if it was already down)."""
        if self.paused:
            self.cont()
        if not self.alive():
            self.srv.stop(expect_exit=None)
            return None
        return self.srv.stop(expect_exit=None)

    def pause(self):
        self.paused = True
        self.srv.process.send_signal(signal.SIGSTOP)

    def cont(self):
        self.paused = False
        self.srv.process.send_signal(signal.SIGCONT)


class _Tail(list):
    """Keeps only the last lines of a server's stderr in memory (the whole of
    it is in the run's stderr.log)."""

    def append(self, line):
        super().append(line)
        if len(self) > 400:
            del self[:200]


class AgentProc:
    """One pf-agent process hosting `n` sim printers; restartable."""

    def __init__(self, idx, workdir, group, n, schedulers, files, discovery, print_s):
        profile, material, colour = group
        self.idx = idx
        self.prefix = "c%d-%s-%s" % (idx, profile, material.lower())
        self.printers = ["%s-%03d" % (self.prefix, i + 1) for i in range(n)] if n > 1 \
            else [self.prefix]
        self.dir = os.path.join(workdir, "agent%d" % idx)
        os.makedirs(self.dir, exist_ok=True)
        self.sim_log = os.path.join(self.dir, "sim.log")
        # --sim-speed scales the gcode's estimated 60 s
        args = ["--driver", "sim", "--printer-id", self.prefix, "--sim-printers", str(n),
                "--profile", profile, "--materials", "0=%s:%s" % (material, colour),
                "--scheduler", schedulers, "--files", files, "--discovery", discovery,
                "--state-dir", os.path.join(self.dir, "state"), "--sim-log", self.sim_log,
                "--sim-speed", "%.4f" % (print_s / 60.0), "--sim-heat-seconds", "0.5",
                "--status-interval", "1s", "--reconnect-max", "2s", "--log-level", "info"]
        self.agent = agent_conftest.Agent(self.dir, args)
        self.expected_down = False

    def start(self):
        self.agent.start()
        self.agent.lines = _Tail()
        self.expected_down = False

    def alive(self):
        return self.agent.process is not None and self.agent.process.poll() is None

    def kill(self, sig=signal.SIGKILL):
        self.expected_down = True
        if self.alive():
            self.agent.process.send_signal(sig)
            try:
                self.agent.process.wait(30)
            except subprocess.TimeoutExpired:
                self.agent.process.kill()
                self.agent.process.wait()
        self.agent._reader.join(5)
        return self.agent.process.returncode


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.violations = []
        self.faults = collections.Counter()
        self.fault_log = []
        self.stats = collections.Counter()
        self.stop_faults = threading.Event()
        self.lock = threading.Lock()
        self.infra = None
        self.schedulers = []
        self.files = None
        self.discovery = None
        self.agents = []
        self.blobs = {}  # hex digest -> size
        self.specs = []
        self.acked = {}  # idempotency key -> job id
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="pfc-", dir="/tmp")
        os.makedirs(self.workdir, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.leader_cache = None
        self.epoch0 = 0
        n_per = args.copies / float(args.printers)
        if args.print_seconds:
            self.print_s = args.print_seconds
        else:
            # fill most of the fault window with printing (faults cost time)
            self.print_s = max(1.5, min(300.0, 0.7 * args.duration_s / max(n_per, 1) - 3))

    def violation(self, what):
        with self.lock:
            self.violations.append(what)
        log("VIOLATION: " + what)

    # ------------------------------------------------------------ farm
    def start_farm(self):
        a = self.args
        self.infra = sched.Infra()
        self.pg_url = self.infra.new_database()
        self.redis_url = self.infra.new_redis_url()
        self.disc_redis_url = self.infra.new_redis_url()
        self.pg_port = int(open(os.path.join(self.infra.pg_dir, "port")).read())
        self.redis_port = int(open(os.path.join(self.infra.redis_dir, "port")).read())
        bins = {s: interop.binary_path(s, "PF_%s_BIN" % s.upper())
                for s in ("scheduler", "files", "discovery", "agent")}
        disc_addr = "127.0.0.1:%d" % free_port()
        files_addr = "127.0.0.1:%d" % free_port()
        self.discovery = Managed("discovery", self.workdir, lambda: [
            bins["discovery"], "--listen", disc_addr, "--admin-listen", "127.0.0.1:0",
            "--redis-url", self.disc_redis_url, "--log-level", "info"]).start()
        files_data = os.path.join(self.workdir, "files-data")
        os.makedirs(files_data, exist_ok=True)
        self.files = Managed("files", self.workdir, lambda: [
            bins["files"], "--listen", files_addr, "--admin-listen", "127.0.0.1:0",
            "--data-dir", files_data, "--discovery", disc_addr, "--log-level", "info"]).start()
        self.files.address = files_addr
        sched_addrs = ["127.0.0.1:%d" % free_port() for _ in range(3)]
        for i, addr in enumerate(sched_addrs):
            m = Managed("sched%d" % (i + 1), self.workdir, lambda addr=addr: [
                bins["scheduler"], "--listen", addr, "--admin-listen", "127.0.0.1:0",
                "--database-url", self.pg_url, "--redis-url", self.redis_url,
                "--files", files_addr, "--discovery", disc_addr, "--log-level", "info",
                "--lost-grace", "%dms" % int(a.lost_grace_s * 1000),
                "--dispatch-interval", "500ms",
                # chaos makes prints fail (agents killed mid-print): keep jobs
                # and printers in service so every copy gets printed
                "--max-attempts-per-printer", "100", "--max-printers", "100",
                "--quarantine-after", "1000"])
            m.address = addr
            m.start()
            m.channel = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
            m.stub = pb_grpc.SchedulerStub(m.channel)
            self.schedulers.append(m)
        self.leader(timeout=60)
        self.epoch0 = int(self.sql("SELECT epoch FROM leader_epoch")[0][0])
        per = [a.printers // a.agents + (1 if i < a.printers % a.agents else 0)
               for i in range(a.agents)]
        for i in range(a.agents):
            ag = AgentProc(i + 1, self.workdir, GROUPS[i % len(GROUPS)], per[i],
                           ",".join(sched_addrs), files_addr, disc_addr, self.print_s)
            ag.start()
            self.agents.append(ag)
        self.files_channel = grpc.insecure_channel(files_addr, options=CHANNEL_OPTIONS)
        self.files_stub = files_pb2_grpc.FilesStub(self.files_channel)
        want = sum(len(ag.printers) for ag in self.agents)
        sched.wait_until(lambda: self.count_printers(pb.PRINTER_STATE_IDLE) >= want, 120,
                         "%d printers idle" % want, interval=0.5)
        log("farm up: 3 schedulers %s, files %s, discovery %s, %d printers in %d agents, "
            "prints of %.1fs, workdir %s" % (" ".join(sched_addrs), files_addr, disc_addr,
                                              want, len(self.agents), self.print_s, self.workdir))

    def sql(self, query):
        """psql against the farm's database, retried through PostgreSQL restarts."""
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                                self.pg_url], input=query, capture_output=True, text=True)
            if r.returncode == 0:
                return [tuple(x.split("\t")) for x in r.stdout.splitlines() if x]
            if time.monotonic() > deadline:
                raise RuntimeError("psql failed: %s\n%s" % (query, r.stderr))
            time.sleep(1)

    def answers(self, m):
        if not m.alive() or m.paused:
            return False
        try:
            m.stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=3)
            return True
        except grpc.RpcError:
            return False

    def leader(self, timeout=60):
        c = self.leader_cache
        if c is not None and self.answers(c):
            return c

        def find():
            for m in self.schedulers:
                if self.answers(m):
                    return m
            return None
        self.leader_cache = sched.wait_until(find, timeout, "a scheduler leader", interval=0.2)
        return self.leader_cache

    def call(self, what, fn, timeout=120):
        """fn(stub) on the leader, retried through failovers until OK or a
        status that retrying cannot change."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn(self.leader(timeout=max(1, deadline - time.monotonic())).stub)
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED,
                                    grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
                                    grpc.StatusCode.RESOURCE_EXHAUSTED):
                    raise
                self.stats["rpc_retries"] += 1
                self.leader_cache = None
            except AssertionError:  # no leader yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError("%s: no answer within %ss" % (what, timeout))
            time.sleep(0.3)

    def list_printers(self, states=()):
        def fn(stub):
            out, token = [], ""
            while True:
                r = stub.ListPrinters(pb.ListPrintersRequest(states=states, page_size=1000,
                                                             page_token=token),
                                      timeout=RPC_TIMEOUT)
                out.extend(r.printers)
                token = r.next_page_token
                if not token:
                    return out
        return self.call("ListPrinters", fn)

    def count_printers(self, state):
        return len(self.list_printers([state]))

    def list_jobs(self):
        def fn(stub):
            out, token = [], ""
            while True:
                r = stub.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token),
                                  timeout=RPC_TIMEOUT)
                out.extend(r.jobs)
                token = r.next_page_token
                if not token:
                    return out
        return self.call("ListJobs", fn)

    # ------------------------------------------------------------ work
    def upload(self, data):
        hexd = hashlib.sha256(data).hexdigest()

        def parts():
            hdr = files_pb2.UploadRequest()
            hdr.header.size = len(data)
            hdr.header.expected.sha256 = hexd
            yield hdr
            for i in range(0, len(data), 1 << 20):
                yield files_pb2.UploadRequest(chunk=data[i:i + (1 << 20)])
        r = self.files_stub.Upload(parts(), timeout=60)
        if r.digest.sha256 != hexd:
            self.violation("upload returned digest %s for %s" % (r.digest.sha256, hexd))
        self.blobs[hexd] = len(data)
        return hexd

    def make_bundle(self, n, profiles):
        b = files_pb2.Bundle(name="chaos-%d" % n)
        for prof in profiles:
            data = agent_conftest.gcode(60, filler_bytes=self.args.gcode_size,
                                        tag="chaos-%d-%s-%d" % (n, prof, self.args.seed))
            f = b.files.add(profile=prof, size=len(data))
            f.digest.sha256 = self.upload(data)
        r = self.files_stub.PutBundle(files_pb2.PutBundleRequest(bundle=b), timeout=RPC_TIMEOUT)
        self.blobs[r.digest.sha256] = None  # a manifest: size from Stat
        return r.digest.sha256

    def plan_jobs(self):
        """Job specs from the seed: counts summing to --copies, priorities and
        constraints every one of which some printer group satisfies."""
        rng = random.Random(self.args.seed * 7919 + 1)
        kinds = [
            ("any", ["mk4", "mini"], {}),
            ("mk4", ["mk4", "mini"], dict(profiles=["mk4"])),
            ("mini", ["mini"], {}),
            ("pla", ["mk4", "mini"], dict(materials=[pb.MaterialRequirement(material="PLA")])),
            ("petg-white", ["mk4", "mini"], dict(materials=[
                pb.MaterialRequirement(material="PETG", colour="white")])),
            ("pla-red", ["mini"], dict(materials=[
                pb.MaterialRequirement(extruder=0, material="PLA", colour="red")])),
        ]
        left = self.args.copies
        n = 0
        while left > 0:
            n += 1
            count = min(left, rng.randint(1, max(2, self.args.copies // 12)))
            left -= count
            kind = rng.choice(kinds)
            self.specs.append(dict(key="chaos-%d-%d" % (self.args.seed, n),
                                   name="chaos-%d-%s" % (n, kind[0]), count=count,
                                   priority=rng.choice([-5, 0, 0, 0, 1, 10]),
                                   profiles=kind[1], constraints=kind[2], bundle=None))
        bundles = {}
        for s in self.specs:
            key = tuple(s["profiles"])
            if key not in bundles or rng.random() < 0.5:  # some jobs share a bundle
                bundles[key] = self.make_bundle(len(self.blobs), s["profiles"])
            s["bundle"] = bundles[key]
        log("%d jobs, %d copies, %d blobs" % (len(self.specs), self.args.copies, len(self.blobs)))

    def submit_all(self, window_s):
        """Submits every spec spread over window_s, each retried with the same
        idempotency key until the leader says OK."""
        gap = window_s / max(1, len(self.specs))
        for s in self.specs:
            req = pb.SubmitJobRequest(name=s["name"], count=s["count"], priority=s["priority"],
                                      idempotency_key=s["key"],
                                      constraints=pb.JobConstraints(**s["constraints"]))
            req.bundle.sha256 = s["bundle"]
            tries = [0]

            def fn(stub, req=req):
                tries[0] += 1
                return stub.SubmitJob(req, timeout=RPC_TIMEOUT)
            try:
                r = self.call("SubmitJob", fn, timeout=180)
            except (grpc.RpcError, AssertionError) as e:
                self.violation("submit %s never acknowledged: %s" % (s["key"], e))
                continue
            if tries[0] > 1:
                self.stats["submits_retried"] += 1
            if r.duplicate:
                self.stats["submits_duplicate"] += 1
            with self.lock:
                if s["key"] in self.acked and self.acked[s["key"]] != r.job.id:
                    self.violation("key %s acknowledged as %s and %s"
                                   % (s["key"], self.acked[s["key"]], r.job.id))
                self.acked[s["key"]] = r.job.id
            time.sleep(gap)

    def clear_beds(self):
        """The operator: confirms every bed awaiting a clear."""
        while not self.done_clearing.is_set():
            try:
                for p in self.list_printers([pb.PRINTER_STATE_AWAITING_CLEAR]):
                    try:
                        self.leader(timeout=5).stub.ConfirmBedClear(
                            pb.ConfirmBedClearRequest(printer_id=p.id), timeout=RPC_TIMEOUT)
                        self.stats["beds_cleared"] += 1
                    except grpc.RpcError:
                        pass
            except (grpc.RpcError, AssertionError):
                pass
            self.done_clearing.wait(0.5)

    # ------------------------------------------------------------ faults
    def plan_faults(self):
        rng = self.rng
        plan = []
        t = rng.uniform(0.5, 1.5) * self.args.kill_interval_s
        while t < self.args.duration_s:
            plan.append((t, "kill_leader", rng.uniform(0.2, 2.0)))
            t += rng.uniform(0.6, 1.4) * self.args.kill_interval_s
        t = rng.uniform(0.5, 1.5) * self.args.fault_interval_s
        while t < self.args.duration_s:
            kind = rng.choice(FAULT_KINDS)
            param = {
                "pause_leader": rng.uniform(LEASE_TTL_S * 2, LEASE_TTL_S * 4),
                "restart_redis": rng.uniform(0.2, 2.0),
                "restart_pg": rng.uniform(0.2, 3.0),
                "cut_agent": rng.uniform(3.0, self.args.lost_grace_s / 2),
                "restart_agent": rng.choice(["KILL", "TERM"]),
                "restart_files": rng.uniform(0.5, 3.0),
            }[kind]
            plan.append((t, kind, param))
            t += rng.uniform(0.5, 1.5) * self.args.fault_interval_s
        plan.sort(key=lambda x: x[0])
        # which agent each agent fault hits, also from the seed
        return [(t, k, p, rng.randrange(len(self.agents))) for t, k, p in plan]

    def inject(self, t0):
        for at, kind, param, which in self.plan_faults():
            while time.monotonic() - t0 < at:
                if self.stop_faults.wait(0.2):
                    return
            if self.stop_faults.is_set():
                return
            try:
                getattr(self, "fault_" + kind)(param, which)
                self.faults[kind] += 1
                self.fault_log.append((round(time.monotonic() - t0, 1), kind))
            except Exception as e:  # a fault that could not be recovered from
                self.violation("fault %s at %.0fs: %s\n%s" % (
                    kind, at, e, traceback.format_exc()))
                if not self.revive():
                    return

    def revive(self):
        """Brings every process the chaos driver took down back up."""
        try:
            for m in [self.discovery, self.files] + self.schedulers:
                if m.paused:
                    m.cont()
                if not m.alive():
                    m.start()
            for ag in self.agents:
                if not ag.alive():
                    ag.start()
            return True
        except Exception as e:
            self.violation("could not restart the farm: %s" % e)
            return False

    def fault_kill_leader(self, down_s, _):
        m = self.leader()
        m.kill(signal.SIGKILL)
        self.leader_cache = None
        time.sleep(down_s)
        m.start()

    def fault_pause_leader(self, pause_s, _):
        m = self.leader()
        m.pause()
        self.leader_cache = None
        time.sleep(pause_s)
        m.cont()
        # its lease ran out while it slept: it must step down, not lead
        # alongside the replica that took over
        try:
            sched.wait_until(lambda: sum(1 for r in self.schedulers if self.answers(r)) <= 1,
                             15, "one leader after the paused one woke", interval=0.2)
        except AssertionError as e:
            self.violation("two replicas answer as leader: %s" % e)

    def fault_restart_redis(self, down_s, _):
        sched._sh("bash", os.path.join(HARNESS, "redis.sh"), "stop", self.infra.redis_dir)
        time.sleep(down_s)
        sched._sh("bash", os.path.join(HARNESS, "redis.sh"), "start", self.infra.redis_dir,
                  str(self.redis_port))

    def fault_restart_pg(self, down_s, _):
        data = os.path.join(self.infra.pg_dir, "data")
        bindir = sorted(d for d in os.listdir("/usr/lib/postgresql"))[-1]
        pg_ctl = "/usr/lib/postgresql/%s/bin/pg_ctl" % bindir
        cmd = [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=self.infra.pg_dir)
        if r.returncode != 0:
            raise RuntimeError("pg_ctl stop -m immediate: %s" % r.stderr)
        time.sleep(down_s)
        sched._sh("bash", os.path.join(HARNESS, "pg.sh"), "start", self.infra.pg_dir,
                  str(self.pg_port))

    def fault_cut_agent(self, away_s, which):
        ag = self.agents[which]
        ag.kill(signal.SIGKILL)
        time.sleep(away_s)
        ag.start()

    def fault_restart_agent(self, sig, which):
        ag = self.agents[which]
        rc = ag.kill(signal.SIGKILL if sig == "KILL" else signal.SIGTERM)
        if sig == "TERM" and rc != 0:
            self.violation("agent %d exited %s on SIGTERM" % (ag.idx, rc))
        ag.start()

    def fault_restart_files(self, down_s, _):
        self.files.kill(signal.SIGKILL)
        time.sleep(down_s)
        self.files.start()

    def watch_crashes(self):
        """Any process that exits without the chaos driver's doing is a crash."""
        while not self.done_clearing.is_set():
            for m in [self.discovery, self.files] + self.schedulers:
                if m.srv is not None and not m.expected_down and not m.alive():
                    rc = m.process.returncode
                    m.expected_down = True
                    self.violation("%s exited on its own with %s; last lines:\n%s"
                                   % (m.name, rc, "".join(m.srv.lines[-30:])))
            for ag in self.agents:
                if not ag.expected_down and not ag.alive():
                    ag.expected_down = True
                    self.violation("agent %d exited on its own with %s; last lines:\n%s"
                                   % (ag.idx, ag.agent.process.returncode,
                                      "".join(ag.agent.lines[-30:])))
            self.done_clearing.wait(1)

    # ------------------------------------------------------------ run
    def run(self):
        a = self.args
        t_start = time.monotonic()
        self.start_farm()
        self.plan_jobs()
        self.done_clearing = threading.Event()
        threads = [threading.Thread(target=self.clear_beds, daemon=True),
                   threading.Thread(target=self.watch_crashes, daemon=True)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        injector = threading.Thread(target=self.inject, args=(t0,), daemon=True)
        injector.start()
        self.submit_all(window_s=a.duration_s * 0.3)
        log("all %d jobs acknowledged" % len(self.acked))
        # faults run for the duration or until every copy is printed
        deadline = t0 + a.duration_s
        while time.monotonic() < deadline and not self.all_done():
            time.sleep(2)
        self.stop_faults.set()
        injector.join(120)
        if injector.is_alive():
            self.violation("a fault did not finish within 120 s")
        self.revive()
        self.fault_window = time.monotonic() - t0
        log("faults stopped after %.0fs: %s" % (self.fault_window, dict(self.faults)))
        # then the farm must finish the work on its own
        settle = max(180.0, 6 * self.print_s + a.lost_grace_s * 2)
        try:
            sched.wait_until(lambda: self.all_done(), settle + max(0, deadline - time.monotonic())
                             + a.copies * self.print_s / a.printers * 2, "every job done",
                             interval=2)
        except AssertionError as e:
            self.violation(str(e) + ": " + self.progress())
        # no printer may still be printing (that would be a copy too many)
        try:
            sched.wait_until(lambda: self.count_printers(pb.PRINTER_STATE_PRINTING) == 0,
                             4 * self.print_s + 30, "no printer printing", interval=1)
        except AssertionError as e:
            self.violation(str(e))
        self.done_clearing.set()
        for t in threads:
            t.join(30)
        self.epoch = int(self.sql("SELECT epoch FROM leader_epoch")[0][0])
        if self.args.tamper:
            self.tamper()
        self.check()
        self.wall = time.monotonic() - t_start

    def progress(self):
        jobs = self.list_jobs()
        return "%d/%d jobs done, %d/%d copies succeeded" % (
            sum(1 for j in jobs if j.state == pb.JOB_STATE_DONE), len(jobs),
            sum(j.succeeded for j in jobs), sum(j.count for j in jobs))

    def all_done(self):
        if len(self.acked) < len(self.specs):
            return False
        try:
            jobs = self.list_jobs()
        except (grpc.RpcError, AssertionError):
            return False
        return len(jobs) >= len(self.specs) and all(j.state == pb.JOB_STATE_DONE for j in jobs)

    def tamper(self):
        """A forged record: one printer's first print appears in another
        printer's log too, as if printed a second time."""
        src = next(ag for ag in self.agents if agent_conftest.sim_log_lines(ag.sim_log))
        first = agent_conftest.sim_log_lines(src.sim_log)[0]
        dst = self.agents[(self.agents.index(src) + 1) % len(self.agents)]
        self.tampered = first
        with open(dst.sim_log, "a") as f:
            f.write(" ".join(first) + "\n")
        log("tampered: %s appended to %s" % (" ".join(first), dst.sim_log))

    def tamper_caught(self):
        """--tamper passes when the forged attempt and only it is reported."""
        att, job = self.tampered[0], self.tampered[1]
        want = ["attempt %s printed twice" % att, "job %s printed " % job]
        caught = [w for w in want if any(v.startswith(w) for v in self.violations)]
        other = [v for v in self.violations if not any(v.startswith(w) for w in want)]
        return len(caught) == len(want) and not other

    # ------------------------------------------------------------ checks
    def check(self):
        self.check_jobs_and_prints()
        self.check_events()
        self.check_blobs()
        self.check_shutdown()

    def check_jobs_and_prints(self):
        jobs = {j.id: j for j in self.list_jobs()}
        by_key = {}
        for j in jobs.values():
            by_key.setdefault(j.idempotency_key, []).append(j.id)
        for s in self.specs:
            jid = self.acked.get(s["key"])
            if jid is None:
                continue  # reported at submit time
            if jid not in jobs:
                self.violation("acknowledged submit %s (job %s) missing" % (s["key"], jid))
                continue
            if by_key.get(s["key"]) != [jid]:
                self.violation("key %s has jobs %s" % (s["key"], by_key.get(s["key"])))
            j = jobs[jid]
            if j.count != s["count"] or j.priority != s["priority"]:
                self.violation("job %s: count/priority %d/%d, submitted %d/%d"
                               % (jid, j.count, j.priority, s["count"], s["priority"]))
        extra = set(jobs) - set(self.acked.values())
        if extra:
            self.violation("jobs nobody acknowledged: %s" % sorted(extra))
        # the printers' own records
        printed = {}  # attempt -> (job, printer, result)
        per_job = collections.Counter()
        for ag in self.agents:
            for line in agent_conftest.sim_log_lines(ag.sim_log):
                if len(line) != 4:
                    self.violation("%s: malformed sim log line %r" % (ag.sim_log, line))
                    continue
                att, job, printer, result = line
                if att in printed:
                    self.violation("attempt %s printed twice: %s and %s"
                                   % (att, printed[att], line[1:]))
                printed[att] = (job, printer, result)
                self.stats["sim_" + result] += 1
                if result == "succeeded":
                    per_job[job] += 1
        attempts = collections.Counter()
        for jid, j in jobs.items():
            if j.state != pb.JOB_STATE_DONE or j.succeeded != j.count:
                self.violation("job %s: state %s, %d/%d succeeded" % (
                    jid, pb.JobState.Name(j.state), j.succeeded, j.count))
            if per_job[jid] != j.count:
                self.violation("job %s printed %d times, count %d" % (jid, per_job[jid], j.count))
        # every attempt, from the database (GetJob returns the newest 100 only)
        for aid, jid, printer, state in self.sql(
                "SELECT id, job_id, printer_id, state FROM attempts"):
            attempts[state] += 1
            seen = printed.get(aid)
            if state == "succeeded":
                if seen is None or seen[2] != "succeeded" or seen[:2] != (jid, printer):
                    self.violation("attempt %s succeeded in the scheduler, printers say %s"
                                   % (aid, seen))
            elif seen is not None and seen[2] == "succeeded":
                self.violation("attempt %s printed by %s but the scheduler says %s"
                               % (aid, seen[1], state))
        if sum(attempts.values()) == 0:
            self.violation("the database holds no attempts")
        known = set(r[0] for r in self.sql("SELECT id FROM attempts"))
        ghosts = sorted(set(printed) - known)
        if ghosts:
            self.violation("printers printed attempts the database never had: %s" % ghosts[:5])
        unknown = [a for a, v in printed.items() if v[0] not in jobs]
        if unknown:
            self.violation("printers printed attempts of unknown jobs: %s" % unknown[:5])
        self.attempts = attempts
        self.jobs = jobs

    def check_events(self):
        last = int(self.sql("SELECT last FROM event_seq")[0][0])
        seqs = []
        ev_times = []
        ch = grpc.insecure_channel(self.leader().address)
        try:
            call = pb_grpc.SchedulerStub(ch).WatchEvents(pb.WatchEventsRequest(after=0),
                                                         timeout=300)
            for ev in call:
                seqs.append(ev.seq)
                if ev.kind == pb.EVENT_KIND_ATTEMPT_DISPATCHED:
                    ev_times.append(ev.time_unix_ms)
                if ev.kind == pb.EVENT_KIND_LEADER_ELECTED:
                    self.stats["leader_elected_events"] += 1
                if ev.seq >= last:
                    break
            call.cancel()
        except grpc.RpcError as e:
            self.violation("WatchEvents from 0 ended: %s after %d events" % (e, len(seqs)))
        finally:
            ch.close()
        dup = [s for s, n in collections.Counter(seqs).items() if n > 1]
        if dup:
            self.violation("events delivered more than once: %s" % dup[:10])
        missing = sorted(set(range(1, last + 1)) - set(seqs))
        if missing:
            self.violation("%d event numbers missing, e.g. %s" % (len(missing), missing[:10]))
        if seqs != sorted(seqs):
            self.violation("events out of order")
        self.events = len(seqs)
        ev_times.sort()
        gaps = [(b - a, a) for a, b in zip(ev_times, ev_times[1:])]
        self.dispatch_gap = max(gaps)[0] / 1000.0 if gaps else 0.0

    def check_blobs(self):
        for hexd, size in self.blobs.items():
            try:
                st = self.files_stub.Stat(files_pb2.StatRequest(
                    digest=common_pb2.Digest(sha256=hexd)), timeout=RPC_TIMEOUT)
                h = hashlib.sha256()
                n = 0
                for r in self.files_stub.Download(files_pb2.DownloadRequest(
                        digest=common_pb2.Digest(sha256=hexd)), timeout=120):
                    h.update(r.chunk)
                    n += len(r.chunk)
            except grpc.RpcError as e:
                self.violation("blob %s: %s" % (hexd, e))
                continue
            if h.hexdigest() != hexd or n != st.size or (size is not None and n != size):
                self.violation("blob %s: downloaded %d bytes hashing %s (Stat says %d)"
                               % (hexd, n, h.hexdigest(), st.size))

    def check_shutdown(self):
        """SIGTERM everything: each process must exit 0, and no sanitizer may
        have reported anything."""
        for ag in self.agents:
            if ag.alive():
                rc = ag.kill(signal.SIGTERM)
                if rc != 0:
                    self.violation("agent %d exited %s on SIGTERM" % (ag.idx, rc))
        for m in self.schedulers + [self.files, self.discovery]:
            if m.alive():
                m.expected_down = True
                rc = m.stop()
                if rc != 0:
                    self.violation("%s exited %s on SIGTERM" % (m.name, rc))
        for root, _, files in os.walk(self.workdir):
            for f in files:
                if not f.endswith(".log") or f == "sim.log":
                    continue
                path = os.path.join(root, f)
                with open(path, errors="replace") as fh:
                    for line in fh:
                        if "AddressSanitizer" in line or "runtime error:" in line or \
                                "LeakSanitizer" in line:
                            self.violation("sanitizer report in %s: %s" % (path, line.strip()))
                            break

    # ------------------------------------------------------------ end
    def summary(self):
        a = self.args
        epoch = getattr(self, "epoch", self.epoch0)
        lines = [
            "seed %d, config %s: %d printers in %d agents, %d jobs / %d copies, prints %.1fs"
            % (a.seed, a.config, a.printers, a.agents, len(self.specs), a.copies, self.print_s),
            "faults: %s (total %d)" % (
                ", ".join("%s=%d" % kv for kv in sorted(self.faults.items())),
                sum(self.faults.values())),
            "failovers: %d (epoch %d -> %d, %d leader_elected events)"
            % (epoch - self.epoch0, self.epoch0, epoch, self.stats["leader_elected_events"]),
            "attempts: %s" % ", ".join("%s=%d" % kv for kv in sorted(
                getattr(self, "attempts", {}).items())),
            "printers printed: %s" % ", ".join("%s=%d" % (k[4:], v) for k, v in sorted(
                self.stats.items()) if k.startswith("sim_")),
            "submits retried %d, duplicates answered %d, beds cleared %d, rpc retries %d"
            % (self.stats["submits_retried"], self.stats["submits_duplicate"],
               self.stats["beds_cleared"], self.stats["rpc_retries"]),
            "events %d, longest dispatch gap %.1fs, fault window %.0fs, wall time %.0fs"
            % (getattr(self, "events", 0), getattr(self, "dispatch_gap", 0.0),
               getattr(self, "fault_window", 0.0), getattr(self, "wall", 0.0)),
            "violations: %d" % len(self.violations),
        ]
        return "\n".join("  " + x for x in lines)

    def cleanup(self):
        for ag in self.agents:
            try:
                ag.kill(signal.SIGKILL)
            except Exception:
                pass
        for m in self.schedulers + [self.files, self.discovery]:
            try:
                if m is not None and m.srv is not None:
                    if m.paused:
                        m.cont()
                    m.kill(signal.SIGKILL)
            except Exception:
                pass
        if self.infra is not None:
            self.infra.stop()


def _on_term(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    args = ARGS
    signal.signal(signal.SIGTERM, _on_term)
    log("seed %d (reproduce: %s --config %s --seed %d)" % (
        args.seed, os.path.relpath(__file__, REPO), args.config, args.seed))
    c = Chaos(args)
    ok = False
    try:
        c.run()
        ok = c.tamper_caught() if args.tamper else not c.violations
    except BaseException as e:
        c.violation("chaos run aborted: %r\n%s" % (e, traceback.format_exc()))
    finally:
        c.stop_faults.set()
        if hasattr(c, "done_clearing"):
            c.done_clearing.set()
        c.cleanup()
    print("chaos summary:\n" + c.summary())
    if ok:
        if args.tamper:
            log("the checker reported the tampered record (and nothing else)")
        log("PASS (seed %d)" % args.seed)
        if not args.keep and not args.workdir:
            shutil.rmtree(c.workdir, ignore_errors=True)
        return 0
    for v in c.violations:
        print("violation: " + v.split("\n")[0])
    log("FAIL: %d violations; logs in %s; reproduce with --config %s --seed %d"
        % (len(c.violations), c.workdir, args.config, args.seed))
    return 1


if __name__ == "__main__":
    sys.exit(main())
