"""pf-files from a Python grpcio client: the contract in proto/printfarm/v1/files.proto."""

import os
import threading
import time

import grpc
import pytest

from conftest import RPC_TIMEOUT
from pfinterop import (EMPTY_SHA256, MiB, digest, download, expect_status, files, random_blob,
                       sha256, stat_code, upload)
from printfarm.v1 import files_pb2
import health_pb2, health_pb2_grpc  # noqa: E401


# --------------------------------------------------------------------------
# Upload / Download / Stat
# --------------------------------------------------------------------------

def test_upload_then_download_roundtrip(pf_files):
    stub = files(pf_files)
    data = random_blob(3 * MiB + 12345)
    resp = upload(stub, data)
    assert resp.digest.sha256 == sha256(data)
    assert resp.size == len(data)
    assert not resp.existed

    got, msgs = download(stub, resp.digest.sha256)
    assert len(got) == len(data)
    assert got == data
    assert msgs[0][0] == len(data), "first message carries the total size"
    # Offsets are contiguous and chunks at most 1 MiB.
    pos = 0
    for _, off, n in msgs:
        assert off == pos
        assert n <= MiB
        pos += n

    st = stub.Stat(files_pb2.StatRequest(digest=resp.digest), timeout=RPC_TIMEOUT)
    assert st.size == len(data)
    assert st.digest.sha256 == sha256(data)


def test_upload_again_reports_existed(pf_files):
    stub = files(pf_files)
    data = random_blob(100 * 1024)
    first = upload(stub, data)
    second = upload(stub, data, chunk=7000)
    assert not first.existed
    assert second.existed
    assert second.digest.sha256 == first.digest.sha256 == sha256(data)


def test_upload_with_correct_expected_digest(pf_files):
    stub = files(pf_files)
    data = random_blob(MiB + 1)
    resp = upload(stub, data, expected=sha256(data))
    assert resp.digest.sha256 == sha256(data)


def test_upload_with_wrong_expected_digest_stores_nothing(pf_files):
    stub = files(pf_files)
    data = random_blob(2 * MiB)
    wrong = sha256(b"something else entirely")
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        upload(stub, data, expected=wrong)
    assert stat_code(stub, sha256(data)) == grpc.StatusCode.NOT_FOUND
    assert stat_code(stub, wrong) == grpc.StatusCode.NOT_FOUND


def test_empty_blob(pf_files):
    stub = files(pf_files)
    resp = upload(stub, b"")
    assert resp.digest.sha256 == EMPTY_SHA256 == sha256(b"")
    assert resp.size == 0
    st = stub.Stat(files_pb2.StatRequest(digest=digest(EMPTY_SHA256)), timeout=RPC_TIMEOUT)
    assert st.size == 0
    got, msgs = download(stub, EMPTY_SHA256)
    assert got == b""
    assert all(size == 0 for size, _, _ in msgs)


def test_download_from_offset(pf_files):
    stub = files(pf_files)
    data = random_blob(2 * MiB + 333)
    h = upload(stub, data).digest.sha256
    for offset in (1, 1000, MiB, MiB + 17, len(data) - 1):
        got, msgs = download(stub, h, offset=offset)
        assert got == data[offset:], "offset %d" % offset
        assert msgs[0][1] == offset
        assert msgs[0][0] == len(data)


def test_download_offset_at_and_past_end(pf_files):
    stub = files(pf_files)
    data = random_blob(5000)
    h = upload(stub, data).digest.sha256
    # At the end: nothing left to send (an empty stream or OUT_OF_RANGE are
    # both readings of "past the end"; the bytes must never be wrong).
    try:
        got, _ = download(stub, h, offset=len(data))
        assert got == b""
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE, e
    with expect_status(grpc.StatusCode.OUT_OF_RANGE):
        download(stub, h, offset=len(data) + 1)


def test_download_chunk_size(pf_files):
    stub = files(pf_files)
    data = random_blob(50_000)
    h = upload(stub, data).digest.sha256
    got, msgs = download(stub, h, chunk_size=4096)
    assert got == data
    assert all(n <= 4096 for _, _, n in msgs)
    assert len(msgs) >= 50_000 // 4096


def test_download_unknown_is_not_found(pf_files):
    with expect_status(grpc.StatusCode.NOT_FOUND):
        download(files(pf_files), sha256(os.urandom(32)))


def test_stat_unknown_is_not_found(pf_files):
    assert stat_code(files(pf_files), sha256(os.urandom(32))) == grpc.StatusCode.NOT_FOUND


