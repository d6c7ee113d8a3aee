"""pf-discovery against real Redis: registration, TTLs, replicas, Watch,
probing, Resolve, bad input, tokens, and Redis going away and coming back."""

import http.server
import threading
import time

import grpc
import pytest

from conftest import (RPC_TIMEOUT, Watch, closed_port, dgrpc, dpb, expect_code, instance, listed,
                      register, wait_until)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
PROBE_INTERVAL = 0.5  # discovery_factory's --probe-interval

ADDED = dpb.INSTANCE_EVENT_TYPE_ADDED
CHANGED = dpb.INSTANCE_EVENT_TYPE_CHANGED
REMOVED = dpb.INSTANCE_EVENT_TYPE_REMOVED


def heartbeat(stub, lease):
    return stub.Heartbeat(dpb.HeartbeatRequest(lease_id=lease), timeout=RPC_TIMEOUT)


def deregister(stub, lease):
    return stub.Deregister(dpb.DeregisterRequest(lease_id=lease), timeout=RPC_TIMEOUT)


def resolve(stub, role, healthy_only=False):
    return stub.Resolve(dpb.ResolveRequest(role=role, healthy_only=healthy_only),
                        timeout=RPC_TIMEOUT)


def health_of(stub, kind, id):
    s = listed(stub, kind).get((kind, id))
    return s.health if s is not None else None


# --------------------------------------------------------------------------
# registration and leases
# --------------------------------------------------------------------------

def test_register_list_filters_and_order(redis_url, discovery_factory):
    st = discovery_factory(redis_url).stub
    faddr = "127.0.0.1:%d" % closed_port()
    r = register(st, "files", "files-1", faddr, ttl=30, labels={"zone": "a"}, version="9.9")
    assert r.lease_id and r.ttl_seconds == 30 and r.heartbeat_interval_seconds == 10
    register(st, "scheduler", "s1", "127.0.0.1:7400", labels={"zone": "b", "probe": "off"})
    register(st, "agent", "printer-9", "127.0.0.1:9501", labels={"probe": "off"})

    everything = listed(st)
    assert {("files", "files-1"), ("scheduler", "s1"), ("agent", "printer-9")} <= set(everything)
    assert any(k == "discovery" for k, _ in everything), "the replica registers itself"
    s = everything[("files", "files-1")]
    assert s.instance.address == faddr and s.instance.version == "9.9"
    assert [(l.key, l.value) for l in s.instance.labels] == [("zone", "a")]
    assert s.expires_unix_ms - s.last_seen_unix_ms == 30000
    assert abs(s.registered_unix_ms - time.time() * 1000) < 60000

    assert set(listed(st, "files")) == {("files", "files-1")}
    assert set(listed(st, labels={"zone": "b"})) == {("scheduler", "s1")}
    assert set(listed(st, labels={"zone": ""})) == {("files", "files-1"), ("scheduler", "s1")}
    assert listed(st, labels={"zone": "c"}) == {}

    kinds = [(s.instance.kind, s.instance.id) for s in
             st.List(dpb.ListInstancesRequest(), timeout=RPC_TIMEOUT).instances]
    assert kinds == sorted(kinds), "ordered by kind, then id"

    assert register(st, "web", "w1", "127.0.0.1:8080", ttl=0).ttl_seconds == 15


def test_register_again_replaces_the_lease(redis_url, discovery_factory):
    st = discovery_factory(redis_url).stub
    old = register(st, "files", "f", "127.0.0.1:%d" % closed_port())
    new = register(st, "files", "f", "127.0.0.1:%d" % closed_port())
    assert old.lease_id != new.lease_id
    assert "register again" in expect_code(NOT_FOUND, heartbeat, st, old.lease_id)
    assert heartbeat(st, new.lease_id).ttl_seconds == 15
    deregister(st, old.lease_id)  # a stale lease removes nothing
    assert ("files", "f") in listed(st, "files")


def test_ttl_expiry_removes_an_entry(redis_url, discovery_factory):
    st = discovery_factory(redis_url).stub
    t0 = time.monotonic()
    r = register(st, "files", "short", "127.0.0.1:%d" % closed_port(), ttl=1)
    assert ("files", "short") in listed(st, "files")
    wait_until(lambda: ("files", "short") not in listed(st, "files"), 5, "the entry to expire")
    assert time.monotonic() - t0 >= 0.9
    assert "register again" in expect_code(NOT_FOUND, heartbeat, st, r.lease_id)


