#!/usr/bin/python3
"""sched_bench: pf-scheduler benchmarks of issue 3 (attempt cycles per second
against pgbench, and failover time). A benchmark, not a test: it prints
numbers, each with its target and "met" / "NOT met", and fails only when
something breaks.

  cycles    Attempt cycles per second: submit -> dispatch -> done with
            zero-length prints. P scripted agents (auto-clear printers) answer
            every StartPrint with STARTED + SUCCEEDED at once and every
            RunClearing with BedCleared at once, against one pf-scheduler on a
            PostgreSQL with fsync on. Compared with a plain pgbench SKIP LOCKED
            dequeue script with P clients on the SAME PostgreSQL server in the
            same run (pgbench runs before and after the scheduler windows).
  failover  Two replicas, scripted agents cycling prints, jobs queued; SIGKILL
            the leader; time from the kill until an agent receives the first
            StartPrint from the new leader. Several repetitions.
  failover-agent
            The same with one real pf-agent (--sim-printers), so the agent's
            own reconnect policy is part of the time; StartPrints are read
            from its log.

Everything runs on 127.0.0.1 in a temp dir under /tmp: PostgreSQL and Redis
from tests/harness, pf-files, pf-scheduler. Every child process is stopped and
the temp dir removed at exit (also on SIGINT/SIGTERM/SIGHUP and when the
overall --time-limit expires); servers started by this program get
PR_SET_PDEATHSIG so they go away if the program is killed outright.

agent_bench.py imports this file for the shared plumbing (Bench, Proc, farm
helpers); keep the names below stable.

Usage: bench/run_sched_bench.sh [--only cycles|failover|failover-agent] [--printers 8] ...
       (/usr/bin/python3 bench/sched_bench.py --help)
"""

import argparse
import collections
import ctypes
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(REPO, "tests", "harness")
PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

pb = None  # printfarm.v1.scheduler_pb2, after stubs()
pb_grpc = None
files_pb2 = None
files_pb2_grpc = None
common_pb2 = None
grpc = None


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# machine, /proc
# --------------------------------------------------------------------------

def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine_lines():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    u = platform.uname()
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no",
                                "--", "services", "lib", "proto"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        head, dirty = "?", ""
    return ["source:   commit %s%s" % (head, " + uncommitted changes to tracked files in "
                                        "services/, lib/ or proto/" if dirty else ""),
            "machine:  %d x %s, %.1f GiB RAM" % (os.cpu_count(), model, mem_kib / 1048576.0),
            "kernel:   %s %s %s" % (u.system, u.release, u.machine),
            "load:     %s (1, 5, 15 min) before the run" % loadavg()]


def proc_cpu(pid):
    """utime + stime of a process in seconds (threads included), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_status_field(pid, name):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def smaps_breakdown(pid, top=10):
    """[(mapping, Rss KiB, Anonymous KiB)] of a process, largest first,
    grouped by file name ([heap], [stack], [anon] for nameless mappings)."""
    by = {}
    name = None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                parts = line.split()
                if not parts:
                    continue
                if "-" in parts[0] and not parts[0].endswith(":"):
                    name = os.path.basename(parts[5]) if len(parts) > 5 else "[anon]"
                    by.setdefault(name, [0, 0])
                elif parts[0] == "Rss:":
                    by[name][0] += int(parts[1])
                elif parts[0] == "Anonymous:":
                    by[name][1] += int(parts[1])
    except OSError:
        return []
    rows = sorted(((k, v[0], v[1]) for k, v in by.items()), key=lambda r: -r[1])
    return rows[:top]


def thread_cpu(pid):
    """{tid: (comm, cpu seconds)} of every thread of pid."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        out[int(t)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def thread_cpu_delta(before, after, top=6):
    """[(tid, comm, seconds)] of the busiest threads over the window."""
    rows = []
    for tid, (comm, c) in after.items():
        rows.append((tid, comm, c - before.get(tid, (comm, 0.0))[1]))
    rows.sort(key=lambda r: -r[2])
    return rows[:top], len(after)


def machine_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def children_of(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        if int(s[s.rindex(")") + 2:].split()[1]) == ppid:
            out.append(int(d))
    return out


def tree_cpu(pid):
    """CPU seconds of pid and its live children (a PostgreSQL cluster)."""
    total = proc_cpu(pid) or 0.0
    for c in children_of(pid):
        total += proc_cpu(c) or 0.0
    return total


def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------
# the bench context: temp dir, processes, cleanup
# --------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _pdeathsig():
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    os.setpgrp()  # our terminal's ^C reaches only us; we stop the children


_PORT_RE = re.compile(r"\bport=(\d+)\b")
_TS_RE = re.compile(r"^ts=(\S+)")


def parse_ts(line):
    """Wall-clock seconds of a log line's ts=2026-11-27T22:31:45.197Z."""
    import calendar
    m = _TS_RE.match(line)
    if not m:
        return None
    ts = m.group(1).rstrip("Z")
    main, _, frac = ts.partition(".")
    t = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


class Proc:
    """A child process with stdout and stderr in files of the bench dir."""

    def __init__(self, bench, name, argv, env=None, stdout_pipe=False):
        self.bench = bench
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(bench.dir, name + ".stderr.log")
        self.out_path = os.path.join(bench.dir, name + ".stdout.log")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self._err = open(self.log_path, "wb")
        self._out = None if stdout_pipe else open(self.out_path, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE if stdout_pipe else self._out,
                                  stderr=self._err, env=full_env, cwd=bench.dir,
                                  preexec_fn=_pdeathsig)
        self.pid = self.p.pid
        self.grpc_port = None
        self.admin_port = None
        bench.procs.append(self)

    def alive(self):
        return self.p.poll() is None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self, event):
        return [l for l in self.log().splitlines() if ("event=%s " % event) in l + " "]

    def wait_log(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            r = pred(text)
            if r:
                return r
            if not self.alive():
                raise BenchError("%s exited (%s) while waiting for %s:\n%s"
                                 % (self.name, self.p.returncode, what, text[-3000:]))
            if time.monotonic() > deadline:
                raise BenchError("%s: no %s within %ss:\n%s" % (self.name, what, timeout,
                                                                text[-3000:]))
            time.sleep(0.05)

    def wait_listening(self, timeout=30, admin=True):
        def pred(text):
            for line in text.splitlines():
                m = _PORT_RE.search(line)
                if not m:
                    continue
                if "event=admin_listening" in line:
                    self.admin_port = int(m.group(1))
                elif "event=listening" in line:
                    self.grpc_port = int(m.group(1))
            return self.grpc_port is not None and (not admin or self.admin_port is not None)
        self.wait_log(pred, timeout, "listening port")

    @property
    def address(self):
        return "127.0.0.1:%d" % self.grpc_port

    def metrics(self, timeout=5):
        url = "http://127.0.0.1:%d/metrics" % self.admin_port
        return urllib.request.urlopen(url, timeout=timeout).read().decode()

    def cpu(self):
        return proc_cpu(self.pid)

    def rss_kib(self):
        return proc_rss_kib(self.pid)

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            os.kill(self.pid, sig)
        self.p.wait(10)

    def stop(self, timeout=20):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        for f in (self._err, self._out):
            if f is not None:
                f.close()
        if self.p.stdout is not None:
            self.p.stdout.close()
        return self.p.returncode


def sh(*argv, **kw):
    r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       **kw)
    if r.returncode != 0:
        raise BenchError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr.strip()))
    return r.stdout.strip()


