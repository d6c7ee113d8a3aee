"""pf-files security from a Python grpcio client: TLS, mutual TLS, bearer tokens.

Certificates come from tests/certs/mkcerts.sh at test time. TLS failures
surface as UNAVAILABLE at the client (the handshake fails before any call).
"""

import hashlib
import os

import grpc
import pytest

from conftest import RPC_TIMEOUT, read_file
from pfinterop import download, expect_status, upload
from printfarm.v1 import common_pb2, files_pb2, files_pb2_grpc
import health_pb2, health_pb2_grpc  # noqa: E401

OPERATOR_TOKEN = "secret-op-token-0123456789"
VIEWER_TOKEN = "secret-viewer-token-0123456789"
TOKENS_FILE = "operator op1 %s\nviewer v1 %s\n" % (OPERATOR_TOKEN, VIEWER_TOKEN)

# A failing handshake should fail fast; don't wait the full RPC timeout.
FAIL_TIMEOUT = 5


def bearer(token):
    return (("authorization", "Bearer " + token),)


def health_check(channel, service="", metadata=None, timeout=RPC_TIMEOUT):
    return health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout, metadata=metadata).status


def stat(channel, hexdigest, metadata=None, timeout=RPC_TIMEOUT):
    return files_pb2_grpc.FilesStub(channel).Stat(
        files_pb2.StatRequest(digest=common_pb2.Digest(sha256=hexdigest)),
        timeout=timeout, metadata=metadata)


def unknown_digest():
    return hashlib.sha256(os.urandom(16)).hexdigest()


def creds(certs, root="ca.pem", cert=None, key=None):
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(os.path.join(certs, root)),
        private_key=read_file(os.path.join(certs, key)) if key else None,
        certificate_chain=read_file(os.path.join(certs, cert)) if cert else None)


def tls_args(certs, cert="server.pem", key="server.key", ca=None):
    args = ["--tls-cert", os.path.join(certs, cert), "--tls-key", os.path.join(certs, key)]
    if ca:
        args += ["--tls-ca", os.path.join(certs, ca)]
    return args


def assert_fails_unavailable(channel):
    with expect_status(grpc.StatusCode.UNAVAILABLE):
        health_check(channel, timeout=FAIL_TIMEOUT)


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

def test_tls_with_private_ca(pf_files_factory, certs):
    srv = pf_files_factory(tls_args(certs), credentials=creds(certs, root="ca.pem"))
    assert health_check(srv.channel) == health_pb2.HealthCheckResponse.SERVING
    stub = files_pb2_grpc.FilesStub(srv.channel)
    data = os.urandom(700_000)
    h = upload(stub, data).digest.sha256
    assert h == hashlib.sha256(data).hexdigest()
    assert download(stub, h)[0] == data


def test_tls_rejects_plaintext_client(pf_files_factory, certs):
    srv = pf_files_factory(tls_args(certs), wait_ready=False)
    assert_fails_unavailable(srv.new_channel(wait_ready=False))


def test_tls_client_with_wrong_root(pf_files_factory, certs):
    srv = pf_files_factory(tls_args(certs), wait_ready=False)
    # The self-signed cert is not the CA that signed server.pem.
    assert_fails_unavailable(srv.new_channel(creds(certs, root="selfsigned.pem"), wait_ready=False))


def test_tls_self_signed(pf_files_factory, certs):
    srv = pf_files_factory(tls_args(certs, cert="selfsigned.pem", key="selfsigned.key"),
                           credentials=creds(certs, root="selfsigned.pem"))
    assert health_check(srv.channel) == health_pb2.HealthCheckResponse.SERVING
    with expect_status(grpc.StatusCode.NOT_FOUND):
        stat(srv.channel, unknown_digest())
    assert_fails_unavailable(srv.new_channel(creds(certs, root="ca.pem"), wait_ready=False))


# --------------------------------------------------------------------------
# Mutual TLS
# --------------------------------------------------------------------------

def test_mtls_client_without_cert_fails(pf_files_factory, certs):
    srv = pf_files_factory(tls_args(certs, ca="ca.pem"), wait_ready=False)
    assert_fails_unavailable(srv.new_channel(creds(certs), wait_ready=False))


def test_mtls_client_with_cert_succeeds(pf_files_factory, certs):
    srv = pf_files_factory(tls_args(certs, ca="ca.pem"), wait_ready=False)
    ch = srv.new_channel(creds(certs, cert="client.pem", key="client.key"))
    assert health_check(ch) == health_pb2.HealthCheckResponse.SERVING
    stub = files_pb2_grpc.FilesStub(ch)
    data = os.urandom(123_456)
    h = upload(stub, data).digest.sha256
    assert download(stub, h)[0] == data


def test_mtls_client_cert_from_another_issuer_fails(pf_files_factory, certs):
    srv = pf_files_factory(tls_args(certs, ca="ca.pem"), wait_ready=False)
    ch = srv.new_channel(creds(certs, cert="selfsigned.pem", key="selfsigned.key"), wait_ready=False)
    assert_fails_unavailable(ch)


def test_mtls_plaintext_client_fails(pf_files_factory, certs):
    srv = pf_files_factory(tls_args(certs, ca="ca.pem"), wait_ready=False)
    assert_fails_unavailable(srv.new_channel(wait_ready=False))


# --------------------------------------------------------------------------
# Bearer tokens
# --------------------------------------------------------------------------

@pytest.fixture
def tokens_file(tmp_path):
    p = tmp_path / "tokens"
    p.write_text(TOKENS_FILE)
    p.chmod(0o600)
    return str(p)


