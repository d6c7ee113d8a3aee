"""Helpers shared by the interop test modules (the stubs come from conftest)."""

import contextlib
import hashlib
import os

import grpc
import pytest

from conftest import RPC_TIMEOUT
from printfarm.v1 import common_pb2, files_pb2, files_pb2_grpc

MiB = 1024 * 1024
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def digest(hexstr):
    return common_pb2.Digest(sha256=hexstr)


def files(srv):
    return files_pb2_grpc.FilesStub(srv.channel)


def upload_requests(data, chunk=256 * 1024, expected=None, size=None):
    hdr = files_pb2.UploadHeader(size=len(data) if size is None else size)
    if expected is not None:
        hdr.expected.sha256 = expected
    yield files_pb2.UploadRequest(header=hdr)
    for i in range(0, len(data), chunk):
        yield files_pb2.UploadRequest(chunk=data[i:i + chunk])


def upload(stub, data, **kw):
    metadata = kw.pop("metadata", None)
    return stub.Upload(upload_requests(data, **kw), timeout=RPC_TIMEOUT, metadata=metadata)


def download(stub, hexdigest, offset=0, chunk_size=0, metadata=None):
    """Returns (bytes, [DownloadResponse without the chunk bytes])."""
    out, msgs = [], []
    req = files_pb2.DownloadRequest(digest=digest(hexdigest), offset=offset, chunk_size=chunk_size)
    for m in stub.Download(req, timeout=RPC_TIMEOUT, metadata=metadata):
        out.append(m.chunk)
        msgs.append((m.size, m.offset, len(m.chunk)))
    return b"".join(out), msgs


@contextlib.contextmanager
def expect_status(*codes):
    """The block must raise grpc.RpcError with one of `codes`."""
    with pytest.raises(grpc.RpcError) as e:
        yield e
    assert e.value.code() in codes, "got %s %r, want %s" % (
        e.value.code(), e.value.details(), " or ".join(str(c) for c in codes))


def stat_code(stub, hexdigest):
    try:
        stub.Stat(files_pb2.StatRequest(digest=digest(hexdigest)), timeout=RPC_TIMEOUT)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def random_blob(n):
    return os.urandom(n)