def test_parallel_uploads_of_same_blob(pf_files):
    stub = files(pf_files)
    data = random_blob(MiB + 5)
    results, errors = [], []

    def run():
        try:
            results.append(upload(stub, data, chunk=64 * 1024).digest.sha256)
        except grpc.RpcError as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, [(e.code(), e.details()) for e in errors]
    assert results == [sha256(data)] * 8
    got, _ = download(stub, sha256(data))
    assert got == data


# --------------------------------------------------------------------------
# Upload protocol errors
# --------------------------------------------------------------------------

def test_upload_without_header(pf_files):
    reqs = iter([files_pb2.UploadRequest(chunk=b"abc")])
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        files(pf_files).Upload(reqs, timeout=RPC_TIMEOUT)


def test_upload_with_second_header(pf_files):
    hdr = files_pb2.UploadHeader(size=3)
    reqs = iter([files_pb2.UploadRequest(header=hdr), files_pb2.UploadRequest(chunk=b"ab"),
                 files_pb2.UploadRequest(header=hdr)])
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        files(pf_files).Upload(reqs, timeout=RPC_TIMEOUT)


@pytest.mark.parametrize("declared,sent", [(10, 5), (5, 10), (1, 0)])
def test_upload_size_mismatch(pf_files, declared, sent):
    stub = files(pf_files)
    data = random_blob(sent)
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        upload(stub, data, size=declared)
    if sent:
        assert stat_code(stub, sha256(data)) == grpc.StatusCode.NOT_FOUND


def test_upload_with_no_messages(pf_files):
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        files(pf_files).Upload(iter([]), timeout=RPC_TIMEOUT)


def test_cancelled_upload_leaves_nothing(pf_files):
    stub = files(pf_files)
    data = random_blob(MiB)
    release = threading.Event()

    def reqs():
        yield files_pb2.UploadRequest(header=files_pb2.UploadHeader(size=2 * len(data)))
        yield files_pb2.UploadRequest(chunk=data)
        release.wait(RPC_TIMEOUT)

    fut = stub.Upload.future(reqs(), timeout=RPC_TIMEOUT)
    time.sleep(0.5)
    fut.cancel()
    release.set()
    with pytest.raises(grpc.FutureCancelledError):
        fut.result()
    assert stat_code(stub, sha256(data)) == grpc.StatusCode.NOT_FOUND
    # Still serving.
    resp = health_pb2_grpc.HealthStub(pf_files.channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


# --------------------------------------------------------------------------
# FindMissing
# --------------------------------------------------------------------------

def test_find_missing(pf_files):
    stub = files(pf_files)
    a = random_blob(1000)
    b = random_blob(2000)
    ha = upload(stub, a).digest.sha256
    hb = upload(stub, b).digest.sha256
    m1, m2 = sha256(os.urandom(16)), sha256(os.urandom(16))
    req = files_pb2.FindMissingRequest(digests=[digest(x) for x in (m1, ha, m2, hb)])
    resp = stub.FindMissing(req, timeout=RPC_TIMEOUT)
    assert [d.sha256 for d in resp.missing] == [m1, m2]

    resp = stub.FindMissing(files_pb2.FindMissingRequest(digests=[digest(ha)]), timeout=RPC_TIMEOUT)
    assert list(resp.missing) == []
    resp = stub.FindMissing(files_pb2.FindMissingRequest(), timeout=RPC_TIMEOUT)
    assert list(resp.missing) == []


def test_find_missing_too_many(pf_files):
    req = files_pb2.FindMissingRequest(digests=[digest(EMPTY_SHA256)] * 10_001)
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        files(pf_files).FindMissing(req, timeout=RPC_TIMEOUT)


# --------------------------------------------------------------------------
# Bundles
# --------------------------------------------------------------------------

def make_bundle(name, entries):
    """entries: [(profile, hexdigest, size)]"""
    b = files_pb2.Bundle(name=name)
    for profile, h, size in entries:
        f = b.files.add(profile=profile, size=size)
        f.digest.sha256 = h
        f.metadata.slicer = "PrusaSlicer 2.6.0"
        f.metadata.estimated_seconds = 3600
        f.metadata.filament_g = 12.5
        f.metadata.material = "PLA"
        f.metadata.colour = "black"
    b.labels.add(key="author", value="interop-test")
    return b


def test_put_bundle_with_missing_blob(pf_files):
    stub = files(pf_files)
    present = random_blob(3000)
    hp = upload(stub, present).digest.sha256
    missing = sha256(os.urandom(32))
    bundle = make_bundle("missing-blob", [("prusa-mk4", hp, len(present)),
                                          ("ender3-v2", missing, 100)])
    with expect_status(grpc.StatusCode.FAILED_PRECONDITION) as e:
        stub.PutBundle(files_pb2.PutBundleRequest(bundle=bundle), timeout=RPC_TIMEOUT)
    assert missing in e.value.details(), "the message names the missing blob: %r" % e.value.details()


def test_put_get_bundle_roundtrip(pf_files):
    stub = files(pf_files)
    g1 = b"; generated by PrusaSlicer\nG28\n" + random_blob(20_000)
    g2 = b"; generated by Cura\nG28\n" + random_blob(30_000)
    h1 = upload(stub, g1).digest.sha256
    h2 = upload(stub, g2).digest.sha256
    bundle = make_bundle("benchy", [("prusa-mk4", h1, len(g1)), ("ender3-v2", h2, len(g2))])

    put = stub.PutBundle(files_pb2.PutBundleRequest(bundle=bundle), timeout=RPC_TIMEOUT)
    assert len(put.digest.sha256) == 64
    # Same bundle again: same digest (the manifest is content-addressed).
    again = stub.PutBundle(files_pb2.PutBundleRequest(bundle=bundle), timeout=RPC_TIMEOUT)
    assert again.digest.sha256 == put.digest.sha256

    got = stub.GetBundle(files_pb2.GetBundleRequest(digest=put.digest), timeout=RPC_TIMEOUT)
    assert got.digest.sha256 == put.digest.sha256
    assert got.bundle.name == "benchy"
    by_profile = {f.profile: f for f in got.bundle.files}
    assert set(by_profile) == {"prusa-mk4", "ender3-v2"}
    assert by_profile["prusa-mk4"].digest.sha256 == h1
    assert by_profile["ender3-v2"].digest.sha256 == h2
    assert by_profile["ender3-v2"].size == len(g2)
    assert by_profile["prusa-mk4"].metadata.material == "PLA"
    assert by_profile["prusa-mk4"].metadata.estimated_seconds == 3600
    assert [(lb.key, lb.value) for lb in got.bundle.labels] == [("author", "interop-test")]

    # The manifest is itself a blob.
    assert stat_code(stub, put.digest.sha256) == grpc.StatusCode.OK


def test_get_bundle_unknown_is_not_found(pf_files):
    req = files_pb2.GetBundleRequest(digest=digest(sha256(os.urandom(8))))
    with expect_status(grpc.StatusCode.NOT_FOUND):
        files(pf_files).GetBundle(req, timeout=RPC_TIMEOUT)


def test_get_bundle_of_a_non_bundle_blob(pf_files):
    stub = files(pf_files)
    # Bytes that do not parse as a Bundle message (a truncated varint).
    h = upload(stub, b"\x08\xff\xff").digest.sha256
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DATA_LOSS):
        stub.GetBundle(files_pb2.GetBundleRequest(digest=digest(h)), timeout=RPC_TIMEOUT)