def test_heartbeat_keeps_an_entry(redis_url, discovery_factory):
    st = discovery_factory(redis_url).stub
    r = register(st, "files", "kept", "127.0.0.1:%d" % closed_port(), ttl=2)
    last = 0
    end = time.monotonic() + 5
    while time.monotonic() < end:
        hb = heartbeat(st, r.lease_id)
        assert hb.ttl_seconds == 2 and hb.expires_unix_ms > last
        last = hb.expires_unix_ms
        assert ("files", "kept") in listed(st, "files")
        time.sleep(0.6)
    wait_until(lambda: ("files", "kept") not in listed(st, "files"), 5,
               "the entry to expire once heartbeats stop")


def test_deregister(redis_url, discovery_factory):
    st = discovery_factory(redis_url).stub
    r = register(st, "files", "gone", "127.0.0.1:%d" % closed_port())
    deregister(st, r.lease_id)
    assert ("files", "gone") not in listed(st, "files")
    deregister(st, r.lease_id)  # OK when already gone
    expect_code(NOT_FOUND, heartbeat, st, r.lease_id)


# --------------------------------------------------------------------------
# replicas and Watch
# --------------------------------------------------------------------------

def test_two_replicas_show_the_same_view(redis_url, discovery_factory):
    a, b = discovery_factory(redis_url), discovery_factory(redis_url)
    r = register(a.stub, "files", "shared", "127.0.0.1:%d" % closed_port(), labels={"x": "1"})
    assert listed(b.stub, "files") .keys() == listed(a.stub, "files").keys() == {("files", "shared")}
    assert heartbeat(b.stub, r.lease_id).ttl_seconds == 15  # any replica takes a heartbeat
    both = wait_until(lambda: (lambda x, y: x if len(x) == 2 and set(x) == set(y) else None)(
        listed(a.stub, "discovery"), listed(b.stub, "discovery")), 5, "both replicas listed")
    assert len(both) == 2
    deregister(b.stub, r.lease_id)
    assert ("files", "shared") not in listed(a.stub, "files")
    addrs = sorted(resolve(b.stub, "discovery").addresses)
    assert addrs == sorted([a.address, b.address])


def test_watch_delivers_add_change_remove(redis_url, discovery_factory):
    a, b = discovery_factory(redis_url), discovery_factory(redis_url)
    pre = register(a.stub, "files", "pre", "127.0.0.1:%d" % closed_port(),
                   labels={"probe": "off"})
    w = Watch(b.stub, send_initial=True)
    agents = Watch(a.stub, kind="agent", send_initial=True)
    try:
        i, ev = w.wait(lambda e: e.initial_done, what="the initial snapshot")
        initial = {(e.instance.instance.kind, e.instance.instance.id) for e in w.events[:i + 1]}
        assert (dpb.INSTANCE_KIND_FILES, "pre") in initial
        assert all(e.type == ADDED for e in w.events[:i + 1])
        agents.wait(lambda e: e.initial_done, what="the agents' (empty) snapshot")
        assert len(agents.events) == 1 and not agents.events[0].HasField("instance")

        # Registered on replica a, seen on replica b.
        r = register(a.stub, "files", "w1", "127.0.0.1:4001", labels={"probe": "off"})
        j, ev = w.wait(lambda e: e.type == ADDED and e.instance.instance.id == "w1", start=i + 1)
        assert ev.instance.instance.address == "127.0.0.1:4001"
        # Changed labels: CHANGED with the new state.
        r = register(a.stub, "files", "w1", "127.0.0.1:4001",
                     labels={"probe": "off", "zone": "lab-2"})
        j, ev = w.wait(lambda e: e.type == CHANGED and e.instance.instance.id == "w1", start=j + 1)
        assert {l.key: l.value for l in ev.instance.instance.labels}["zone"] == "lab-2"
        # Deregister: REMOVED with the last known state.
        deregister(b.stub, r.lease_id)
        j, ev = w.wait(lambda e: e.type == REMOVED and e.instance.instance.id == "w1", start=j + 1)
        assert ev.instance.instance.address == "127.0.0.1:4001"
        # Expiry: REMOVED too.
        register(a.stub, "files", "w2", "127.0.0.1:4002", ttl=1, labels={"probe": "off"})
        j, _ = w.wait(lambda e: e.type == ADDED and e.instance.instance.id == "w2", start=j + 1)
        w.wait(lambda e: e.type == REMOVED and e.instance.instance.id == "w2", start=j + 1,
               timeout=6, what="REMOVED after the lease ran out")
        # The agents-only watch saw none of that, but sees an agent.
        register(b.stub, "agent", "p1", "127.0.0.1:4003", labels={"probe": "off"})
        agents.wait(lambda e: e.type == ADDED and e.instance.instance.id == "p1")
        assert all(e.instance.instance.kind == dpb.INSTANCE_KIND_AGENT
                   for e in agents.events[1:])
        # No duplicates: each change exactly once, in order.
        ids = [(e.type, e.instance.instance.id) for e in w.events[i + 1:]
               if e.instance.instance.id in ("w1", "w2")]
        assert ids == [(ADDED, "w1"), (CHANGED, "w1"), (REMOVED, "w1"), (ADDED, "w2"),
                       (REMOVED, "w2")]
    finally:
        w.close()
        agents.close()
    expect_code(INVALID, lambda: list(b.stub.Watch(dpb.WatchInstancesRequest(kind=77),
                                                   timeout=RPC_TIMEOUT)))


