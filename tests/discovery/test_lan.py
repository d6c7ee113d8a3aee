"""LAN discovery across network namespaces.

Two namespaces made here, joined by a veth pair with addresses assigned only
inside them (198.18.70.1 in "A", 198.18.70.2 in "B"; RFC 2544 test range):
no traffic leaves them. Redis and pf-discovery (beacon on) run in A; the
listener side (pf-beacon-listen, pf-agent) runs in B and must find pf-discovery
by its multicast beacon alone, then connect to it. Skipped, saying why, where
namespaces cannot be created (not root, no iproute2)."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import conftest
from conftest import HARNESS, Server, binary_path

A_ADDR, B_ADDR = "198.18.70.1", "198.18.70.2"
GROUP = "239.255.70.70"
FARM = "farm-a"
DISC_PORT = 7500


def _run(*argv, check=True):
    r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), r.stderr.strip()))
    return r


class Lan:
    def __init__(self, workdir):
        n = os.getpid() % 100000
        self.a, self.b = "pfd-a-%d" % n, "pfd-b-%d" % n
        self.va, self.vb = "pfdva%d" % n, "pfdvb%d" % n
        self.workdir = workdir
        self.made = []
        try:
            for ns in (self.a, self.b):
                _run("ip", "netns", "add", ns)
                self.made.append(ns)
            _run("ip", "-n", self.a, "link", "add", self.va, "type", "veth", "peer", "name",
                 self.vb, "netns", self.b)
            for ns, dev, addr in ((self.a, self.va, A_ADDR), (self.b, self.vb, B_ADDR)):
                _run("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                _run("ip", "-n", ns, "link", "set", dev, "up")
                _run("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        except RuntimeError:
            self.close()
            raise
        self.redis_dir = os.path.join(workdir, "redis")
        self.redis_url = _run("ip", "netns", "exec", self.a, "bash",
                              os.path.join(HARNESS, "redis.sh"), "start", self.redis_dir,
                              "6379").stdout.strip()

    def exec_argv(self, ns, argv):
        return ["ip", "netns", "exec", ns] + list(argv)

    def redis_cli(self, *args):
        return _run(*self.exec_argv(self.a, ["redis-cli", "-p", "6379"] + list(args))).stdout

    def close(self):
        if getattr(self, "redis_dir", None):
            subprocess.run(["bash", os.path.join(HARNESS, "redis.sh"), "stop", self.redis_dir])
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        self.made = []


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("LAN tests need root to create network namespaces (ip netns)")
    if shutil.which("ip") is None:
        pytest.skip("LAN tests need iproute2 ('ip' not found)")
    try:
        net = Lan(str(tmp_path_factory.mktemp("lan")))
    except RuntimeError as e:
        pytest.skip("cannot create network namespaces here: %s" % e)
    yield net
    net.close()


@pytest.fixture(scope="module")
def discovery_in_a(lan, tmp_path_factory):
    """pf-discovery in namespace A on A_ADDR:7500, beaconing farm-a every 200 ms."""
    d = str(tmp_path_factory.mktemp("disc-a"))
    argv = lan.exec_argv(lan.a, conftest.discovery_argv(lan.redis_url, [
        "--listen", "%s:%d" % (A_ADDR, DISC_PORT), "--beacon", "on", "--farm", FARM,
        "--beacon-interval", "200ms", "--beacon-interface", lan.va]))
    srv = Server(argv, d)
    srv.wait_listening()
    yield srv
    srv.stop(expect_exit=0)
    assert "event=beacon_started" in srv.log


def listen(lan, *args, timeout="10s"):
    """Runs pf-beacon-listen in namespace B; returns (exit code, stdout, stderr)."""
    tool = os.path.join(conftest.interop.BUILD_DIR, "tests", "discovery", "pf-beacon-listen")
    if not os.access(tool, os.X_OK):
        pytest.fail("pf-beacon-listen not built (%s)" % tool)
    r = subprocess.run(lan.exec_argv(lan.b, [tool, "--timeout", timeout] + list(args)),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def stats(out):
    m = re.search(r"stats received=(\d+) malformed=(\d+) other_farm=(\d+)", out)
    assert m, out
    return tuple(int(x) for x in m.groups())


def test_beacon_reaches_another_namespace_and_the_listener_connects(lan, discovery_in_a):
    rc, out, err = listen(lan, "--farm", FARM, "--resolve", "discovery")
    assert rc == 0, out + err
    assert "discovery=%s:%d" % (A_ADDR, DISC_PORT) in out
    # It dialed pf-discovery across the link: Resolve names the replica itself.
    assert "resolve discovery=%s:%d" % (A_ADDR, DISC_PORT) in out


def test_a_beacon_for_another_farm_is_ignored(lan, discovery_in_a):
    rc, out, err = listen(lan, "--farm", "farm-z", timeout="1500ms")
    assert rc == 3, "no beacon of farm-z exists, so the wait must time out:\n" + out + err
    received, malformed, other = stats(out)
    assert other >= 2 and malformed == 0, out
    assert "no beacon of farm 'farm-z'" in err


def test_malformed_beacons_do_not_crash_the_listener(lan, discovery_in_a):
    port = "7571"  # no pf-discovery beacons here: only the peer's datagrams
    tool = os.path.join(conftest.interop.BUILD_DIR, "tests", "discovery", "pf-beacon-listen")
    listener = subprocess.Popen(lan.exec_argv(lan.b, [tool, "--farm", FARM, "--port", port,
                                                      "--timeout", "15s"]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # let it join the group
    peer = subprocess.Popen(lan.exec_argv(lan.a, ["/usr/bin/python3",
                                                  os.path.join(conftest.HERE, "lan_peer.py"),
                                                  "send", GROUP, port, A_ADDR, FARM,
                                                  "0.0.0.0:%d" % DISC_PORT]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = listener.communicate(timeout=30)
    finally:
        peer.send_signal(signal.SIGTERM)
        peer.wait(10)
    assert listener.returncode == 0, out + err
    received, malformed, other = stats(out)
    assert malformed >= 50 and other >= 1, out
    # A wildcard host means "the sender's address".
    assert "discovery=%s:%d" % (A_ADDR, DISC_PORT) in out


def test_agent_finds_the_farm_by_beacon(lan, discovery_in_a, tmp_path):
    """pf-agent in B with no scheduler address: beacon -> discovery -> Resolve
    scheduler-leader and files -> Connect to the (stand-in) scheduler in A."""
    agent_bin = binary_path("agent", "PF_AGENT_BIN")
    files_bin = binary_path("files", "PF_FILES_BIN")
    env = dict(os.environ, PYTHONPATH=conftest.interop.STUB_DIR)
    sched = subprocess.Popen(lan.exec_argv(lan.a, ["/usr/bin/python3",
                                                   os.path.join(conftest.HERE, "lan_peer.py"),
                                                   "scheduler", "%s:7400" % A_ADDR]),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    files_dir = tmp_path / "files"
    files_dir.mkdir()
    files = Server(lan.exec_argv(lan.a, [files_bin, "--listen", "%s:0" % A_ADDR,
                                         "--admin-listen", "127.0.0.1:0",
                                         "--data-dir", str(files_dir / "data"),
                                         "--discovery", "%s:%d" % (A_ADDR, DISC_PORT)]),
                   str(files_dir))
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = None
    try:
        assert sched.stdout.readline().startswith("LISTENING"), sched.stderr.read()
        files.wait_listening()
        # The scheduler's leader lease, as pf-scheduler writes it.
        lan.redis_cli("SET", "printfarm:scheduler:leader", "%s:7400|lan-fake" % A_ADDR)
        conftest.wait_until(lambda: "event=discovery_registered" in files.log, 10,
                            "pf-files to register with discovery")
        agent = Server(lan.exec_argv(lan.b, [
            agent_bin, "--scheduler", "", "--discovery-beacon", "--farm", FARM,
            "--printer-id", "lan-printer", "--state-dir", str(agent_dir / "state"),
            "--admin-listen", "%s:0" % B_ADDR, "--log-level", "debug",
            "--sim-speed", "0.01", "--reconnect-max", "1s"]), str(agent_dir))
        conftest.wait_until(lambda: "event=beacon_received" in agent.log, 15,
                            "the agent to hear the beacon")
        line = sched.stdout.readline()
        assert line.strip() == "HELLO lan-printer", line + agent.log
        assert re.search(r"files=%s:\d+" % re.escape(A_ADDR), agent.log), agent.log
        # The agent registered itself too: resolvable from anywhere on the link.
        conftest.wait_until(lambda: "event=discovery_registered" in agent.log, 10,
                            "the agent to register")
        rc, out, err = listen(lan, "--farm", FARM, "--resolve", "agent/lan-printer")
        assert rc == 0 and "resolve agent/lan-printer=%s:" % B_ADDR in out, out + err
    finally:
        if agent is not None:
            agent.stop(expect_exit=0)
        files.stop(expect_exit=0)
        sched.send_signal(signal.SIGTERM)
        sched.wait(10)
        sched.stdout.close()
        sched.stderr.close()