class Bench:
    """Temp dir, PostgreSQL, Redis and every process started; stop() undoes it all."""

    def __init__(self, build_dir, keep=False, prefix="pfb-"):
        self.build_dir = build_dir
        self.keep = keep
        self.procs = []
        self.pg_dir = None
        self.redis_dir = None
        self.pg_url = None
        self.redis_base = None
        self._redis_db = 0
        self._stopped = False
        self.dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        os.chmod(self.dir, 0o755)

    def binary(self, service):
        path = os.path.join(self.build_dir, "services", service, "pf-" + service)
        if not os.access(path, os.X_OK):
            raise BenchError("%s not built (run the run_*_bench.sh wrapper)" % path)
        return path

    # ---- PostgreSQL + Redis ----
    def start_infra(self):
        self.pg_dir = os.path.join(self.dir, "pg")
        self.pg_url = sh("bash", os.path.join(HARNESS, "pg.sh"), "start", self.pg_dir,
                         sh("bash", os.path.join(HARNESS, "free_port.sh")))
        self.redis_dir = os.path.join(self.dir, "redis")
        self.redis_base = sh("bash", os.path.join(HARNESS, "redis.sh"), "start", self.redis_dir,
                             sh("bash", os.path.join(HARNESS, "free_port.sh")))

    def enable_pg_stat_statements(self):
        """Restarts the cluster with pg_stat_statements loaded (profiling runs)."""
        self.psql("postgres", "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        port = str(self.pg_port())
        sh("bash", os.path.join(HARNESS, "pg.sh"), "stop", self.pg_dir)
        self.pg_url = sh("bash", os.path.join(HARNESS, "pg.sh"), "start", self.pg_dir, port)

    def pg_port(self):
        return int(self.pg_url.rsplit(":", 1)[1].split("/")[0])

    def pg_user(self):
        return self.pg_url.split("//", 1)[1].split("@", 1)[0]

    def psql(self, db, sql):
        url = self.pg_url.rsplit("/", 1)[0] + "/" + db
        return sh("psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql)

    def new_database(self, name):
        self.psql("postgres", "CREATE DATABASE %s" % name)
        return self.pg_url.rsplit("/", 1)[0] + "/" + name

    def new_redis_url(self):
        n = self._redis_db
        self._redis_db += 1
        return "%s/%d" % (self.redis_base, n)

    def postmaster_pid(self):
        with open(os.path.join(self.pg_dir, "data", "postmaster.pid")) as f:
            return int(f.readline())

    def redis_pid(self):
        with open(os.path.join(self.redis_dir, "redis.pid")) as f:
            return int(f.read().strip())

    # ---- services ----
    def start_files(self, name="files"):
        d = os.path.join(self.dir, name + "-data")
        os.makedirs(d, exist_ok=True)
        p = Proc(self, name, [self.binary("files"), "--listen", "127.0.0.1:0",
                              "--admin-listen", "127.0.0.1:0", "--data-dir", d,
                              "--log-level", "info"])
        p.wait_listening()
        return p

    def start_scheduler(self, name, db_url, redis_url, files, extra=(), listen="127.0.0.1:0"):
        p = Proc(self, name, [self.binary("scheduler"), "--listen", listen,
                              "--admin-listen", "127.0.0.1:0", "--database-url", db_url,
                              "--redis-url", redis_url, "--files", files.address,
                              "--log-level", "info"] + list(extra))
        p.wait_listening()
        return p

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # keep cleaning up
                print("cleanup: %s: %s" % (p.name, e), file=sys.stderr)
        if self.pg_dir:
            subprocess.run(["bash", os.path.join(HARNESS, "pg.sh"), "stop", self.pg_dir])
        if self.redis_dir:
            subprocess.run(["bash", os.path.join(HARNESS, "redis.sh"), "stop", self.redis_dir])
        if self.keep:
            print("kept %s" % self.dir, file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class _Deadline(BaseException):
    pass


def install_signal_handlers(time_limit):
    """SIGINT/SIGTERM/SIGHUP and the overall time limit raise in the main
    thread, so the `finally` that stops everything runs."""
    def on_sig(sig, frame):
        raise KeyboardInterrupt("signal %d" % sig)

    def on_alarm(sig, frame):
        raise _Deadline("the benchmark exceeded --time-limit %ss" % time_limit)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_sig)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(time_limit))


# --------------------------------------------------------------------------
# gRPC stubs from proto/
# --------------------------------------------------------------------------

def stubs(bench):
    global pb, pb_grpc, files_pb2, files_pb2_grpc, common_pb2, grpc
    out = os.path.join(bench.dir, "stubs")
    os.makedirs(out)
    root = os.path.join(REPO, "proto")
    protos = sorted(os.path.relpath(os.path.join(dp, f), root)
                    for dp, _, fs in os.walk(root) for f in fs if f.endswith(".proto"))
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I" + root,
                        "--python_out=" + out, "--grpc_python_out=" + out] + protos,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise BenchError("grpc_tools.protoc failed (python3-grpc-tools needed):\n" + r.stdout)
    sys.path.insert(0, out)
    import grpc as _grpc
    from printfarm.v1 import common_pb2 as _c, files_pb2 as _f, files_pb2_grpc as _fg
    from printfarm.v1 import scheduler_pb2 as _s, scheduler_pb2_grpc as _sg
    grpc, common_pb2, files_pb2, files_pb2_grpc, pb, pb_grpc = _grpc, _c, _f, _fg, _s, _sg


def channel(target):
    return grpc.insecure_channel(target, options=[("grpc.enable_retries", 0),
                                                  ("grpc.max_reconnect_backoff_ms", 200),
                                                  ("grpc.initial_reconnect_backoff_ms", 50)])


def upload(files_stub, data):
    def reqs():
        yield files_pb2.UploadRequest(header=files_pb2.UploadHeader(size=len(data)))
        for i in range(0, len(data), 1 << 20):
            yield files_pb2.UploadRequest(chunk=data[i:i + (1 << 20)])
    return files_stub.Upload(reqs(), timeout=120).digest.sha256