def test_put_bundle_invalid(pf_files):
    stub = files(pf_files)
    data = random_blob(500)
    h = upload(stub, data).digest.sha256
    cases = {
        "empty": files_pb2.Bundle(name="empty"),
        "no profile": make_bundle("noprof", [("", h, len(data))]),
        "duplicate profile": make_bundle("dup", [("mk4", h, len(data)), ("mk4", h, len(data))]),
        "malformed digest": make_bundle("bad", [("mk4", "xyz", 1)]),
    }
    for what, bundle in cases.items():
        with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
            stub.PutBundle(files_pb2.PutBundleRequest(bundle=bundle), timeout=RPC_TIMEOUT)


# --------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------

MALFORMED = {
    "empty": "",
    "short": "abc",
    "63 chars": "a" * 63,
    "65 chars": "a" * 65,
    "not hex": "g" * 64,
    "upper case": EMPTY_SHA256.upper(),
    "space": " " + EMPTY_SHA256[1:],
}


@pytest.mark.parametrize("bad", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_digest(pf_files, bad):
    stub = files(pf_files)
    d = digest(bad)
    calls = {
        "Stat": lambda: stub.Stat(files_pb2.StatRequest(digest=d), timeout=RPC_TIMEOUT),
        "Download": lambda: list(stub.Download(files_pb2.DownloadRequest(digest=d), timeout=RPC_TIMEOUT)),
        "FindMissing": lambda: stub.FindMissing(
            files_pb2.FindMissingRequest(digests=[digest(EMPTY_SHA256), d]), timeout=RPC_TIMEOUT),
        "GetBundle": lambda: stub.GetBundle(files_pb2.GetBundleRequest(digest=d), timeout=RPC_TIMEOUT),
    }
    if bad:  # an empty expected digest means "not declared"
        calls["Upload"] = lambda: upload(stub, b"hello", expected=bad)
    wrong = {}
    for name, call in calls.items():
        try:
            call()
            wrong[name] = "OK"
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                wrong[name] = "%s %r" % (e.code(), e.details())
    assert not wrong, "want INVALID_ARGUMENT for digest %r, got: %s" % (bad, wrong)


def test_missing_digest_message(pf_files):
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        files(pf_files).Stat(files_pb2.StatRequest(), timeout=RPC_TIMEOUT)


@pytest.mark.parametrize("method", ["Stat", "FindMissing", "PutBundle", "GetBundle"])
def test_undecodable_request(pf_files, method):
    call = pf_files.channel.unary_unary("/printfarm.v1.Files/" + method,
                                        request_serializer=None, response_deserializer=None)
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        call(b"\xff\xff\xff", timeout=RPC_TIMEOUT)


def test_undecodable_download_request(pf_files):
    call = pf_files.channel.unary_stream("/printfarm.v1.Files/Download",
                                         request_serializer=None, response_deserializer=None)
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        list(call(b"\xff\xff\xff", timeout=RPC_TIMEOUT))


def test_undecodable_upload_message(pf_files):
    call = pf_files.channel.stream_unary("/printfarm.v1.Files/Upload",
                                         request_serializer=None, response_deserializer=None)
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        call(iter([b"\xff\xff\xff"]), timeout=RPC_TIMEOUT)


def test_unknown_method_is_unimplemented(pf_files):
    call = pf_files.channel.unary_unary("/printfarm.v1.Files/NoSuchMethod",
                                        request_serializer=None, response_deserializer=None)
    with expect_status(grpc.StatusCode.UNIMPLEMENTED):
        call(b"", timeout=RPC_TIMEOUT)


# --------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------

@pytest.mark.parametrize("service", ["", "printfarm.v1.Files"])
def test_health_serving(pf_files, service):
    resp = health_pb2_grpc.HealthStub(pf_files.channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_health_unknown_service(pf_files):
    with expect_status(grpc.StatusCode.NOT_FOUND):
        health_pb2_grpc.HealthStub(pf_files.channel).Check(
            health_pb2.HealthCheckRequest(service="printfarm.v1.NoSuchService"), timeout=RPC_TIMEOUT)


# --------------------------------------------------------------------------
# Process-level behaviour (own servers)
# --------------------------------------------------------------------------

def test_ports_are_logged(pf_files):
    channel, ports, process = pf_files
    assert ports["grpc"] and ports["admin"] and ports["grpc"] != ports["admin"]
    assert process.poll() is None


def test_blobs_survive_restart(pf_files_factory):
    srv = pf_files_factory()
    data = random_blob(MiB + 99)
    h = upload(files(srv), data).digest.sha256
    srv.stop(expect_exit=0)

    srv2 = pf_files_factory(data_dir=srv.data_dir)
    got, _ = download(files(srv2), h)
    assert got == data


def test_corrupted_blob_is_never_served(pf_files_factory):
    srv = pf_files_factory()
    stub = files(srv)
    data = random_blob(300_000)
    h = upload(stub, data).digest.sha256
    # Find the stored file by content (the on-disk layout is the server's own).
    stored = []
    for root, _, names in os.walk(srv.data_dir):
        for n in names:
            p = os.path.join(root, n)
            if os.path.getsize(p) == len(data):
                with open(p, "rb") as f:
                    if f.read() == data:
                        stored.append(p)
    assert len(stored) == 1, stored
    with open(stored[0], "r+b") as f:
        f.seek(len(data) // 2)
        f.write(bytes([data[len(data) // 2] ^ 0xFF]))
    # Chunks may arrive before the server notices; the status must say so.
    with expect_status(grpc.StatusCode.DATA_LOSS):
        download(stub, h)


def test_max_blob_size(pf_files_factory):
    srv = pf_files_factory(["--max-blob-size", "100000"])
    stub = files(srv)
    ok = random_blob(100_000)
    assert upload(stub, ok).size == 100_000
    with expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED):
        upload(stub, random_blob(100_001))


def test_max_chunk_size(pf_files_factory):
    srv = pf_files_factory(["--max-chunk-size", "65536"])
    stub = files(srv)
    data = random_blob(200_000)
    assert upload(stub, data, chunk=65536).digest.sha256 == sha256(data)
    other = random_blob(200_000)
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT):
        upload(stub, other, chunk=65537)
    assert stat_code(stub, sha256(other)) == grpc.StatusCode.NOT_FOUND
