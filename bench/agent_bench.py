#!/usr/bin/python3
"""agent_bench: pf-agent benchmarks of issue 4. A benchmark, not a test: it
prints numbers, each with its target and "met" / "NOT met".

  footprint  One pf-agent --driver marlin printing a long gcode file to the
             virtual printer (tests/vprinter) over a pseudo-terminal at 115200
             baud, fed by the real pf-scheduler and pf-files: RSS (VmRSS) and
             CPU (utime + stime) sampled every second over --sample seconds.
             Targets: RSS <= 10 MB, CPU < 1 % of a core. A pty has no baud
             rate, so by default the bench puts a relay between the agent and
             vprinter that paces both directions at 115200 baud (10 bits a
             byte), like a real USB-serial link; --serial direct (or both)
             also measures the agent against the bare pty, which streams as
             fast as the two processes can go (a worst case, not a printer).
  scale      One pf-agent hosting --sim-printers N against one pf-scheduler:
             the scheduler's CPU at 1 Hz telemetry and its RSS per connected
             printer ((RSS with N) - (RSS with 0)) / N, targets < 10 % of a
             core and <= 32 KiB per stream; then jobs are queued and the sim
             printers print, and the dispatch latency (printer ready ->
             StartPrint sent) is read from the scheduler's histogram
             printfarm_scheduler_dispatch_latency_seconds: p50/p99, target p99
             <= 25 ms (the histogram has a bucket at exactly 25 ms, so the
             share of dispatches within 25 ms is exact).

Shares the plumbing of sched_bench.py (PostgreSQL/Redis from tests/harness,
pf-files, pf-scheduler, cleanup of every process and of the temp dir).

Usage: bench/run_agent_bench.sh [--only footprint|scale] [--sim-printers 1000] ...
"""

import argparse
import os
import random
import re
import resource
import select
import signal
import statistics
import sys
import termios
import time
import tty

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sched_bench as sb  # noqa: E402

REPO = sb.REPO
MB = 10 * 1024 * 1024  # "10 MB" read as 10 MiB


# --------------------------------------------------------------------------
# a serial-speed relay between two ptys (runs as its own process)
# --------------------------------------------------------------------------