def put_bundle(files_addr, profile, data, name="bench", estimated_seconds=0):
    ch = channel(files_addr)
    try:
        st = files_pb2_grpc.FilesStub(ch)
        d = upload(st, data)
        b = files_pb2.Bundle(name=name)
        f = b.files.add(profile=profile, size=len(data))
        f.digest.sha256 = d
        if estimated_seconds:
            f.metadata.CopyFrom(common_pb2.GcodeMetadata(estimated_seconds=estimated_seconds))
        return st.PutBundle(files_pb2.PutBundleRequest(bundle=b), timeout=30).digest.sha256
    finally:
        ch.close()


def wait_leader(scheds, timeout=30):
    """The replica that answers ListJobs with OK."""
    deadline = time.monotonic() + timeout
    while True:
        for s in scheds:
            if not s.alive():
                continue
            ch = channel(s.address)
            try:
                pb_grpc.SchedulerStub(ch).ListJobs(pb.ListJobsRequest(page_size=1), timeout=2)
                return s
            except grpc.RpcError:
                pass
            finally:
                ch.close()
        if time.monotonic() > deadline:
            raise BenchError("no scheduler leader within %ss" % timeout)
        time.sleep(0.1)


def histogram(text, name):
    """{le: cumulative count} of an unlabelled Prometheus histogram, plus sum/count."""
    buckets = {}
    total = cnt = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            m = re.search(r'le="([^"]+)"\}\s+(\S+)', line)
            if m:
                le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
                buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
        elif line.startswith(name + "_sum"):
            total += float(line.split()[-1])
        elif line.startswith(name + "_count"):
            cnt += float(line.split()[-1])
    return buckets, total, cnt


def hist_delta(a, b):
    ba, sa, ca = a
    bb, sb, cb = b
    return {le: bb[le] - ba.get(le, 0.0) for le in bb}, sb - sa, cb - ca


