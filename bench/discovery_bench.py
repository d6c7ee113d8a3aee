#!/usr/bin/python3
"""discovery_bench: pf-discovery under register + heartbeat load (issue 5).

N instances (default 10,000) register with one pf-discovery, then each sends
one Heartbeat every --interval seconds (default 5: 2,000 heartbeats/s),
evenly spread, for --duration seconds after a warm-up interval. Reported for
the steady window:

  * CPU of pf-discovery (user + system of every thread, /proc/PID/stat) as a
    share of one core. Target: < 10 %.
  * Redis round trips per heartbeat: top-level commands pf-discovery sent
    (INFO commandstats, calls of everything but the commands that only run
    inside scripts) divided by heartbeats answered. Target: 1.
  * Redis commands per heartbeat including those inside the Lua scripts, the
    per-command breakdown, and Redis' own CPU.

Instances register with probe=off: they have no server to probe, and the
number wanted is the cost of registration and heartbeats (the prober's cost
is per probed instance and separate). pf-discovery otherwise runs with its
defaults (4 workers, prober and reaper on).

Everything runs on 127.0.0.1 in a temp dir under /tmp: a Redis from
tests/harness and the pf-discovery of --build-dir. Heartbeats come from
--senders processes (grpcio, asynchronous calls). Every child is stopped and
the temp dir removed at exit; servers get PR_SET_PDEATHSIG.

Usage: /usr/bin/python3 bench/discovery_bench.py [--build-dir build-bench]
       [--instances 10000] [--interval 5] [--duration 30] [--senders 2]
"""

import argparse
import ctypes
import multiprocessing
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(REPO, "tests", "harness")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1

# Commands that pf-discovery's scripts run inside EVALSHA: not round trips.
SCRIPT_INNER = {"time", "hmget", "hget", "hset", "hgetall", "pexpire", "zadd", "zrem",
                "zrangebyscore", "incr", "xadd", "del", "xrevrange", "get"}


class BenchError(Exception):
    pass


def sh(*argv):
    r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise BenchError("%s failed: %s" % (" ".join(argv), r.stderr.strip()))
    return r.stdout.strip()


def pdeathsig():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return "%d cpu (%s), kernel %s, load %s" % (os.cpu_count(), model, platform.release(), load)


def gen_stubs(out_dir):
    protos = ["printfarm/v1/common.proto", "printfarm/v1/discovery.proto",
              "printfarm/v1/discovery_service.proto"]
    sh("/usr/bin/python3", "-m", "grpc_tools.protoc", "-I" + os.path.join(REPO, "proto"),
       "--python_out=" + out_dir, "--grpc_python_out=" + out_dir, *protos)


def import_stubs(stub_dir):
    sys.path.insert(0, stub_dir)
    import grpc  # noqa: F401
    from printfarm.v1 import discovery_pb2, discovery_service_pb2_grpc
    return discovery_pb2, discovery_service_pb2_grpc


class Redis:
    def __init__(self, directory):
        self.dir = directory
        self.port = sh("bash", os.path.join(HARNESS, "free_port.sh"))
        self.url = sh("bash", os.path.join(HARNESS, "redis.sh"), "start", directory, self.port)
        self.pid = int(open(os.path.join(directory, "redis.pid")).read())

    def cli(self, *args):
        return sh("redis-cli", "-h", "127.0.0.1", "-p", self.port, *args)

    def commandstats(self):
        out = {}
        for line in self.cli("INFO", "commandstats").splitlines():
            m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def stop(self):
        subprocess.run(["bash", os.path.join(HARNESS, "redis.sh"), "stop", self.dir])


class Discovery:
    def __init__(self, binary, redis_url, directory):
        self.log_path = os.path.join(directory, "pf-discovery.log")
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--redis-url",
             redis_url, "--log-level", "info"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            preexec_fn=pdeathsig)
        deadline = time.monotonic() + 15
        self.port = None
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("pf-discovery did not start:\n" + open(self.log_path).read())
            time.sleep(0.05)
            m = re.search(r"event=listening .*port=(\d+)", open(self.log_path).read())
            if m:
                self.port = int(m.group(1))
        self.address = "127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------
# load: registration and heartbeat senders
# --------------------------------------------------------------------------