def relay_main(peer_path, baud):
    """Opens a new pty pair, prints its slave path, and copies bytes between
    its master and `peer_path` (vprinter's pty slave), each direction paced at
    baud/10 bytes per second. Exits on SIGTERM or when vprinter goes away."""
    rate = baud / 10.0
    master, slave = os.openpty()
    tty.setraw(slave)  # until the agent sets its own modes
    peer = os.open(peer_path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(peer)
    attrs = termios.tcgetattr(peer)
    attrs[4] = attrs[5] = termios.B115200
    termios.tcsetattr(peer, termios.TCSANOW, attrs)
    print(os.ttyname(slave), flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    # per direction: bytes waiting and when the line is free again
    pend = {master: bytearray(), peer: bytearray()}  # keyed by the fd to write to
    free_at = {master: 0.0, peer: 0.0}
    moved = {master: 0, peer: 0}
    chunk = 16
    stats_path = os.environ.get("RELAY_STATS")
    last_stats = 0.0
    while True:
        now = time.monotonic()
        timeout = 1.0
        for fd, buf in pend.items():
            if buf:
                timeout = min(timeout, max(0.0, free_at[fd] - now))
        r, _, _ = select.select([master, peer], [], [], timeout)
        for fd in r:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the other side is closed for now
                data = b""
                if fd == peer:
                    return
                time.sleep(0.01)
            if data:
                pend[peer if fd == master else master] += data
        now = time.monotonic()
        for fd, buf in pend.items():
            while buf and free_at[fd] <= now:
                n = min(chunk, len(buf))
                try:
                    os.write(fd, bytes(buf[:n]))
                except OSError:
                    pass
                del buf[:n]
                moved[fd] += n
                free_at[fd] = max(free_at[fd], now) + n / rate
        if stats_path and now - last_stats >= 0.5:
            last_stats = now
            with open(stats_path + ".tmp", "w") as f:
                f.write("%d %d\n" % (moved[peer], moved[master]))
            os.replace(stats_path + ".tmp", stats_path)


def relay_stats(path):
    try:
        with open(path) as f:
            a, b = f.read().split()
            return int(a), int(b)
    except (OSError, ValueError):
        return 0, 0


# --------------------------------------------------------------------------
# 3. footprint of one marlin agent
# --------------------------------------------------------------------------

def make_gcode(lines):
    rnd = random.Random(7)
    out = ["; generated by agent_bench: a long print of small moves",
           "; estimated printing time (normal mode) = 10h 0m 0s",
           "M140 S60", "M104 S200", "G28", "G90", "M82", "G92 E0"]
    e = 0.0
    for i in range(lines):
        e += 0.0213
        out.append("G1 X%.3f Y%.3f E%.5f F1800" % (rnd.uniform(10, 200), rnd.uniform(10, 200), e))
    return ("\n".join(out) + "\n").encode()


def vprinter_path(bench):
    p = os.path.join(bench.build_dir, "tests", "vprinter", "vprinter")
    if not os.access(p, os.X_OK):
        raise sb.BenchError("%s not built" % p)
    return p


def read_first_line(proc, timeout=10):
    fd = proc.p.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not proc.alive():
            raise sb.BenchError("%s printed no pty path" % proc.name)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 256)
            if not chunk:
                raise sb.BenchError("%s closed stdout" % proc.name)
            buf += chunk
    return buf.split(b"\n", 1)[0].decode().strip()


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def footprint_one(bench, args, farm, mode):
    files, sched, bundle, prof = farm
    tag = "fp-" + mode
    vp = sb.Proc(bench, tag + "-vprinter", [vprinter_path(bench)], stdout_pipe=True)
    port = read_first_line(vp)
    relay = None
    stats_path = os.path.join(bench.dir, tag + "-relay.stats")
    if mode == "paced":
        relay = sb.Proc(bench, tag + "-relay", [sys.executable, os.path.abspath(__file__),
                                                "--relay", port, str(args.baud)],
                        env={"RELAY_STATS": stats_path}, stdout_pipe=True)
        port = read_first_line(relay)
    state = os.path.join(bench.dir, tag + "-state")
    agent = sb.Proc(bench, tag + "-agent", [
        bench.binary("agent"), "--driver", "marlin", "--serial-port", port,
        "--baud", str(args.baud), "--printer-id", tag, "--profile", prof,
        "--scheduler", sched.address, "--files", files.address, "--state-dir", state,
        "--admin-listen", "127.0.0.1:0", "--log-level", "info"] + args.agent_arg,
        env=dict(e.split("=", 1) for e in args.agent_env))
    # the job for this printer only: constraint on the printer label is not
    # needed, the profile is shared but only one marlin agent runs at a time
    ch = sb.channel(sched.address)
    st = sb.pb_grpc.SchedulerStub(ch)
    job = st.SubmitJob(sb.pb.SubmitJobRequest(bundle=sb.common_pb2.Digest(sha256=bundle),
                                              count=1, name=tag), timeout=15).job
    # printing: vprinter has taken numbered lines (its stderr logs each one)
    deadline = time.monotonic() + 120
    while count_lines(vp.log_path) < 200:
        if time.monotonic() > deadline or not agent.alive():
            raise sb.BenchError("%s: the print did not start:\n%s" % (tag, agent.log()[-3000:]))
        time.sleep(0.2)
    time.sleep(args.settle)
    t0 = time.monotonic()
    c0 = agent.cpu()
    v0 = vp.cpu()
    l0 = count_lines(vp.log_path)
    r0 = relay_stats(stats_path)
    rss = []
    lines = [l0]
    while time.monotonic() - t0 < args.sample:
        time.sleep(1.0)
        rss.append(agent.rss_kib())
        lines.append(count_lines(vp.log_path))
        if not agent.alive():
            raise sb.BenchError("%s: pf-agent exited:\n%s" % (tag, agent.log()[-3000:]))
    t1 = time.monotonic()
    c1 = agent.cpu()
    v1 = vp.cpu()
    l1 = count_lines(vp.log_path)
    r1 = relay_stats(stats_path)
    smaps = sb.smaps_breakdown(agent.pid)
    status = {k: sb.proc_status_field(agent.pid, k) for k in
              ("VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads", "VmSize")}
    stalled = sum(1 for a, b in zip(lines, lines[1:]) if b == a)
    res = {"stalled_s": stalled, "rss_growth": (rss[-1] - rss[0]) / max(1.0, len(rss) - 1), "mode": mode, "cpu_pct": (c1 - c0) / (t1 - t0) * 100.0,
           "vprinter_cpu_pct": (v1 - v0) / (t1 - t0) * 100.0,
           "rss_max": max(rss), "rss_mean": statistics.mean(rss), "rss_min": min(rss),
           "lines_per_s": (l1 - l0) / (t1 - t0), "smaps": smaps, "seconds": t1 - t0, "status": status,
           "bytes_per_s": ((r1[0] - r0[0]) / (t1 - t0), (r1[1] - r0[1]) / (t1 - t0))}
    # stop this printer's print and everything of this mode
    try:
        st.CancelJob(sb.pb.CancelJobRequest(id=job.id, reason="bench done", cancel_running=True),
                     timeout=15)
    except sb.grpc.RpcError:
        pass
    ch.close()
    time.sleep(0.5)
    agent.stop()
    if relay:
        relay.stop()
    vp.stop()
    return res


def bench_footprint(bench, args):
    modes = ["paced", "direct"] if args.serial == "both" else [args.serial]
    print("\n== 3. pf-agent footprint, marlin driver printing to tests/vprinter over a pty "
          "(%d baud, sampled every 1 s for %.0f s) ==" % (args.baud, args.sample))
    files = bench.start_files("fp-files")
    sched = bench.start_scheduler("fp-sched", bench.new_database("footprint"),
                                  bench.new_redis_url(), files)
    sb.wait_leader([sched])
    prof = "marlin-bench"
    data = make_gcode(args.gcode_lines)
    bundle = sb.put_bundle(files.address, prof, data, name="long")
    print("  gcode: %d lines, %.1f MiB" % (args.gcode_lines, len(data) / 1048576.0))
    out = []
    for mode in modes:
        r = footprint_one(bench, args, (files, sched, bundle, prof), mode)
        out.append(r)
        st = r["status"]
        print("  %s: %s" % (mode, "relay paced at %d baud between pf-agent and vprinter "
                                  "(%.0f B/s to the printer, %.0f B/s back)"
                            % ((args.baud,) + r["bytes_per_s"]) if mode == "paced"
                            else "bare pty, no pacing (as fast as both processes go)"))
        print("    lines acknowledged by the printer: %.0f /s%s" % (
            r["lines_per_s"], "" if not r["stalled_s"] else
            "; WARNING: no line taken in %d of the 1-s samples (print ended or stalled: raise "
            "--gcode-lines)" % r["stalled_s"]))
        print("    pf-agent RSS: max %d KiB (%.2f MiB), mean %d KiB; VmHWM %s; RssAnon %s, "
              "RssFile %s, RssShmem %s; threads %s; VmSize %s"
              % (r["rss_max"], r["rss_max"] / 1024.0, r["rss_mean"], st["VmHWM"], st["RssAnon"],
                 st["RssFile"], st["RssShmem"], st["Threads"], st["VmSize"]))
        print("    RSS growth over the window: %+.1f KiB/s (first sample %d KiB, last %d KiB)"
              % (r["rss_growth"], r["rss_min"] if r["rss_growth"] >= 0 else r["rss_max"],
                 r["rss_max"] if r["rss_growth"] >= 0 else r["rss_min"]))
        print("    RSS by mapping (KiB, of which anonymous): " + ", ".join(
            "%s %d/%d" % (name, rss_, anon) for name, rss_, anon in r["smaps"]))
        print("    pf-agent CPU: %.2f %% of a core over %.1f s (vprinter: %.2f %%)"
              % (r["cpu_pct"], r["seconds"], r["vprinter_cpu_pct"]))
    print()
    for r in out:
        print("footprint (%s): RSS max %.2f MiB  target <= 10 MB: %s;  CPU %.2f %% of a core  "
              "target < 1 %%: %s" % (r["mode"], r["rss_max"] / 1024.0,
                                     sb.met(r["rss_max"] * 1024 <= MB), r["cpu_pct"],
                                     sb.met(r["cpu_pct"] < 1.0)))
    return out


# --------------------------------------------------------------------------
# 4. scale: one pf-agent with N simulated printers against one scheduler
# --------------------------------------------------------------------------

def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_window(proc, seconds, threads=False):
    c0 = proc.cpu()
    th0 = sb.thread_cpu(proc.pid) if threads else None
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    c1 = proc.cpu()
    th = sb.thread_cpu_delta(th0, sb.thread_cpu(proc.pid)) if threads else None
    return (c1 - c0) / (t1 - t0) * 100.0, th


def agent_side_latency(log_text, w0, w1):
    """From pf-agent's log: per printer, its BedCleared (logged when queued to
    send) -> its next start_print (logged on receipt); StartPrints received in
    the wall-clock window [w0, w1). Returns sorted seconds."""
    last_clear = {}
    out = []
    for line in log_text.splitlines():
        if "event=bed_cleared " not in line and "event=start_print " not in line:
            continue
        t = sb.parse_ts(line)
        m = re.search(r"\bprinter=(\S+)", line)
        if t is None or not m:
            continue
        pid = m.group(1)
        if "event=bed_cleared " in line:
            last_clear[pid] = t
        elif pid in last_clear:
            if w0 <= t < w1:
                out.append(t - last_clear[pid])
            del last_clear[pid]
    return sorted(out)


def bench_scale(bench, args):
    N = args.sim_printers
    print("\n== 4. scale: one pf-agent with --sim-printers %d against one pf-scheduler ==" % N)
    _raise_nofile()
    print("  RLIMIT_NOFILE: %s (soft, hard) for every process started here"
          % (resource.getrlimit(resource.RLIMIT_NOFILE),))
    files = bench.start_files("sc-files")
    sched = bench.start_scheduler("sc-sched", bench.new_database("scale"), bench.new_redis_url(),
                                  files, args.scheduler_arg)
    sb.wait_leader([sched])
    if args.pg_stat_statements:
        bench.psql("scale", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    time.sleep(args.settle)
    rss0 = sched.rss_kib()
    cpu0, _ = cpu_window(sched, args.idle_window)
    rss0b = sched.rss_kib()
    print("  scheduler with 0 printers: RSS %d KiB (then %d KiB), CPU %.2f %% of a core over "
          "%.0f s" % (rss0, rss0b, cpu0, args.idle_window))

    prof = "sim-bench"
    state = os.path.join(bench.dir, "sc-agent-state")
    t_start = time.monotonic()
    agent = sb.Proc(bench, "sc-agent", [
        bench.binary("agent"), "--driver", "sim", "--sim-printers", str(N),
        "--printer-id", "sim", "--profile", prof, "--sim-speed", str(args.sim_speed),
        "--sim-heat-seconds", "0", "--scheduler", sched.address, "--files", files.address,
        "--state-dir", state, "--admin-listen", "127.0.0.1:0", "--log-level", "info"])
    # all N streams welcomed (the scheduler's gauge)
    deadline = time.monotonic() + args.connect_timeout
    n = 0
    while True:
        try:
            n = int(sb.metric_value(sched.metrics(), "printfarm_scheduler_agent_streams") or 0)
        except OSError:
            n = 0
        if n >= N:
            break
        if not agent.alive():
            raise sb.BenchError("pf-agent exited (%s):\n%s" % (agent.p.returncode,
                                                              agent.log()[-3000:]))
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    t_conn = time.monotonic() - t_start
    print("  %d of %d printers connected %.1f s after pf-agent started" % (n, N, t_conn))
    if n < N:
        print("  NOT all printers connected within %.0f s; measuring with %d" %
              (args.connect_timeout, n))
    time.sleep(args.settle)
    m0 = sb.metric_value(sched.metrics(), "printfarm_scheduler_agent_messages_total") or 0
    t0 = time.monotonic()
    a0 = agent.cpu()
    cpu1, th = cpu_window(sched, args.window, threads=True)
    a1 = agent.cpu()
    t1 = time.monotonic()
    m1 = sb.metric_value(sched.metrics(), "printfarm_scheduler_agent_messages_total") or 0
    rss1 = sched.rss_kib()
    per = (rss1 - rss0b) / float(n) if n else float("nan")
    agent_rss = agent.rss_kib()
    agent_threads = sb.proc_status_field(agent.pid, "Threads")
    sched_threads = sb.proc_status_field(sched.pid, "Threads")
    print("  telemetry: %.0f agent messages/s reached the scheduler (%d printers)"
          % ((m1 - m0) / (t1 - t0), n))
    print("  scheduler with %d printers: CPU %.2f %% of a core over %.0f s; RSS %d KiB "
          "(+%d KiB = %.1f KiB per stream); threads %s"
          % (n, cpu1, args.window, rss1, rss1 - rss0b, per, sched_threads))
    rows, nth = th
    print("    busiest scheduler threads of %d (tid cpu%%): " % nth + ", ".join(
        "%d %.1f" % (tid, c / args.window * 100) for tid, comm, c in rows if c > 0))
    print("  pf-agent hosting %d printers: CPU %.1f %% of a core, RSS %d KiB (%.1f KiB per "
          "printer), threads %s" % (n, (a1 - a0) / (t1 - t0) * 100, agent_rss,
                                    agent_rss / float(max(n, 1)), agent_threads))

    # dispatch latency: queue jobs of varied print times so printers free up
    # at different moments, not in waves
    rnd = random.Random(11)
    bundles = []
    for i in range(args.bundles):
        est = rnd.randint(args.print_min, args.print_max)
        g = b"; estimated printing time (normal mode) = %ds\nG28\n; bundle %d\n" % (est, i)
        bundles.append(sb.put_bundle(files.address, prof, g, name="sim-%d" % i,
                                     estimated_seconds=est))
    ch = sb.channel(sched.address)
    st = sb.pb_grpc.SchedulerStub(ch)
    h0 = sb.histogram(sched.metrics(), "printfarm_scheduler_dispatch_latency_seconds")
    d0 = sb.metric_value(sched.metrics(), "printfarm_scheduler_attempts_dispatched_total") or 0
    t_sub = time.monotonic()
    jobs = 0
    copies = 0
    per_job = args.copies_per_job or max(1, -(-n // args.bundles))
    while copies < (args.copies_total or 5 * n):
        st.SubmitJob(sb.pb.SubmitJobRequest(bundle=sb.common_pb2.Digest(
            sha256=bundles[jobs % len(bundles)]), count=per_job,
            name="scale-%d" % jobs), timeout=15)
        jobs += 1
        copies += per_job
    ch.close()
    # the first burst: every printer is ready at once
    deadline = time.monotonic() + 60
    while True:
        d = (sb.metric_value(sched.metrics(), "printfarm_scheduler_attempts_dispatched_total")
             or 0) - d0
        if d >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    t_burst = time.monotonic() - t_sub
    h1 = sb.histogram(sched.metrics(), "printfarm_scheduler_dispatch_latency_seconds")
    bk, _, cnt = sb.hist_delta(h0, h1)
    print("  burst: %d jobs (%d copies) submitted; %d StartPrints sent within %.1f s of the first "
          "submit; latency p50 %.1f ms, p99 %.1f ms (includes waiting for the submits)"
          % (jobs, copies, d, t_burst, sb.hist_quantile(bk, 0.5) * 1000,
             sb.hist_quantile(bk, 0.99) * 1000))
    # steady state: wait until printers of the burst have finished and are
    # being given their next prints, then measure a window
    deadline = time.monotonic() + args.print_max * args.sim_speed + 20
    while time.monotonic() < deadline:
        d = (sb.metric_value(sched.metrics(), "printfarm_scheduler_attempts_dispatched_total")
             or 0) - d0
        if d >= n + max(5, n // 20):
            break
        time.sleep(0.2)
    print("  steady state from %.1f s after the first submit (%d dispatched so far)"
          % (time.monotonic() - t_sub, d))
    text = sched.metrics()
    h2 = sb.histogram(text, "printfarm_scheduler_dispatch_latency_seconds")
    r2 = sb.histogram(text, "printfarm_scheduler_dispatch_round_seconds")
    d2 = sb.metric_value(text, "printfarm_scheduler_attempts_dispatched_total") or 0
    if args.pg_stat_statements:
        bench.psql("scale", "SELECT pg_stat_statements_reset()")
    w0 = time.time()
    pcpu, th = cpu_window(sched, args.dispatch_window, threads=True)
    w1 = time.time()
    text = sched.metrics()
    h3 = sb.histogram(text, "printfarm_scheduler_dispatch_latency_seconds")
    r3 = sb.histogram(text, "printfarm_scheduler_dispatch_round_seconds")
    d3 = sb.metric_value(text, "printfarm_scheduler_attempts_dispatched_total") or 0
    rb, rsum, rcnt = sb.hist_delta(r2, r3)
    bk, _, cnt = sb.hist_delta(h2, h3)
    within = bk.get(0.025, 0.0) / cnt if cnt else float("nan")
    p50, p99 = sb.hist_quantile(bk, 0.5), sb.hist_quantile(bk, 0.99)
    streams = sb.metric_value(text, "printfarm_scheduler_agent_streams") or 0
    print("  steady state over %.0f s: %.1f dispatches/s, scheduler CPU %.1f %% of a core, "
          "%d streams" % (args.dispatch_window, (d3 - d2) / args.dispatch_window, pcpu, streams))
    print("    dispatch latency (histogram): p50 %.1f ms, p99 %.1f ms, %.1f %% within 25 ms (n=%d)"
          % (p50 * 1000, p99 * 1000, within * 100, cnt))
    al = agent_side_latency(agent.log(), w0, w1)
    if al:
        print("    at the agent (BedCleared queued -> StartPrint received, log ts in ms): p50 %.0f ms, "
              "p99 %.0f ms, max %.0f ms (n=%d)" % (al[len(al) // 2] * 1000,
                                                   al[min(len(al) - 1, int(0.99 * len(al)))] * 1000,
                                                   al[-1] * 1000, len(al)))
    print("    dispatch rounds: %.1f /s, duration mean %.1f ms, p50 %.1f ms, p99 %.1f ms (n=%d)"
          % (rcnt / args.dispatch_window, rsum / rcnt * 1000 if rcnt else float("nan"),
             sb.hist_quantile(rb, 0.5) * 1000, sb.hist_quantile(rb, 0.99) * 1000, rcnt))
    print("    buckets (le: count): " + ", ".join(
        "%g: %d" % (le, c) for le, c in sorted(bk.items()) if c > 0))
    rows, nth = th
    print("    busiest scheduler threads of %d (tid cpu%%): " % nth + ", ".join(
        "%d %.1f" % (tid, c / args.dispatch_window * 100) for tid, comm, c in rows if c > 0))
    if args.pg_stat_statements:
        sb.print_pgss(sb.pgss_top(bench, "scale"))
    print()
    print("scale, %d printers on one stream each: scheduler CPU at 1 Hz telemetry %.2f %% of a "
          "core  target < 10 %%: %s" % (n, cpu1, sb.met(cpu1 < 10.0)))
    print("scale: scheduler memory %.1f KiB per stream  target <= 32 KiB: %s"
          % (per, sb.met(per <= 32.0)))
    print("scale: dispatch latency p50 %.1f ms  p99 %.1f ms  target p99 <= 25 ms: %s"
          % (p50 * 1000, p99 * 1000, sb.met(cnt > 0 and p99 <= 0.025)))
    if n < N:
        print("scale: only %d of %d printers connected: see above" % (n, N))
    agent.stop()
    return {"n": n, "cpu": cpu1, "per_stream_kib": per, "p50": p50, "p99": p99}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"))
    ap.add_argument("--only", choices=["footprint", "scale"], action="append")
    ap.add_argument("--serial", choices=["paced", "direct", "both"], default="both",
                    help="footprint: relay paced at --baud, bare pty, or both (default)")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--gcode-lines", type=int, default=1500000,
                    help="footprint: lines of the gcode printed (the bare pty takes ~30,000/s)")
    ap.add_argument("--agent-arg", action="append", default=[],
                    help="footprint: extra pf-agent flag (repeatable; later flags win, e.g. "
                         "--agent-arg=--admin-listen=)")
    ap.add_argument("--agent-env", action="append", default=[], metavar="KEY=VALUE",
                    help="footprint: environment of pf-agent (e.g. MALLOC_ARENA_MAX=1)")
    ap.add_argument("--sample", type=float, default=30, help="footprint: seconds sampled")
    ap.add_argument("--settle", type=float, default=5,
                    help="seconds between reaching a state and measuring it")
    ap.add_argument("--sim-printers", type=int, default=1000)
    ap.add_argument("--sim-speed", type=float, default=0.1,
                    help="scale: sim time factor (print time = estimate x this)")
    ap.add_argument("--print-min", type=int, default=150,
                    help="scale: shortest gcode estimate (s) of the jobs queued")
    ap.add_argument("--print-max", type=int, default=450)
    ap.add_argument("--bundles", type=int, default=20)
    ap.add_argument("--copies-per-job", type=int, default=0,
                    help="scale: copies per job (default: printers / bundles, so the first "
                         "burst spreads over every bundle's print time)")
    ap.add_argument("--copies-total", type=int, default=0,
                    help="scale: copies queued in all (default 5 x printers)")
    ap.add_argument("--connect-timeout", type=float, default=120)
    ap.add_argument("--idle-window", type=float, default=10,
                    help="scale: seconds of scheduler CPU measured with 0 printers")
    ap.add_argument("--window", type=float, default=30,
                    help="scale: seconds of scheduler CPU measured at 1 Hz telemetry")
    ap.add_argument("--dispatch-window", type=float, default=30)
    ap.add_argument("--scheduler-arg", action="append", default=[])
    ap.add_argument("--pg-stat-statements", action="store_true",
                    help="scale, profile: print the scheduler's top statements in the "
                         "steady-state window (adds overhead; not for the recorded figures)")
    ap.add_argument("--time-limit", type=float, default=900)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--relay", nargs=2, metavar=("PTY", "BAUD"), help=argparse.SUPPRESS)
    return ap.parse_args()


def main():
    args = parse_args()
    if args.relay:
        relay_main(args.relay[0], int(args.relay[1]))
        return 0
    sb.install_signal_handlers(args.time_limit)
    which = args.only or ["footprint", "scale"]
    for line in sb.machine_lines():
        print(line)
    print("command:  %s" % " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]))
    sys.stdout.flush()
    bench = sb.Bench(args.build_dir, keep=args.keep, prefix="pfa-")
    rc = 0
    try:
        sb.stubs(bench)
        bench.start_infra()
        if args.pg_stat_statements:
            bench.enable_pg_stat_statements()
        if "footprint" in which:
            bench_footprint(bench, args)
            sys.stdout.flush()
        if "scale" in which:
            bench_scale(bench, args)
    except (sb.BenchError, sb._Deadline, KeyboardInterrupt) as e:
        print("agent_bench: %s" % e, file=sys.stderr)
        rc = 1
    finally:
        signal.alarm(0)
        bench.stop()
        print("load:     %s (1, 5, 15 min) after the run" % sb.loadavg())
    return rc


if __name__ == "__main__":
    sys.exit(main())