def hist_quantile(buckets, q):
    """Prometheus histogram_quantile: linear inside the bucket."""
    les = sorted(buckets)
    if not les:
        return float("nan")
    total = buckets[les[-1]]
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = buckets[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return les[-1]


def metric_value(text, name, labels=None):
    total = None
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, val = line.rpartition(" ")
        if head != name and not head.startswith(name + "{"):
            continue
        if labels and not all(('%s="%s"' % kv) in head for kv in labels.items()):
            continue
        total = (total or 0.0) + float(val)
    return total


def met(ok):
    return "met" if ok else "NOT met"


# --------------------------------------------------------------------------
# scripted agent
# --------------------------------------------------------------------------

_CLOSE = object()


class ScriptedPrinter:
    """One printer on a Connect stream, in its own thread. It prints zero-length
    prints: STARTED and SUCCEEDED at once (or SUCCEEDED after print_s), and
    answers RunClearing with BedCleared(automatic) at once. Like pf-agent it
    keeps seq numbers across reconnects, resends what was not acknowledged
    after Welcome, reports its current attempt in Hello, treats StartPrint
    idempotently by attempt id, and reconnects (every retry_s, following the
    printfarm-leader trailer) when `reconnect` is set. Every received message
    is time-stamped (time.monotonic)."""

    def __init__(self, pid, profile, targets, reconnect=False, retry_s=0.05, print_s=0.0):
        self.pid = pid
        self.profile = profile
        self.targets = targets  # shared list, may change
        self.reconnect = reconnect
        self.retry_s = retry_s
        self.print_s = print_s
        self.mu = threading.Lock()
        self.seq = 0
        self.unacked = collections.OrderedDict()  # seq -> (kind, AgentMessage)
        self.current = None  # [attempt_id, AttemptState]
        self.bed_clear = True
        self.seen = set()
        self.stopping = False
        self.call = None
        self.out = None
        self.welcomed = False
        self.target = None
        self.hint = None
        self.welcomes = []  # (t, target)
        self.starts = []  # (t, attempt_id, target)
        self.done = []  # t of SUCCEEDED acks
        self.ends = []  # (t, target, code)
        self.trace = []  # (t, what) what in sp, ack_succ, rc, ack_bc
        self.errors = []
        self.thread = threading.Thread(target=self._run, name="agent-" + pid, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        with self.mu:
            self.stopping = True
            call = self.call
        if call is not None:
            call.cancel()
        self.thread.join(10)

    # ---- sending (under mu) ----
    def _numbered(self, kind, **fields):
        """Numbers, keeps until acked, and sends now if welcomed (else after
        the next Welcome)."""
        self.seq += 1
        m = pb.AgentMessage(seq=self.seq, **fields)
        self.unacked[self.seq] = (kind, m)
        if self.out is not None and self.welcomed:
            self.out.put(m)

    def _event(self, aid, kind):
        return pb.AttemptEvent(attempt_id=aid, kind=kind, time_unix_ms=int(time.time() * 1000))

    def _hello(self):
        h = pb.AgentHello(printer_id=self.pid, profile=self.profile,
                          capabilities=pb.AgentCapabilities(driver="bench", extruders=1,
                                                            auto_clear=True),
                          agent_version="sched_bench", bed_clear=self.bed_clear,
                          last_seq=self.seq)
        if self.current is not None:
            h.current.CopyFrom(pb.AgentAttempt(attempt_id=self.current[0],
                                               state=self.current[1]))
        return pb.AgentMessage(hello=h)

    def _finish(self, aid):
        with self.mu:
            if self.current is None or self.current[0] != aid:
                return
            self.current[1] = pb.ATTEMPT_STATE_SUCCEEDED
            self._numbered("succ", attempt_event=self._event(aid, pb.ATTEMPT_EVENT_KIND_SUCCEEDED))

    # ---- the stream ----
    def _requests(self, q):
        while True:
            m = q.get()
            if m is _CLOSE:
                return
            yield m

    def _pick(self):
        ts = list(self.targets)
        if self.hint in ts:
            t, self.hint = self.hint, None
            return t
        if self.target in ts:
            return ts[(ts.index(self.target) + 1) % len(ts)]
        return ts[0]

    def _run(self):
        import queue
        first = True
        while True:
            with self.mu:
                if self.stopping:
                    return
                target = self.targets[0] if first else self._pick()
                first = False
                self.target = target
                q = queue.SimpleQueue()
                self.out = q
                self.welcomed = False
                q.put(self._hello())
            ch = channel(target)
            code = None
            try:
                call = pb_grpc.SchedulerStub(ch).Connect(self._requests(q))
                with self.mu:
                    self.call = call
                    if self.stopping:
                        call.cancel()
                for m in call:
                    self._on(m, target)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name if e.code() else "?"
                try:
                    md = dict(e.trailing_metadata() or ())
                except Exception:
                    md = {}
                if md.get("printfarm-leader"):
                    self.hint = md["printfarm-leader"]
            except Exception as e:  # a bug here must not hang the bench
                self.errors.append(repr(e))
            finally:
                with self.mu:
                    self.out = None
                    self.welcomed = False
                    self.call = None
                q.put(_CLOSE)
                ch.close()
            self.ends.append((time.monotonic(), target, code))
            with self.mu:
                if self.stopping or not self.reconnect:
                    return
            time.sleep(self.retry_s)

    def _on(self, m, target):
        t = time.monotonic()
        which = m.WhichOneof("msg")
        with self.mu:
            if which == "ack":
                for s in [s for s in self.unacked if s <= m.ack.seq]:
                    kind, _ = self.unacked.pop(s)
                    if kind == "succ":
                        self.done.append(t)
                        self.trace.append((t, "ack_succ"))
                    elif kind == "bc":
                        self.trace.append((t, "ack_bc"))
            elif which == "start_print":
                aid = m.start_print.attempt_id
                self.starts.append((t, aid, target))
                if aid in self.seen:
                    return  # idempotent: its events are acked or resent after Welcome
                self.seen.add(aid)
                self.trace.append((t, "sp"))
                self.current = [aid, pb.ATTEMPT_STATE_PRINTING]
                self.bed_clear = False
                self._numbered("started", attempt_event=self._event(
                    aid, pb.ATTEMPT_EVENT_KIND_STARTED))
                if self.print_s <= 0:
                    self.current[1] = pb.ATTEMPT_STATE_SUCCEEDED
                    self._numbered("succ", attempt_event=self._event(
                        aid, pb.ATTEMPT_EVENT_KIND_SUCCEEDED))
                else:
                    tm = threading.Timer(self.print_s, self._finish, (aid,))
                    tm.daemon = True
                    tm.start()
            elif which == "run_clearing":
                self.trace.append((t, "rc"))
                self.bed_clear = True
                self._numbered("bc", bed_cleared=pb.BedCleared(
                    automatic=True, attempt_id=m.run_clearing.attempt_id))
            elif which == "welcome":
                self.welcomes.append((t, target))
                self.welcomed = True
                for s in [s for s in self.unacked if s <= m.welcome.acked_seq]:
                    kind, _ = self.unacked.pop(s)
                    if kind == "succ":
                        self.done.append(t)
                for s, (kind, msg) in self.unacked.items():
                    self.out.put(msg)
            elif which == "cancel":
                pass  # prints end at once: the real end is already sent


def cycle_breakdown(printers, t0, t1):
    """Medians (ms) of the steps of a cycle, from the agents' receive times."""
    steps = collections.defaultdict(list)
    for p in printers:
        tr = [x for x in p.trace if t0 <= x[0] <= t1]
        last = {}
        for t, what in tr:
            if what == "sp":
                if "ack_bc" in last:
                    steps["BedCleared ack -> next StartPrint (dispatch)"].append(t - last["ack_bc"])
                last = {"sp": t}
            elif what == "ack_succ" and "sp" in last:
                steps["StartPrint -> SUCCEEDED ack (2 attempt events)"].append(t - last["sp"])
                last["ack_succ"] = t
            elif what == "rc" and "ack_succ" in last:
                steps["SUCCEEDED ack -> RunClearing"].append(t - last["ack_succ"])
                last["rc"] = t
            elif what == "ack_bc" and "rc" in last:
                steps["RunClearing -> BedCleared ack"].append(t - last["rc"])
                last["ack_bc"] = t
    order = ["StartPrint -> SUCCEEDED ack (2 attempt events)", "SUCCEEDED ack -> RunClearing",
             "RunClearing -> BedCleared ack", "BedCleared ack -> next StartPrint (dispatch)"]
    return [(k, statistics.median(steps[k]) * 1000, _pct(steps[k], 0.99) * 1000, len(steps[k]))
            for k in order if steps[k]]


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


# --------------------------------------------------------------------------
# 1. attempt cycles per second vs pgbench
# --------------------------------------------------------------------------

class CpuWindow:
    """CPU seconds of the processes that matter, over a window."""

    def __init__(self, bench, procs):
        self.bench = bench
        self.procs = procs  # {label: Proc}

    def sample(self):
        s = {label: p.cpu() or 0.0 for label, p in self.procs.items()}
        s["postgres (all)"] = tree_cpu(self.bench.postmaster_pid())
        s["redis"] = proc_cpu(self.bench.redis_pid()) or 0.0
        s["bench (python)"] = self_cpu()
        busy, total = machine_cpu()
        s["machine busy (all processes, both cores)"] = busy / CLK_TCK
        return s

    @staticmethod
    def delta(a, b, seconds):
        return [(k, (b[k] - a[k]) / seconds * 100.0) for k in a]


def run_pgbench(bench, db, clients, seconds):
    script = os.path.join(bench.dir, "dequeue.sql")
    t0 = time.monotonic()
    argv = [PGBENCH, "-n", "-h", "127.0.0.1", "-p", str(bench.pg_port()), "-U", bench.pg_user(),
            "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1)),
            "-T", str(int(seconds)), "-f", script, db]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_pdeathsig)
    seen = {}  # backends come and go with pgbench: keep each one's last reading
    stop = threading.Event()

    def sampler():
        pm = bench.postmaster_pid()
        while not stop.wait(0.1):
            for c in children_of(pm):
                v = proc_cpu(c)
                if v is not None:
                    seen[c] = v
    th = threading.Thread(target=sampler, daemon=True)
    before = {c: proc_cpu(c) or 0.0 for c in children_of(bench.postmaster_pid())}
    a = (proc_cpu(bench.postmaster_pid()) or 0.0)
    th.start()
    try:
        out, err = p.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise BenchError("pgbench did not finish")
    finally:
        stop.set()
        th.join()
    wall = time.monotonic() - t0
    for c in children_of(bench.postmaster_pid()):
        v = proc_cpu(c)
        if v is not None:
            seen[c] = v
    b = (proc_cpu(bench.postmaster_pid()) or 0.0) + sum(v - before.get(c, 0.0)
                                                         for c, v in seen.items())
    if p.returncode != 0:
        raise BenchError("pgbench failed:\n%s\n%s" % (out, err))
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not m:
        raise BenchError("no tps in pgbench output:\n" + out)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # cumulative; fine for info
    left = int(bench.psql(db, "SELECT count(*) FROM q WHERE state = 'queued'"))
    return {"tps": float(m.group(1)), "pg_cpu_pct": (b - a) / wall * 100.0, "left": left,
            "argv": argv, "children_cpu": ru.ru_utime + ru.ru_stime}


def setup_pgbench(bench, rows):
    db = "pgb"
    bench.psql("postgres", "CREATE DATABASE %s" % db)
    bench.psql(db, "CREATE TABLE q (id bigserial PRIMARY KEY, state text NOT NULL, "
                   "payload text NOT NULL DEFAULT '')")
    bench.psql(db, "INSERT INTO q (state) SELECT 'queued' FROM generate_series(1, %d)" % rows)
    bench.psql(db, "CREATE INDEX q_queued ON q (id) WHERE state = 'queued'")
    bench.psql(db, "VACUUM ANALYZE q")
    bench.psql(db, "CHECKPOINT")
    with open(os.path.join(bench.dir, "dequeue.sql"), "w") as f:
        f.write("WITH c AS (SELECT id FROM q WHERE state = 'queued' ORDER BY id "
                "FOR UPDATE SKIP LOCKED LIMIT 1) "
                "UPDATE q SET state = 'done' FROM c WHERE q.id = c.id;\n")
    return db


def pgss_top(bench, db, n=15):
    """The top statements of database `db` by total time since the last reset."""
    out = bench.psql(db, "SELECT calls, round(total_exec_time::numeric, 1), "
                         "round(mean_exec_time::numeric, 3), rows, "
                         "regexp_replace(left(query, 150), '\\s+', ' ', 'g') "
                         "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                         "WHERE datname = current_database()) ORDER BY total_exec_time DESC "
                         "LIMIT %d" % n)
    rows = []
    for line in out.splitlines():
        c, tot, mean, rows_, q = line.split("|", 4)
        rows.append((int(c), float(tot), float(mean), int(rows_), q))
    return rows