def test_watch_ends_with_unavailable_on_shutdown(redis_url, discovery_factory):
    d = discovery_factory(redis_url)
    ch = grpc.insecure_channel(d.address)  # Server.stop closes the ones it made
    w = Watch(dgrpc.DiscoveryStub(ch))
    w.wait(lambda e: e.initial_done)
    d.stop(expect_exit=0)
    code, details = w.wait_closed()
    ch.close()
    assert code == UNAVAILABLE and "shutting down" in details, details


# --------------------------------------------------------------------------
# health probing
# --------------------------------------------------------------------------

class _Status503(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(503 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_prober_marks_a_stopped_instance_unreachable(redis_url, discovery_factory,
                                                     pf_files_factory):
    st = discovery_factory(redis_url).stub
    files = pf_files_factory()
    register(st, "files", "real", files.address)
    register(st, "files", "dead", "127.0.0.1:%d" % closed_port())
    register(st, "files", "admin", "127.0.0.1:%d" % files.ports["admin"],
             labels={"probe": "http"})
    register(st, "files", "unprobed", "127.0.0.1:%d" % closed_port(), labels={"probe": "off"})
    http503 = http.server.HTTPServer(("127.0.0.1", 0), _Status503)
    threading.Thread(target=http503.serve_forever, daemon=True).start()
    try:
        register(st, "web", "sick", "127.0.0.1:%d" % http503.server_address[1],
                 labels={"probe": "http"})
        wait_until(lambda: health_of(st, "files", "real") == dpb.INSTANCE_HEALTH_SERVING, 5,
                   "pf-files to be SERVING")
        wait_until(lambda: health_of(st, "files", "dead") == dpb.INSTANCE_HEALTH_UNREACHABLE, 5,
                   "a closed port to be UNREACHABLE")
        wait_until(lambda: health_of(st, "files", "admin") == dpb.INSTANCE_HEALTH_SERVING, 5,
                   "the HTTP /healthz probe to be SERVING")
        wait_until(lambda: health_of(st, "web", "sick") == dpb.INSTANCE_HEALTH_NOT_SERVING, 5,
                   "a 503 /healthz to be NOT_SERVING")
    finally:
        http503.shutdown()
    s = listed(st, "files")
    assert s[("files", "real")].latency_us > 0 and s[("files", "real")].probe_error == ""
    assert s[("files", "real")].last_probe_unix_ms > 0
    assert s[("files", "dead")].probe_error != ""
    assert s[("files", "unprobed")].health == dpb.INSTANCE_HEALTH_UNKNOWN
    assert "503" in listed(st, "web")[("web", "sick")].probe_error

    w = Watch(st, kind="files", send_initial=False)
    try:
        files.stop(expect_exit=0)  # SIGTERM; returns once the process exited
        t0 = time.monotonic()
        wait_until(lambda: health_of(st, "files", "real") == dpb.INSTANCE_HEALTH_UNREACHABLE,
                   10, "the stopped pf-files to be UNREACHABLE")
        elapsed = time.monotonic() - t0
        # Two intervals, plus slack for a loaded test machine.
        assert elapsed <= 2 * PROBE_INTERVAL + 0.5, "took %.2fs" % elapsed
        w.wait(lambda e: e.type == CHANGED and e.instance.instance.id == "real" and
               e.instance.health == dpb.INSTANCE_HEALTH_UNREACHABLE)
    finally:
        w.close()


def _active(d):
    return d.metric("printfarm_discovery_prober_active") == 1


def test_prober_hand_over_when_the_active_one_is_killed(redis_url, discovery_factory):
    a, b = discovery_factory(redis_url), discovery_factory(redis_url)
    wait_until(lambda: [d for d in (a, b) if _active(d)], 5, "an active prober")
    time.sleep(1.0)
    active = [d for d in (a, b) if _active(d)]
    assert len(active) == 1, "exactly one replica probes"
    survivor = b if active[0] is a else a
    active[0].kill()
    t0 = time.monotonic()
    wait_until(lambda: _active(survivor), 8, "the surviving replica to take the prober lock")
    took = time.monotonic() - t0
    # Lock TTL is max(3 s, 3 intervals) = 3 s.
    assert took <= 4.5, "hand-over took %.1fs" % took
    st = survivor.stub
    register(st, "files", "after", "127.0.0.1:%d" % closed_port())
    wait_until(lambda: health_of(st, "files", "after") == dpb.INSTANCE_HEALTH_UNREACHABLE, 5,
               "the new prober to probe")


def test_prober_lock_is_released_on_clean_shutdown(redis_url, discovery_factory):
    a = discovery_factory(redis_url)
    wait_until(lambda: _active(a), 5, "a to probe")
    b = discovery_factory(redis_url)
    time.sleep(0.5)
    assert not _active(b)
    a.stop(expect_exit=0)
    t0 = time.monotonic()
    wait_until(lambda: _active(b), 5, "b to take over")
    assert time.monotonic() - t0 < 2.0, "a released the lock, b need not wait for its TTL"


# --------------------------------------------------------------------------
# Resolve
# --------------------------------------------------------------------------

def test_resolve_roles(redis_url, redis_base, discovery_factory, pf_files_factory):
    d = discovery_factory(redis_url)
    st = d.stub
    db = int(redis_url.rsplit("/", 1)[1])
    files = pf_files_factory()
    register(st, "files", "b-dead", "127.0.0.1:%d" % closed_port())
    register(st, "files", "a-real", files.address)
    wait_until(lambda: health_of(st, "files", "a-real") == dpb.INSTANCE_HEALTH_SERVING and
               health_of(st, "files", "b-dead") == dpb.INSTANCE_HEALTH_UNREACHABLE, 5, "probes")
    r = resolve(st, "files")
    assert list(r.addresses)[0] == files.address and len(r.addresses) == 2
    assert [s.instance.id for s in r.instances] == ["a-real", "b-dead"]
    assert list(resolve(st, "files", healthy_only=True).addresses) == [files.address]

    assert "not held" in expect_code(NOT_FOUND, resolve, st, "scheduler-leader")
    redis_base.cli("SET", "printfarm:scheduler:leader", "127.0.0.1:7411|pid-1", db=db)
    r = resolve(st, "scheduler-leader")
    assert list(r.addresses) == ["127.0.0.1:7411"]
    register(st, "scheduler", "s2", "127.0.0.1:7412", labels={"probe": "off"})
    register(st, "scheduler", "s1", "127.0.0.1:7411", labels={"probe": "off"})
    r = resolve(st, "scheduler-leader")
    assert list(r.addresses) == ["127.0.0.1:7411"] and r.instances[0].instance.id == "s1"
    assert len(resolve(st, "scheduler").addresses) == 2
    expect_code(NOT_FOUND, resolve, st, "scheduler-leader", True)  # UNKNOWN is not SERVING
    redis_base.cli("DEL", "printfarm:scheduler:leader", db=db)
    register(st, "scheduler", "s2", "127.0.0.1:7412", labels={"probe": "off", "role": "leader"})
    assert list(resolve(st, "scheduler-leader").addresses) == ["127.0.0.1:7412"]

    register(st, "agent", "printer-7", "127.0.0.1:9507", labels={"probe": "off"})
    assert list(resolve(st, "agent/printer-7").addresses) == ["127.0.0.1:9507"]
    expect_code(NOT_FOUND, resolve, st, "agent/printer-8")
    assert list(resolve(st, "discovery").addresses) == [d.address]
    expect_code(NOT_FOUND, resolve, st, "web")
    for bad in ("", "bogus", "agent/", "agent/bad id", "agent", "scheduler-leader "):
        expect_code(INVALID, resolve, st, bad)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

def _labels(n, key_len=3, value_len=3):
    return {("k%0*d" % (key_len - 1, i))[:key_len]: "v" * value_len for i in range(n)}


BAD_REGISTRATIONS = [
    ("no instance", dpb.RegisterRequest(), "instance is required"),
    ("empty id", dpb.RegisterRequest(instance=instance("files", "", "h:1")), "instance.id"),
    ("space in id", dpb.RegisterRequest(instance=instance("files", "a b", "h:1")), "instance.id"),
    ("slash in id", dpb.RegisterRequest(instance=instance("files", "a/b", "h:1")), "instance.id"),
    ("long id", dpb.RegisterRequest(instance=instance("files", "x" * 65, "h:1")), "instance.id"),
    ("unicode id", dpb.RegisterRequest(instance=instance("files", "dr\u00fccker", "h:1")),
     "instance.id"),
    ("no kind", dpb.RegisterRequest(instance=instance(0, "a", "h:1")), "instance.kind"),
    ("unknown kind", dpb.RegisterRequest(instance=instance(42, "a", "h:1")), "instance.kind"),
    ("empty address", dpb.RegisterRequest(instance=instance("files", "a", "")),
     "instance.address"),
    ("no port", dpb.RegisterRequest(instance=instance("files", "a", "hostonly")),
     "instance.address"),
    ("port 0", dpb.RegisterRequest(instance=instance("files", "a", "h:0")), "instance.address"),
    ("port 70000", dpb.RegisterRequest(instance=instance("files", "a", "h:70000")),
     "instance.address"),
    ("bad port", dpb.RegisterRequest(instance=instance("files", "a", "h:7x")),
     "instance.address"),
    ("wildcard", dpb.RegisterRequest(instance=instance("files", "a", "0.0.0.0:7300")),
     "instance.address"),
    ("bare ipv6", dpb.RegisterRequest(instance=instance("files", "a", "::1:7300")),
     "instance.address"),
    ("space in host", dpb.RegisterRequest(instance=instance("files", "a", "a b:1")),
     "instance.address"),
    ("huge address", dpb.RegisterRequest(instance=instance("files", "a", "h" * 5000 + ":1")),
     "instance.address"),
    ("huge label value", dpb.RegisterRequest(instance=instance("files", "a", "h:1",
                                                                {"k": "v" * 257})),
     "instance.labels[0].value"),
    ("very huge label", dpb.RegisterRequest(instance=instance("files", "a", "h:1",
                                                               {"k": "v" * 1000000})),
     "instance.labels[0].value"),
    ("long label key", dpb.RegisterRequest(instance=instance("files", "a", "h:1",
                                                              {"k" * 65: "v"})),
     "instance.labels[0].key"),
    ("empty label key", dpb.RegisterRequest(instance=instance("files", "a", "h:1", {"": "v"})),
     "instance.labels[0].key"),
    ("label key chars", dpb.RegisterRequest(instance=instance("files", "a", "h:1", {"a=b": "v"})),
     "instance.labels[0].key"),
    ("control in label", dpb.RegisterRequest(instance=instance("files", "a", "h:1",
                                                                {"k": "a\nb"})),
     "instance.labels[0].value"),
    ("33 labels", dpb.RegisterRequest(instance=instance("files", "a", "h:1", _labels(33))),
     "instance.labels"),
    ("bad probe mode", dpb.RegisterRequest(instance=instance("files", "a", "h:1",
                                                              {"probe": "icmp"})),
     "probe"),
    ("long version", dpb.RegisterRequest(instance=instance("files", "a", "h:1",
                                                            version="v" * 65)),
     "instance.version"),
    ("ttl too long", dpb.RegisterRequest(instance=instance("files", "a", "h:1"),
                                         ttl_seconds=3601), "ttl_seconds"),
]


def test_bad_registrations_are_invalid_argument(redis_url, discovery_factory):
    st = discovery_factory(redis_url).stub
    before = set(listed(st))
    failures = []
    for name, req, want in BAD_REGISTRATIONS:
        try:
            st.Register(req, timeout=RPC_TIMEOUT)
            failures.append("%s: accepted" % name)
        except grpc.RpcError as e:
            if e.code() != INVALID or want not in e.details():
                failures.append("%s: %s %r (want INVALID_ARGUMENT naming %r)"
                                % (name, e.code(), e.details(), want))
    assert not failures, "\n".join(failures)
    assert set(listed(st)) == before, "bad input changed nothing"


def test_bad_leases_filters_and_bytes(redis_url, discovery_factory):
    d = discovery_factory(redis_url)
    st = d.stub
    assert "lease_id is required" in expect_code(INVALID, heartbeat, st, "")
    assert "lease_id is required" in expect_code(INVALID, deregister, st, "")
    for bad in ("nonsense", "files/a", "files/a/xyz", "robot/a/0123456789abcdef",
                "files/a b/0123456789abcdef", "files/a/0123456789ABCDEF", "x" * 10000,
                "files/a/0123456789abcdef\n"):
        assert "not a lease" in expect_code(INVALID, heartbeat, st, bad), bad
    expect_code(NOT_FOUND, heartbeat, st, "files/never/0123456789abcdef")
    deregister(st, "files/never/0123456789abcdef")
    expect_code(INVALID, st.List, dpb.ListInstancesRequest(kind=99), timeout=RPC_TIMEOUT)
    raw = d.channel.unary_unary("/printfarm.v1.Discovery/Register",
                                request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05\x08\x01"):
        with pytest.raises(grpc.RpcError) as e:
            raw(garbage, timeout=RPC_TIMEOUT)
        assert e.value.code() == INVALID, garbage
    assert d.process.poll() is None


# --------------------------------------------------------------------------
# tokens
# --------------------------------------------------------------------------

TOKENS = [("admin", "root", "admin-token-0123456789"),
          ("agent", "printer-1", "agent-token-0123456789"),
          ("operator", "ops", "operator-token-0123456"),
          ("viewer", "eyes", "viewer-token-012345678")]


def _md(token):
    return (("authorization", "Bearer " + token),)


def test_tokens_and_roles(redis_url, discovery_factory):
    st = discovery_factory(redis_url, tokens=TOKENS).stub
    admin, agent, op, viewer = (_md(t[2]) for t in TOKENS)
    addr = "127.0.0.1:%d" % closed_port()
    expect_code(grpc.StatusCode.UNAUTHENTICATED, register, st, "agent", "printer-1", addr)
    r = register(st, "agent", "printer-1", addr, metadata=agent)
    assert "may register only agent 'printer-1'" in expect_code(
        grpc.StatusCode.PERMISSION_DENIED, register, st, "agent", "printer-2", addr,
        metadata=agent)
    expect_code(grpc.StatusCode.PERMISSION_DENIED, register, st, "files", "printer-1", addr,
                metadata=agent)
    expect_code(grpc.StatusCode.PERMISSION_DENIED, register, st, "scheduler", "s", addr,
                metadata=op)
    register(st, "web", "w", addr, metadata=op)
    register(st, "scheduler", "s", addr, metadata=admin)
    expect_code(grpc.StatusCode.PERMISSION_DENIED, register, st, "web", "w2", addr,
                metadata=viewer)
    st.Heartbeat(dpb.HeartbeatRequest(lease_id=r.lease_id), timeout=RPC_TIMEOUT, metadata=agent)
    other = register(st, "agent", "printer-2", addr, metadata=admin)
    expect_code(grpc.StatusCode.PERMISSION_DENIED, st.Deregister,
                dpb.DeregisterRequest(lease_id=other.lease_id), timeout=RPC_TIMEOUT,
                metadata=agent)
    got = st.List(dpb.ListInstancesRequest(), timeout=RPC_TIMEOUT, metadata=viewer)
    assert {s.instance.id for s in got.instances} >= {"printer-1", "printer-2", "w", "s"}


# --------------------------------------------------------------------------
# Redis away and back
# --------------------------------------------------------------------------

def test_redis_down_gives_unavailable_and_recovers(redis_factory, discovery_factory):
    redis = redis_factory()
    d = discovery_factory(redis.url)
    st = d.stub
    register(st, "files", "before", "127.0.0.1:%d" % closed_port(), labels={"probe": "off"})
    w = Watch(st)
    w.wait(lambda e: e.initial_done)
    assert d.admin_get("/readyz")[0] == 200

    redis.stop()
    details = expect_code(UNAVAILABLE, register, st, "files", "during", "127.0.0.1:1")
    assert "discovery registry is unavailable" in details and \
        ("redis at 127.0.0.1:%d is unavailable" % redis.port) in details, details
    assert "redis" in expect_code(UNAVAILABLE, listed, st)
    expect_code(UNAVAILABLE, resolve, st, "files")
    code, why = w.wait_closed()
    assert code == UNAVAILABLE and "redis" in why and "watch again" in why, why
    status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(
        d.admin_get("/readyz")), 5, "/readyz to fail")
    assert "redis" in body, body
    assert d.process.poll() is None, "Redis going away must not stop pf-discovery"

    redis.start()  # same port, empty (no persistence)
    wait_until(lambda: register(st, "files", "after", "127.0.0.1:%d" % closed_port(),
                                labels={"probe": "off"}), 10, "Register to work again")
    assert ("files", "after") in listed(st, "files")
    wait_until(lambda: d.admin_get("/readyz")[0] == 200, 5, "/readyz to recover")
    w2 = Watch(st)
    try:
        w2.wait(lambda e: e.initial_done, what="a snapshot after recovery")
        register(st, "files", "later", "127.0.0.1:%d" % closed_port(), labels={"probe": "off"})
        w2.wait(lambda e: e.type == ADDED and e.instance.instance.id == "later")
    finally:
        w2.close()
        w.close()


def test_discovery_starts_while_redis_is_down(redis_factory, discovery_factory):
    redis = redis_factory()
    redis.stop()
    d = discovery_factory(redis.url)
    assert "unavailable" in expect_code(UNAVAILABLE, listed, d.stub)
    redis.start()
    wait_until(lambda: listed(d.stub, "discovery"), 10, "the replica to register itself")


def test_health_and_metrics(redis_url, discovery_factory):
    import health_pb2
    import health_pb2_grpc
    d = discovery_factory(redis_url)
    h = health_pb2_grpc.HealthStub(d.channel or d.new_channel())
    assert h.Check(health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT).status == \
        health_pb2.HealthCheckResponse.SERVING
    r = register(d.stub, "files", "m", "127.0.0.1:%d" % closed_port())
    heartbeat(d.stub, r.lease_id)
    assert d.metric("printfarm_discovery_heartbeats_total") >= 1
    assert d.metric("printfarm_discovery_registrations_total") >= 1
    assert d.admin_get("/healthz")[0] == 200


# --------------------------------------------------------------------------
# wiring: services register themselves
# --------------------------------------------------------------------------

def test_pf_files_registers_itself_and_deregisters_on_stop(redis_url, redis_base,
                                                           discovery_factory, pf_files_factory):
    d = discovery_factory(redis_url)
    st = d.stub
    files = pf_files_factory(["--discovery", d.address])
    entry = wait_until(lambda: [s for s in listed(st, "files").values()
                                if s.instance.address == files.address], 10,
                       "pf-files to register")[0]
    assert entry.instance.id.endswith("-%d" % files.ports["grpc"])
    wait_until(lambda: health_of(st, "files", entry.instance.id) ==
               dpb.INSTANCE_HEALTH_SERVING, 5, "pf-files to be probed SERVING")
    assert list(resolve(st, "files").addresses) == [files.address]
    # The entry vanishes (as after an expiry): the next heartbeat gets
    # NOT_FOUND and the client registers again (heartbeats every 5 s).
    redis_base.cli("DEL", "pf:disc:inst:files:" + entry.instance.id,
                   db=int(redis_url.rsplit("/", 1)[1]))
    assert ("files", entry.instance.id) not in listed(st, "files")
    wait_until(lambda: ("files", entry.instance.id) in listed(st, "files"), 10,
               "pf-files to register again after NOT_FOUND")
    assert "event=discovery_lease_lost" in files.log
    files.stop(expect_exit=0)
    assert "event=discovery_deregistered" in files.log
    assert ("files", entry.instance.id) not in listed(st, "files"), "deregistered at once"


def test_pf_files_keeps_trying_while_discovery_is_away(redis_url, discovery_factory,
                                                       pf_files_factory):
    port = closed_port()
    files = pf_files_factory(["--discovery", "127.0.0.1:%d" % port])
    wait_until(lambda: "event=discovery_register_failed" in files.log, 10,
               "a logged registration failure")
    d = discovery_factory(redis_url, "--listen", "127.0.0.1:%d" % port)
    wait_until(lambda: [s for s in listed(d.stub, "files").values()
                        if s.instance.address == files.address], 15,
               "pf-files to register once pf-discovery is up")