def register_all(stub, pb, n, ttl, in_flight=400):
    """Registers bench-00000 .. ; returns the lease ids."""
    import grpc
    leases = [None] * n
    pending = []
    errors = 0
    for i in range(n):
        inst = pb.Instance(kind=pb.INSTANCE_KIND_AGENT, id="bench-%05d" % i,
                           address="127.0.0.1:%d" % (20000 + i % 40000), version="bench",
                           labels=[])
        inst.labels.add(key="probe", value="off")
        pending.append((i, stub.Register.future(pb.RegisterRequest(instance=inst,
                                                                   ttl_seconds=ttl),
                                                timeout=30)))
        if len(pending) >= in_flight or i == n - 1:
            for j, fut in pending:
                try:
                    leases[j] = fut.result().lease_id
                except grpc.RpcError as e:
                    errors += 1
                    if errors <= 3:
                        print("register failed: %s %s" % (e.code(), e.details()))
            pending = []
    if errors:
        raise BenchError("%d registrations failed" % errors)
    return leases


def sender(stub_dir, address, leases, interval, start_at, stop_at, conn):
    """Child process: heartbeats each lease every interval, evenly spread,
    from start_at until stop_at (time.time()). Sends back counts for the
    window [window_from, stop_at) and latencies (ms) of the window's calls."""
    pb, pbg = import_stubs(stub_dir)
    import grpc
    ch = grpc.insecure_channel(address)
    stub = pbg.DiscoveryStub(ch)
    n = len(leases)
    reqs = [pb.HeartbeatRequest(lease_id=lease) for lease in leases]
    state = {"ok": 0, "failed": 0, "not_found": 0, "lat": [], "window": False}
    outstanding = [0]
    window_from = conn.recv()  # when the measured window starts

    def done(fut, t0, counted):
        outstanding[0] -= 1
        try:
            fut.result()
            if counted:
                state["ok"] += 1
                state["lat"].append((time.monotonic() - t0) * 1000)
        except grpc.RpcError as e:
            if counted:
                state["failed"] += 1
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    state["not_found"] += 1

    while time.time() < start_at:
        time.sleep(0.01)
    t_begin = time.time()
    sent = 0
    while True:
        now = time.time()
        if now >= stop_at:
            break
        due = int((now - t_begin) / interval * n)  # heartbeats that should have gone out
        while sent < due:
            counted = now >= window_from
            t0 = time.monotonic()
            fut = stub.Heartbeat.future(reqs[sent % n], timeout=30)
            outstanding[0] += 1
            fut.add_done_callback(lambda f, t0=t0, c=counted: done(f, t0, c))
            sent += 1
        time.sleep(0.005)
    deadline = time.monotonic() + 30
    while outstanding[0] > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    lat = sorted(state["lat"])
    conn.send({"ok": state["ok"], "failed": state["failed"], "not_found": state["not_found"],
               "sent": sent, "lat": lat[::max(1, len(lat) // 5000)]})
    ch.close()


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100.0 * len(sorted_values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"),
                    help="CMake build dir holding services/discovery/pf-discovery")
    ap.add_argument("--instances", type=int, default=10000)
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between heartbeats")
    ap.add_argument("--ttl", type=int, default=15, help="TTL asked for at Register")
    ap.add_argument("--duration", type=float, default=30.0, help="measured window, seconds")
    ap.add_argument("--senders", type=int, default=2, help="heartbeat sender processes")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    binary = os.path.join(os.path.abspath(args.build_dir), "services", "discovery",
                          "pf-discovery")
    if not os.access(binary, os.X_OK):
        sys.exit("discovery_bench: %s not built" % binary)
    tmp = tempfile.mkdtemp(prefix="pf-disc-bench-", dir="/tmp")
    redis = disc = None
    procs = []

    def cleanup(*_):
        nonlocal redis, disc
        for p in procs:
            if p.is_alive():
                p.kill()
        if disc is not None:
            disc.stop()
            disc = None
        if redis is not None:
            redis.stop()
            redis = None
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *a: (cleanup(), sys.exit(1)))
    try:
        print("machine: %s" % machine())
        stub_dir = os.path.join(tmp, "stubs")
        os.makedirs(stub_dir)
        gen_stubs(stub_dir)
        pb, pbg = import_stubs(stub_dir)
        import grpc
        redis = Redis(os.path.join(tmp, "redis"))
        disc = Discovery(binary, redis.url, tmp)
        ch = grpc.insecure_channel(disc.address)
        grpc.channel_ready_future(ch).result(timeout=15)
        stub = pbg.DiscoveryStub(ch)
        rate = args.instances / args.interval
        print("load: %d instances, one heartbeat each per %.1f s = %.0f heartbeats/s, "
              "TTL %d s, %d sender processes" % (args.instances, args.interval, rate, args.ttl,
                                                 args.senders))

        c0, t0 = cpu_seconds(disc.proc.pid), time.monotonic()
        leases = register_all(stub, pb, args.instances, args.ttl)
        reg_s, reg_cpu = time.monotonic() - t0, cpu_seconds(disc.proc.pid) - c0
        print("register: %d in %.2f s (%.0f/s), pf-discovery cpu %.2f s (%.0f us each)"
              % (args.instances, reg_s, args.instances / reg_s, reg_cpu,
                 reg_cpu / args.instances * 1e6))

        ctx = multiprocessing.get_context("spawn")
        start_at = time.time() + 2.0
        window_from = start_at + args.interval  # one full interval of warm-up
        stop_at = window_from + args.duration
        pipes = []
        for k in range(args.senders):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=sender, args=(stub_dir, disc.address,
                                                 leases[k::args.senders], args.interval,
                                                 start_at, stop_at, child))
            p.start()
            procs.append(p)
            parent.send(window_from)
            pipes.append(parent)
        while time.time() < window_from:
            time.sleep(0.005)
        s0 = redis.commandstats()
        d0, r0, w0 = cpu_seconds(disc.proc.pid), cpu_seconds(redis.pid), time.monotonic()
        while time.time() < stop_at:
            time.sleep(0.005)
        d1, r1, w1 = cpu_seconds(disc.proc.pid), cpu_seconds(redis.pid), time.monotonic()
        s1 = redis.commandstats()
        results = [p.recv() for p in pipes]
        for p in procs:
            p.join(60)

        ok = sum(r["ok"] for r in results)
        failed = sum(r["failed"] for r in results)
        not_found = sum(r["not_found"] for r in results)
        lat = sorted(x for r in results for x in r["lat"])
        wall = w1 - w0
        disc_core = (d1 - d0) / wall * 100
        redis_core = (r1 - r0) / wall * 100
        delta = {k: s1.get(k, 0) - s0.get(k, 0) for k in set(s0) | set(s1)}
        delta = {k: v for k, v in delta.items() if v > 0 and k not in ("info",)}
        trips = sum(v for k, v in delta.items() if k not in SCRIPT_INNER)
        inner = sum(v for k, v in delta.items() if k in SCRIPT_INNER)

        print("window: %.1f s, heartbeats answered OK %d (%.0f/s), failed %d (NOT_FOUND %d), "
              "latency p50 %.2f ms p99 %.2f ms max %.2f ms"
              % (wall, ok, ok / wall, failed, not_found, pct(lat, 50), pct(lat, 99),
                 lat[-1] if lat else float("nan")))
        print("pf-discovery cpu: %.2f s in %.1f s = %.1f %% of one core (%.0f us per heartbeat)"
              "  target < 10 %%: %s" % (d1 - d0, wall, disc_core, (d1 - d0) / max(ok, 1) * 1e6,
                                        "met" if disc_core < 10 else "NOT met"))
        print("redis round trips: %d top-level commands / %d heartbeats = %.3f per heartbeat"
              "  target 1: %s" % (trips, ok, trips / max(ok, 1),
                                  "met" if trips / max(ok, 1) < 1.05 else "NOT met"))
        print("redis commands incl. inside scripts: %d = %.2f per heartbeat; redis cpu %.1f %% "
              "of one core" % (trips + inner, (trips + inner) / max(ok, 1), redis_core))
        print("commandstats delta in the window:")
        for k, v in sorted(delta.items(), key=lambda kv: -kv[1]):
            print("  %-14s %9d  %.3f per heartbeat%s" % (k, v, v / max(ok, 1),
                                                         " (inside scripts)"
                                                         if k in SCRIPT_INNER else ""))
        listed = stub.List(pb.ListInstancesRequest(kind=pb.INSTANCE_KIND_AGENT), timeout=60)
        print("still registered after the window: %d of %d" % (len(listed.instances),
                                                               args.instances))
        ch.close()
        if failed:
            raise BenchError("%d heartbeats failed" % failed)
        rc = disc.stop()
        disc = None
        if rc != 0:
            raise BenchError("pf-discovery exited %s" % rc)
        return 0
    except BenchError as e:
        print("discovery_bench: %s" % e, file=sys.stderr)
        return 1
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