def print_pgss(rows, indent="    "):
    print(indent + "pg_stat_statements, top statements by total time in the window:")
    for calls, total, mean, rows_, q in rows:
        print(indent + "  %7d calls %8.0f ms total %7.3f ms mean %7d rows  %s"
              % (calls, total, mean, rows_, q))


def sched_window(bench, sched, files, printers, warmup, window, submitter=None, pgss_db=None):
    """Runs the agents for warmup + window seconds; returns rates and CPU."""
    procs = {"pf-scheduler": sched, "pf-files": files}
    cw = CpuWindow(bench, procs)
    time.sleep(warmup)
    if pgss_db:
        bench.psql(pgss_db, "SELECT pg_stat_statements_reset()")
    hist0 = histogram(sched.metrics(), "printfarm_scheduler_dispatch_latency_seconds")
    round0 = histogram(sched.metrics(), "printfarm_scheduler_dispatch_round_seconds")
    rounds0 = metric_value(sched.metrics(), "printfarm_scheduler_dispatch_rounds_total") or 0
    xq = ("SELECT xact_commit, xact_rollback, tup_inserted + tup_updated + tup_deleted "
          "FROM pg_stat_database WHERE datname = 'sched'")
    x0 = [int(v) for v in bench.psql("postgres", xq).split("|")]
    th0 = thread_cpu(sched.pid)
    c0 = cw.sample()
    t0 = time.monotonic()
    time.sleep(window)
    t1 = time.monotonic()
    c1 = cw.sample()
    th1 = thread_cpu(sched.pid)
    x1 = [int(v) for v in bench.psql("postgres", xq).split("|")]
    text = sched.metrics()
    hist1 = histogram(text, "printfarm_scheduler_dispatch_latency_seconds")
    rb, rsum, rcnt = hist_delta(round0, histogram(text, "printfarm_scheduler_dispatch_round_seconds"))
    rounds1 = metric_value(text, "printfarm_scheduler_dispatch_rounds_total") or 0
    done = sum(1 for p in printers for t in p.done if t0 <= t < t1)
    starts = sum(1 for p in printers for s in p.starts if t0 <= s[0] < t1)
    bk, _, cnt = hist_delta(hist0, hist1)
    pgss = pgss_top(bench, pgss_db) if pgss_db else None
    return {"round_ms": (rsum / rcnt * 1000 if rcnt else float("nan"),
                         hist_quantile(rb, 0.99) * 1000), "pgss": pgss,
            "xacts": [b - a for a, b in zip(x0, x1)],
            "rate": done / (t1 - t0), "done": done, "starts": starts, "seconds": t1 - t0,
            "cpu": CpuWindow.delta(c0, c1, t1 - t0), "threads": thread_cpu_delta(th0, th1),
            "steps": cycle_breakdown(printers, t0, t1),
            "lat_p50": hist_quantile(bk, 0.5), "lat_p99": hist_quantile(bk, 0.99),
            "lat_n": cnt, "rounds": rounds1 - rounds0,
            "submit_lat": submitter.latencies(t0, t1) if submitter else None}


class Submitter:
    """Threads submitting count=1 jobs, keeping at most `window` submitted and
    not yet done (so the queue stays short but never empty)."""

    def __init__(self, target, bundle, printers, threads, window):
        self.target = target
        self.bundle = bundle
        self.printers = printers
        self.window = window
        self.submitted = 0
        self.lat = []  # (t, seconds)
        self.errors = []
        self.mu = threading.Lock()
        self.stopping = False
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(20)

    def _done(self):
        return sum(len(p.done) for p in self.printers)

    def _run(self, i):
        ch = channel(self.target)
        stub = pb_grpc.SchedulerStub(ch)
        n = 0
        while not self.stopping:
            with self.mu:
                go = self.submitted - self._done() < self.window
                if go:
                    self.submitted += 1
            if not go:
                time.sleep(0.001)
                continue
            n += 1
            t = time.monotonic()
            try:
                stub.SubmitJob(pb.SubmitJobRequest(bundle=common_pb2.Digest(sha256=self.bundle),
                                                   count=1, name="c%d-%d" % (i, n)), timeout=15)
                self.lat.append((t, time.monotonic() - t))
            except grpc.RpcError as e:
                self.errors.append(e.code().name)
                with self.mu:
                    self.submitted -= 1
                time.sleep(0.05)
        ch.close()

    def latencies(self, t0, t1):
        xs = [d for t, d in self.lat if t0 <= t < t1]
        return (statistics.median(xs) * 1000, _pct(xs, 0.99) * 1000, len(xs)) if xs else None