@pytest.fixture
def token_server(pf_files_factory, tokens_file):
    return pf_files_factory(["--tokens", tokens_file])


def test_token_missing(token_server):
    with expect_status(grpc.StatusCode.UNAUTHENTICATED):
        stat(token_server.channel, unknown_digest())
    stub = files_pb2_grpc.FilesStub(token_server.channel)
    data = os.urandom(1000)
    with expect_status(grpc.StatusCode.UNAUTHENTICATED):
        upload(stub, data)
    # Nothing was stored.
    with expect_status(grpc.StatusCode.NOT_FOUND):
        stat(token_server.channel, hashlib.sha256(data).hexdigest(), metadata=bearer(OPERATOR_TOKEN))


@pytest.mark.parametrize("value", [
    "Bearer wrong-token-000000000000000",
    "Bearer " + OPERATOR_TOKEN + "x",
    "Bearer " + OPERATOR_TOKEN[:-1],
    "Bearer ",
    "Basic " + OPERATOR_TOKEN,
    OPERATOR_TOKEN,
], ids=["wrong", "longer", "shorter", "empty", "basic-scheme", "no-scheme"])
def test_token_wrong(token_server, value):
    with expect_status(grpc.StatusCode.UNAUTHENTICATED):
        stat(token_server.channel, unknown_digest(), metadata=(("authorization", value),))


def test_viewer_cannot_write(token_server):
    stub = files_pb2_grpc.FilesStub(token_server.channel)
    data = os.urandom(2000)
    with expect_status(grpc.StatusCode.PERMISSION_DENIED):
        upload(stub, data, metadata=bearer(VIEWER_TOKEN))
    with expect_status(grpc.StatusCode.NOT_FOUND):
        stat(token_server.channel, hashlib.sha256(data).hexdigest(), metadata=bearer(VIEWER_TOKEN))

    bundle = files_pb2.Bundle(name="viewer-bundle")
    f = bundle.files.add(profile="mk4", size=0)
    f.digest.sha256 = hashlib.sha256(b"").hexdigest()
    with expect_status(grpc.StatusCode.PERMISSION_DENIED):
        stub.PutBundle(files_pb2.PutBundleRequest(bundle=bundle), timeout=RPC_TIMEOUT,
                       metadata=bearer(VIEWER_TOKEN))


def test_viewer_can_read(token_server):
    ch = token_server.channel
    stub = files_pb2_grpc.FilesStub(ch)
    with expect_status(grpc.StatusCode.NOT_FOUND):
        stat(ch, unknown_digest(), metadata=bearer(VIEWER_TOKEN))

    data = os.urandom(40_000)
    h = upload(stub, data, metadata=bearer(OPERATOR_TOKEN)).digest.sha256
    assert stat(ch, h, metadata=bearer(VIEWER_TOKEN)).size == len(data)
    assert download(stub, h, metadata=bearer(VIEWER_TOKEN))[0] == data
    missing = stub.FindMissing(
        files_pb2.FindMissingRequest(digests=[common_pb2.Digest(sha256=h)]),
        timeout=RPC_TIMEOUT, metadata=bearer(VIEWER_TOKEN)).missing
    assert list(missing) == []
    with expect_status(grpc.StatusCode.NOT_FOUND):
        stub.GetBundle(files_pb2.GetBundleRequest(digest=common_pb2.Digest(sha256=unknown_digest())),
                       timeout=RPC_TIMEOUT, metadata=bearer(VIEWER_TOKEN))


def test_operator_can_write(token_server):
    stub = files_pb2_grpc.FilesStub(token_server.channel)
    data = os.urandom(5000)
    h = upload(stub, data, metadata=bearer(OPERATOR_TOKEN)).digest.sha256
    bundle = files_pb2.Bundle(name="op-bundle")
    f = bundle.files.add(profile="mk4", size=len(data))
    f.digest.sha256 = h
    put = stub.PutBundle(files_pb2.PutBundleRequest(bundle=bundle), timeout=RPC_TIMEOUT,
                         metadata=bearer(OPERATOR_TOKEN))
    got = stub.GetBundle(files_pb2.GetBundleRequest(digest=put.digest), timeout=RPC_TIMEOUT,
                         metadata=bearer(OPERATOR_TOKEN))
    assert got.bundle.name == "op-bundle"


@pytest.mark.parametrize("service", ["", "printfarm.v1.Files"])
def test_health_needs_no_token(token_server, service):
    assert health_check(token_server.channel, service) == health_pb2.HealthCheckResponse.SERVING


def test_tokens_over_tls_with_call_credentials(pf_files_factory, certs, tokens_file):
    """The usual client setup: TLS channel credentials + per-call token credentials."""
    srv = pf_files_factory(tls_args(certs) + ["--tokens", tokens_file],
                           credentials=creds(certs))
    op = srv.new_channel(grpc.composite_channel_credentials(
        creds(certs), grpc.access_token_call_credentials(OPERATOR_TOKEN)))
    data = os.urandom(3000)
    h = upload(files_pb2_grpc.FilesStub(op), data).digest.sha256
    viewer = srv.new_channel(grpc.composite_channel_credentials(
        creds(certs), grpc.access_token_call_credentials(VIEWER_TOKEN)))
    assert stat(viewer, h).size == len(data)
    with expect_status(grpc.StatusCode.PERMISSION_DENIED):
        upload(files_pb2_grpc.FilesStub(viewer), os.urandom(10))
    with expect_status(grpc.StatusCode.UNAUTHENTICATED):
        stat(srv.channel, h)