def print_window(title, w, target_rate=None):
    print("  %s: %.1f cycles/s (%d SUCCEEDED acks in %.1f s, %d StartPrints, %d dispatch rounds)"
          % (title, w["rate"], w["done"], w["seconds"], w["starts"], w["rounds"]))
    print("    cpu % of one core: " + ", ".join("%s %.0f" % (k, v) for k, v in w["cpu"]))
    rows, nthreads = w["threads"]
    print("    pf-scheduler busiest threads of %d (tid cpu%%): " % nthreads + ", ".join(
        "%d %.0f" % (tid, c / w["seconds"] * 100) for tid, comm, c in rows if c > 0))
    if w.get("pgss"):
        print_pgss(w["pgss"])
    for k, med, p99, n in w["steps"]:
        print("    %-48s median %6.2f ms  p99 %6.2f ms  (n=%d)" % (k, med, p99, n))
    print("    scheduler dispatch latency histogram (ready -> StartPrint): p50 %.1f ms, p99 %.1f ms "
          "(n=%d)" % (w["lat_p50"] * 1000, w["lat_p99"] * 1000, w["lat_n"]))
    print("    dispatch round duration: mean %.1f ms, p99 %.1f ms" % w["round_ms"])
    xc, xr, rows = w["xacts"]
    if w["done"]:
        print("    PostgreSQL (database of the scheduler): %.1f commits, %.2f rollbacks and %.1f rows "
              "written per cycle (backends report every 0.5 s or so: approximate)"
              % (xc / w["done"], xr / w["done"], rows / w["done"]))
    if w.get("submit_lat"):
        print("    SubmitJob latency: median %.1f ms, p99 %.1f ms (n=%d)" % w["submit_lat"])


def bench_cycles(bench, args):
    P = args.printers
    print("\n== 1. attempt cycles per second vs pgbench (SKIP LOCKED dequeue), %d printers / "
          "%d pgbench clients ==" % (P, P))
    print("PostgreSQL: fsync=%s synchronous_commit=%s shared_buffers=%s wal_sync_method=%s" % tuple(
        bench.psql("postgres", "SHOW %s" % k) for k in
        ("fsync", "synchronous_commit", "shared_buffers", "wal_sync_method")))
    db = setup_pgbench(bench, args.pgbench_rows)
    results = {}
    pg1 = run_pgbench(bench, db, P, args.window)
    print("  pgbench #1 (before): %.1f tps, postgres cpu %.0f%% of a core, %d rows still queued"
          % (pg1["tps"], pg1["pg_cpu_pct"], pg1["left"]))
    print("    command: %s" % " ".join(pg1["argv"]))

    files = bench.start_files()
    db_url = bench.new_database("sched")
    sched = bench.start_scheduler("sched", db_url, bench.new_redis_url(), files,
                                  args.scheduler_arg)
    wait_leader([sched])
    pgss_db = None
    if args.pg_stat_statements:
        bench.psql("sched", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        pgss_db = "sched"
    prof = "bench-prof"
    bundle = put_bundle(files.address, prof, b";zero-length print\nG28\n", name="zero")
    printers = [ScriptedPrinter("cyc-%03d" % i, prof, [sched.address]) for i in range(P)]
    for p in printers:
        p.start()
    deadline = time.monotonic() + 30
    while not all(p.welcomes for p in printers):
        if time.monotonic() > deadline:
            raise BenchError("agents not welcomed: %s" % [p.ends for p in printers if not p.welcomes])
        time.sleep(0.05)

    # (a) submit -> dispatch -> done: count=1 jobs submitted while printers cycle
    sub = Submitter(sched.address, bundle, printers, threads=args.submitters,
                    window=args.submit_window or 2 * P)
    sub.start()
    try:
        wa = sched_window(bench, sched, files, printers, args.warmup, args.window, sub,
                          pgss_db=pgss_db)
    finally:
        sub.stop()
    if sub.errors:
        print("  submit errors: %s" % collections.Counter(sub.errors))
    # let the last submitted jobs drain
    deadline = time.monotonic() + 30
    while sum(len(p.done) for p in printers) < sub.submitted and time.monotonic() < deadline:
        time.sleep(0.05)

    # (b) a deep queue submitted beforehand (like pgbench's table of queued rows)
    ch = channel(sched.address)
    st = pb_grpc.SchedulerStub(ch)
    for i in range(args.queued_jobs):
        st.SubmitJob(pb.SubmitJobRequest(bundle=common_pb2.Digest(sha256=bundle),
                                         count=args.copies, name="deep-%d" % i), timeout=15)
    ch.close()
    done_before = sum(len(p.done) for p in printers)
    wb = sched_window(bench, sched, files, printers, args.warmup, args.window,
                      pgss_db=pgss_db)
    copies = args.queued_jobs * args.copies
    done_b = sum(len(p.done) for p in printers) - done_before
    exhausted = done_b >= copies

    pg2 = run_pgbench(bench, db, P, args.window)
    print("  pgbench #2 (after):  %.1f tps, postgres cpu %.0f%% of a core, %d rows still queued"
          % (pg2["tps"], pg2["pg_cpu_pct"], pg2["left"]))
    for pg in (pg1, pg2):
        if pg["left"] == 0:
            print("  WARNING: pgbench ran out of queued rows; raise --pgbench-rows")
    for p in printers:
        p.stop()
        if p.errors:
            print("  agent %s errors: %s" % (p.pid, p.errors[:3]))
    pg_tps = (pg1["tps"] + pg2["tps"]) / 2
    print()
    print_window("(a) submit -> dispatch -> done, count=1 jobs, <= %d outstanding"
                 % (args.submit_window or 2 * P), wa)
    print_window("(b) pre-queued: %d jobs x %d copies submitted before the window%s"
                 % (args.queued_jobs, args.copies, " (EXHAUSTED: raise --copies)" if exhausted
                    else ""), wb)
    print()
    print("pgbench SKIP LOCKED dequeue, %d clients: %.1f tps (mean of %.1f before, %.1f after)"
          % (P, pg_tps, pg1["tps"], pg2["tps"]))
    for label, w in (("(a) with submit", wa), ("(b) pre-queued", wb)):
        ratio = w["rate"] / pg_tps if pg_tps else 0.0
        print("attempt cycles %-16s %8.1f /s   ratio to pgbench %.3f   target >= 1.0: %s"
              % (label, w["rate"], ratio, met(ratio >= 1.0)))
        results[label] = (w["rate"], ratio)
    results["pgbench"] = (pg1["tps"], pg2["tps"])
    return results


# --------------------------------------------------------------------------
# 2. failover
# --------------------------------------------------------------------------

def bench_failover(bench, args):
    P = args.fo_printers
    print("\n== 2. failover: SIGKILL the leader, time until the new leader's first StartPrint "
          "(%d reps, %d scripted printers, prints of %.0f ms, agent retry every %.0f ms) =="
          % (args.reps, P, args.fo_print_ms, args.fo_retry_ms))
    files = bench.start_files("fo-files")
    db_url = bench.new_database("failover")
    redis_url = bench.new_redis_url()
    n = [0]

    def replica():
        n[0] += 1
        return bench.start_scheduler("fo-sched%d" % n[0], db_url, redis_url, files,
                                     args.scheduler_arg)
    scheds = [replica(), replica()]
    leader = wait_leader(scheds)
    prof = "fo-prof"
    bundle = put_bundle(files.address, prof, b";zero-length print\nG28\n", name="fo")
    ch = channel(leader.address)
    st = pb_grpc.SchedulerStub(ch)
    for i in range(args.fo_jobs):
        st.SubmitJob(pb.SubmitJobRequest(bundle=common_pb2.Digest(sha256=bundle),
                                         count=args.fo_copies, name="fo-%d" % i), timeout=15)
    ch.close()
    targets = [leader.address] + [s.address for s in scheds if s is not leader]
    printers = [ScriptedPrinter("fo-%03d" % i, prof, targets, reconnect=True,
                                retry_s=args.fo_retry_ms / 1000.0,
                                print_s=args.fo_print_ms / 1000.0) for i in range(P)]
    for p in printers:
        p.start()
    results = []
    try:
        for rep in range(args.reps):
            # steady state: every printer welcomed by the leader and prints flowing
            deadline = time.monotonic() + 30
            while True:
                now = time.monotonic()
                flowing = sum(1 for p in printers for s in p.starts
                              if s[2] == leader.address and now - s[0] < 1.0)
                welcomed = all(p.welcomes and p.welcomes[-1][1] == leader.address
                               for p in printers)
                if welcomed and flowing >= 3:
                    break
                if now > deadline:
                    raise BenchError("rep %d: no steady state on the leader (welcomed=%s, "
                                     "starts in the last second=%d)" % (rep, welcomed, flowing))
                time.sleep(0.05)
            time.sleep(args.fo_settle + random.uniform(0, 0.3))  # random phase vs lease renewals
            old = leader
            follower = [s for s in scheds if s is not old and s.alive()][0]
            wall_kill = time.time()
            t_kill = time.monotonic()
            old.kill(signal.SIGKILL)
            # first StartPrint from the new leader, seen at an agent
            deadline = t_kill + 20
            first = None
            while first is None and time.monotonic() < deadline:
                for p in printers:
                    for t, aid, tgt in list(p.starts):
                        if t > t_kill and tgt == follower.address and (first is None or t < first):
                            first = t
                if first is None:
                    time.sleep(0.002)
            if first is None:
                raise BenchError("rep %d: no StartPrint from the new leader within 20 s" % rep)
            time.sleep(2.0)  # let the stragglers reconnect, for the per-printer figures
            elected = [parse_ts(l) for l in follower.log_lines("leader_elected")]
            elected = [e for e in elected if e is not None and e >= wall_kill - 0.01]
            welcome_times = []
            resumed = []
            for p in printers:
                ss = [t for t, aid, tgt in p.starts if t > t_kill and tgt == follower.address]
                if ss:
                    resumed.append(ss[0] - t_kill)
                ws = [t for t, tgt in p.welcomes if t > t_kill and tgt == follower.address]
                if ws:
                    welcome_times.append(ws[0] - t_kill)
            r = {"first_sp": first - t_kill,
                 "elected": (elected[0] - wall_kill) if elected else float("nan"),
                 "welcome_first": min(welcome_times) if welcome_times else float("nan"),
                 "welcome_all": max(welcome_times) if len(welcome_times) == P else float("nan"),
                 "resumed": len(resumed), "resumed_all": max(resumed) if resumed else float("nan")}
            results.append(r)
            print("  rep %d: first StartPrint %.3f s after the kill (lease taken over + epoch: "
                  "%.3f s; first agent welcomed %.3f s; all %d welcomed %.3f s; %d of %d printers "
                  "got a StartPrint from the new leader, the last at %.3f s)"
                  % (rep + 1, r["first_sp"], r["elected"], r["welcome_first"], P,
                     r["welcome_all"], r["resumed"], P, r["resumed_all"]))
            # restore two replicas
            new = replica()
            scheds = [s for s in scheds if s.alive()]
            scheds.append(new)
            targets[:] = [follower.address, new.address]
            leader = wait_leader([follower])
    finally:
        for p in printers:
            p.stop()
    errs = [e for p in printers for e in p.errors]
    if errs:
        print("  agent errors: %s" % errs[:5])
    xs = [r["first_sp"] for r in results]
    el = [r["elected"] for r in results if r["elected"] == r["elected"]]
    print()
    print("failover, SIGKILL of the leader -> first StartPrint of the new leader (%d reps):"
          % len(xs))
    print("  min %.3f s   median %.3f s   max %.3f s   target <= 2 s: %s"
          % (min(xs), statistics.median(xs), max(xs), met(max(xs) <= 2.0)))
    if el:
        print("  of which kill -> leader_elected logged by the new leader: min %.3f  median %.3f"
              "  max %.3f s" % (min(el), statistics.median(el), max(el)))
    return xs


def bench_failover_pfagent(bench, args):
    """The same failover, with the real pf-agent (sim printers) instead of
    scripted agents: its own reconnect policy (backoff with jitter, leader
    redirects, the --scheduler list) is then part of the time. StartPrints are
    read from pf-agent's log (event=start_print, ms timestamps). The replica
    started after each kill reuses the killed one's port, so the agent's
    --scheduler list stays valid."""
    P = args.fo_printers
    print("\n== 2b. failover with the real pf-agent: --sim-printers %d, prints of %.0f ms, "
          "%d reps ==" % (P, args.fo_print_ms, args.reps))
    files = bench.start_files("fa-files")
    db_url = bench.new_database("failover_agent")
    redis_url = bench.new_redis_url()
    ports = [int(sh("bash", os.path.join(HARNESS, "free_port.sh"))) for _ in range(2)]
    while ports[1] == ports[0]:
        ports[1] = int(sh("bash", os.path.join(HARNESS, "free_port.sh")))
    n = [0]

    def replica(port):
        n[0] += 1
        return bench.start_scheduler("fa-sched%d" % n[0], db_url, redis_url, files,
                                     args.scheduler_arg, listen="127.0.0.1:%d" % port)
    scheds = [replica(ports[0]), replica(ports[1])]
    leader = wait_leader(scheds)
    prof = "fa-prof"
    est = 100
    bundle = put_bundle(files.address, prof, b";zero-length print\nG28\n", name="fa",
                        estimated_seconds=est)
    ch = channel(leader.address)
    st = pb_grpc.SchedulerStub(ch)
    for i in range(args.fo_jobs):
        st.SubmitJob(pb.SubmitJobRequest(bundle=common_pb2.Digest(sha256=bundle),
                                         count=args.fo_copies, name="fa-%d" % i), timeout=15)
    ch.close()
    agent = Proc(bench, "fa-agent", [
        bench.binary("agent"), "--driver", "sim", "--sim-printers", str(P), "--printer-id", "fa",
        "--profile", prof, "--sim-speed", str(args.fo_print_ms / 1000.0 / est),
        "--sim-heat-seconds", "0", "--scheduler", ",".join("127.0.0.1:%d" % p for p in ports),
        "--files", files.address, "--state-dir", os.path.join(bench.dir, "fa-state"),
        "--admin-listen", "127.0.0.1:0", "--log-level", "info"])

    def starts_after(t_wall):
        out = []
        for line in agent.log().splitlines():
            if "event=start_print " in line:
                t = parse_ts(line)
                if t is not None and t >= t_wall:
                    m = re.search(r"\bprinter=(\S+)", line)
                    out.append((t, m.group(1) if m else "?"))
        return out
    xs = []
    alls = []
    for rep in range(args.reps):
        deadline = time.monotonic() + 60
        while len(set(p for _, p in starts_after(time.time() - 1.0))) < min(P, 3):
            if time.monotonic() > deadline or not agent.alive():
                raise BenchError("rep %d: pf-agent's printers are not printing on the leader:\n%s"
                                 % (rep, agent.log()[-2000:]))
            time.sleep(0.1)
        time.sleep(args.fo_settle + random.uniform(0, 0.3))
        old = leader
        follower = [s for s in scheds if s is not old and s.alive()][0]
        wall_kill = time.time()
        old.kill(signal.SIGKILL)
        deadline = time.monotonic() + 30
        first = None
        elected = None
        while time.monotonic() < deadline:
            if elected is None:
                el = [parse_ts(l) for l in follower.log_lines("leader_elected")]
                el = [e for e in el if e is not None and e >= wall_kill - 0.01]
                elected = el[0] if el else None
            if elected is not None:
                ss = starts_after(elected)
                if ss:
                    first = min(t for t, _ in ss)
                    break
            time.sleep(0.02)
        if first is None:
            raise BenchError("rep %d: no StartPrint at pf-agent from the new leader within 30 s"
                             % rep)
        back = {}
        deadline = time.monotonic() + 15
        while len(back) < P and time.monotonic() < deadline:
            back = {}
            for t, p in starts_after(elected):
                back.setdefault(p, t)
            time.sleep(0.1)
        xs.append(first - wall_kill)
        alls.append((max(back.values()) - wall_kill) if len(back) == P else float("inf"))
        print("  rep %d: first StartPrint %.3f s after the kill (leader_elected %.3f s); "
              "%d of %d printers printing again, the last at %.3f s"
              % (rep + 1, first - wall_kill, elected - wall_kill, len(back), P, alls[-1]))
        killed_port = old.grpc_port
        scheds = [s for s in scheds if s.alive()]
        scheds.append(replica(killed_port))
        leader = wait_leader([follower])
    agent.stop()
    print()
    print("failover with pf-agent, SIGKILL of the leader -> first StartPrint logged by pf-agent "
          "(%d reps, ms timestamps):" % len(xs))
    print("  min %.3f s   median %.3f s   max %.3f s   target <= 2 s: %s"
          % (min(xs), statistics.median(xs), max(xs), met(max(xs) <= 2.0)))
    print("  every printer printing again (its first StartPrint from the new leader): min %.3f s  "
          "median %.3f s  max %.3f s (inf: not within 15 s of the election)"
          % (min(alls), statistics.median(alls), max(alls)))
    return xs


# --------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"))
    ap.add_argument("--only", choices=["cycles", "failover", "failover-agent"], action="append",
                    help="run only this benchmark (repeatable); default: all three "
                         "(failover-agent: the failover with the real pf-agent)")
    ap.add_argument("--printers", type=int, default=8,
                    help="cycles: scripted printers = pgbench clients (default 8)")
    ap.add_argument("--window", type=float, default=10, help="measured seconds per window")
    ap.add_argument("--warmup", type=float, default=3, help="seconds before each window")
    ap.add_argument("--submitters", type=int, default=4, help="cycles (a): SubmitJob threads")
    ap.add_argument("--submit-window", type=int, default=0,
                    help="cycles (a): most jobs submitted and not done (default 2 x printers)")
    ap.add_argument("--queued-jobs", type=int, default=100, help="cycles (b): jobs queued")
    ap.add_argument("--copies", type=int, default=100, help="cycles (b): copies per job")
    ap.add_argument("--pgbench-rows", type=int, default=300000)
    ap.add_argument("--reps", type=int, default=5, help="failover repetitions")
    ap.add_argument("--fo-printers", type=int, default=8)
    ap.add_argument("--fo-print-ms", type=float, default=100,
                    help="failover: how long each print lasts at the scripted agents")
    ap.add_argument("--fo-retry-ms", type=float, default=50,
                    help="failover: scripted agents' reconnect interval")
    ap.add_argument("--fo-settle", type=float, default=2.0)
    ap.add_argument("--fo-jobs", type=int, default=20)
    ap.add_argument("--fo-copies", type=int, default=1000)
    ap.add_argument("--scheduler-arg", action="append", default=[],
                    help="extra pf-scheduler flag (repeatable, e.g. --scheduler-arg=--workers=4)")
    ap.add_argument("--pg-stat-statements", action="store_true",
                    help="profile: load pg_stat_statements and print the scheduler's top "
                         "statements per window (adds overhead; not for the recorded figures)")
    ap.add_argument("--time-limit", type=float, default=900,
                    help="stop everything after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return ap.parse_args(argv)


def main():
    args = parse_args()
    install_signal_handlers(args.time_limit)
    which = args.only or ["cycles", "failover", "failover-agent"]
    for line in machine_lines():
        print(line)
    print("command:  %s" % " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]))
    sys.stdout.flush()
    bench = Bench(args.build_dir, keep=args.keep)
    rc = 0
    try:
        stubs(bench)
        bench.start_infra()
        if args.pg_stat_statements:
            bench.enable_pg_stat_statements()
        if "cycles" in which:
            bench_cycles(bench, args)
            sys.stdout.flush()
        if "failover" in which:
            bench_failover(bench, args)
            sys.stdout.flush()
        if "failover-agent" in which:
            bench_failover_pfagent(bench, args)
    except (BenchError, _Deadline, KeyboardInterrupt) as e:
        print("sched_bench: %s" % e, file=sys.stderr)
        rc = 1
    finally:
        signal.alarm(0)
        bench.stop()
        print("load:     %s (1, 5, 15 min) after the run" % loadavg())
    return rc


if __name__ == "__main__":
    sys.exit(main())
