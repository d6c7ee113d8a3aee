"""pf-scheduler unary API against real processes (fixtures in conftest.py):
SubmitJob, GetJob, ListJobs, UpdateJob, CancelJob, ListPrinters,
UpdatePrinter and ConfirmBedClear.

Covered: submit/get/list with paging and filters; idempotent submit (a retry
returns the same job with duplicate=true, the same key with another request is
ALREADY_EXISTS, concurrent duplicates create one job); an unknown bundle is
FAILED_PRECONDITION; bad input of every kind gets a precise status naming the
field AND leaves the database exactly as it was (jobs, queues and events
counted before and after); update / hold / release / cancel (with running
attempts on scripted agents); printers listed with live state, updated and
cleared; role checks with a tokens file; a follower answers UNAVAILABLE with
the `printfarm-leader` trailer and changes nothing.

Jobs use profiles no other test's printers have (conftest.unique), so the
shared farm's dispatcher never starts them unless a test connects an agent
for that profile on purpose."""

import hashlib
import os
import threading

import grpc
import pytest

from conftest import RPC_TIMEOUT, common_pb2, digest, pb, pb_grpc, unique, wait_until

S = pb  # shorter in the tables below


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def call(farm, method, req, metadata=None, stub=None):
    """Calls a Scheduler method; returns (code, response or None, details)."""
    stub = stub or farm.stub
    try:
        r = getattr(stub, method)(req, timeout=RPC_TIMEOUT,
                                  metadata=metadata if metadata is not None else farm.metadata)
        return grpc.StatusCode.OK, r, ""
    except grpc.RpcError as e:
        return e.code(), None, e.details()


def expect(farm, method, req, code, *fragments, metadata=None, stub=None):
    got, resp, details = call(farm, method, req, metadata=metadata, stub=stub)
    assert got == code, "%s: want %s, got %s: %s" % (method, code, got, details)
    for f in fragments:
        assert f in details, "%s: %r not in %r" % (method, f, details)
    return details


def db_state(farm):
    """What bad input must not change: rows of jobs, queues, events and
    printers, and the newest event number."""
    return farm.sql(
        "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM queues), "
        "(SELECT count(*) FROM events), (SELECT coalesce(max(seq), 0) FROM events), "
        "(SELECT count(*) FROM printers), "
        "(SELECT coalesce(md5(string_agg(id || state || count || priority || name, ',' "
        "ORDER BY id)), '') FROM jobs), "
        "(SELECT coalesce(md5(string_agg(id || quarantined || awaiting_clear || "
        "coalesce(encode(labels, 'hex'), '') || coalesce(encode(queues, 'hex'), ''), ',' "
        "ORDER BY id)), '') FROM printers)")[0]


def list_all_jobs(farm, **kw):
    out, token = [], ""
    while True:
        r = farm.stub.ListJobs(pb.ListJobsRequest(page_token=token, page_size=1000, **kw),
                               timeout=RPC_TIMEOUT, metadata=farm.metadata)
        out.extend(r.jobs)
        token = r.next_page_token
        if not token:
            return out


def job_events(farm, job_id):
    return [int(r[0]) for r in farm.sql(
        "SELECT kind FROM events WHERE job_id = :'j' ORDER BY seq", j=job_id)]


def raw_call(farm, method, payload, metadata=None):
    """Sends already-serialized bytes (for requests no generated class can
    produce, such as a count of -1 on the wire)."""
    fn = farm.leader().channel.unary_unary(
        "/printfarm.v1.Scheduler/" + method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b)
    try:
        fn(payload, timeout=RPC_TIMEOUT,
           metadata=metadata if metadata is not None else farm.metadata)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@pytest.fixture(scope="module")
def bundle(farm):
    """A bundle with two profiles nobody prints: jobs on it stay queued."""
    p1, p2 = unique("api-a"), unique("api-b")
    return farm.bundle([p1, p2], name="api bundle"), (p1, p2)


# --------------------------------------------------------------------------
# SubmitJob / GetJob
# --------------------------------------------------------------------------

def test_submit_and_get(farm, bundle):
    b, (p1, _) = bundle
    queue = unique("q")
    job = farm.submit(b, count=3, priority=7, queue=queue, name="three benchies",
                      constraints=pb.JobConstraints(
                          profiles=[p1],
                          materials=[pb.MaterialRequirement(extruder=0, material="PLA",
                                                            colour="black")],
                          printer_labels=[common_pb2.Label(key="enclosure")]))
    assert job.id.startswith("j-") and len(job.id) == 28
    assert job.queue == queue and job.name == "three benchies"
    assert job.bundle.sha256 == b and job.count == 3 and job.priority == 7
    assert job.state == pb.JOB_STATE_QUEUED
    assert list(job.constraints.profiles) == [p1]
    assert job.constraints.materials[0].HasField("extruder")
    assert job.constraints.materials[0].material == "PLA"
    assert job.constraints.printer_labels[0].key == "enclosure"
    assert job.max_attempts_per_printer >= 1 and job.max_printers >= 1  # farm defaults
    assert job.created_unix_ms > 0 and job.updated_unix_ms >= job.created_unix_ms
    assert job.succeeded == job.in_progress == 0

    got = farm.get_job(job.id)
    assert got.job == job
    assert list(got.attempts) == []
    # the new queue exists now; the event says what happened
    assert farm.sql("SELECT count(*) FROM queues WHERE name = :'q'", q=queue) == [("1",)]
    assert job_events(farm, job.id) == [pb.EVENT_KIND_JOB_SUBMITTED]


def test_submit_defaults_and_hold(farm, bundle):
    b, _ = bundle
    job = farm.submit(b, hold=True, max_attempts_per_printer=4, max_printers=5)
    assert job.queue == "default"
    assert job.name == "api bundle"  # the bundle's name
    assert job.state == pb.JOB_STATE_HELD and "held" in job.state_reason
    assert job.max_attempts_per_printer == 4 and job.max_printers == 5
    assert job.submitted_by == ""  # tokens are off on this farm


def test_get_job_errors(farm):
    expect(farm, "GetJob", pb.GetJobRequest(id="j-01JDNOSUCHJOB0000000000000"),
           grpc.StatusCode.NOT_FOUND, "j-01JDNOSUCHJOB0000000000000", "does not exist")
    expect(farm, "GetJob", pb.GetJobRequest(id="nonsense"), grpc.StatusCode.NOT_FOUND)
    expect(farm, "GetJob", pb.GetJobRequest(), grpc.StatusCode.INVALID_ARGUMENT,
           "id is required")
    expect(farm, "GetJob", pb.GetJobRequest(id="j-\n"), grpc.StatusCode.INVALID_ARGUMENT, "id")
    expect(farm, "GetJob", pb.GetJobRequest(id="j" * 500), grpc.StatusCode.INVALID_ARGUMENT,
           "at most 127")


def test_unknown_bundle(farm):
    before = db_state(farm)
    missing = hashlib.sha256(os.urandom(32)).hexdigest()
    expect(farm, "SubmitJob", pb.SubmitJobRequest(bundle=digest(missing), count=1,
                                                  idempotency_key=unique("k")),
           grpc.StatusCode.FAILED_PRECONDITION, missing, "is not stored in pf-files",
           "upload it first")
    # a blob that is not a bundle manifest is not a bundle either
    blob = farm.upload(b"just some bytes " + os.urandom(8))
    got, _, _ = call(farm, "SubmitJob", pb.SubmitJobRequest(bundle=digest(blob), count=1))
    assert got != grpc.StatusCode.OK
    assert db_state(farm) == before


def test_files_unreachable(farm_factory):
    f = farm_factory()
    b = f.bundle([unique("gone")], name="gone")
    f.files.stop()
    before = db_state(f)
    expect(f, "SubmitJob", pb.SubmitJobRequest(bundle=digest(b), count=1),
           grpc.StatusCode.UNAVAILABLE, "pf-files could not be asked for bundle %s" % b[:12])
    assert db_state(f) == before


def test_profile_not_in_bundle(farm, bundle):
    b, (p1, p2) = bundle
    before = db_state(farm)
    expect(farm, "SubmitJob",
           pb.SubmitJobRequest(bundle=digest(b), count=1,
                               constraints=pb.JobConstraints(profiles=[p1, "no-such-profile"])),
           grpc.StatusCode.INVALID_ARGUMENT, "constraints.profiles[1]", "no-such-profile",
           "has no file in the bundle")
    assert db_state(farm) == before


# --------------------------------------------------------------------------
# bad input: precise codes, nothing changed
# --------------------------------------------------------------------------

def _bad_submits(b):
    ok = dict(bundle=digest(b), count=1)

    def req(**kw):
        d = dict(ok)
        d.update(kw)
        return pb.SubmitJobRequest(**d)

    mats = lambda n: pb.JobConstraints(materials=[  # noqa: E731
        pb.MaterialRequirement(material="PLA") for _ in range(n)])
    return [
        ("count zero", req(count=0), "count 0 is out of range: 1 to 10000"),
        ("count over", req(count=10001), "count 10001 is out of range"),
        ("count huge", req(count=2**32 - 1), "count 4294967295"),
        ("priority", req(priority=1001), "priority 1001 is out of range"),
        ("priority low", req(priority=-5000), "priority -5000"),
        ("name long", req(name="n" * 201), "is 201 bytes long: at most 200"),
        ("name control", req(name="two\nlines"), "is not printable"),
        ("queue chars", req(queue="my queue"), "queue 'my queue'"),
        ("queue long", req(queue="q" * 65), "at most 64"),
        ("no bundle", pb.SubmitJobRequest(count=1), "bundle is required"),
        ("digest short", req(bundle=digest("abc")), "bundle 'abc' is 3 characters long"),
        ("digest upper", req(bundle=digest(b.upper())), "not lower-case hex"),
        ("key long", req(idempotency_key="k" * 129), "idempotency_key"),
        ("policy", req(max_attempts_per_printer=101), "max_attempts_per_printer 101"),
        ("policy printers", req(max_printers=1000), "max_printers 1000"),
        ("extruder", req(constraints=pb.JobConstraints(materials=[
            pb.MaterialRequirement(extruder=8, material="PLA")])),
         "constraints.materials[0].extruder 8 is out of range"),
        ("materials many", req(constraints=mats(9)), "constraints.materials has 9"),
        ("material empty", req(constraints=pb.JobConstraints(materials=[
            pb.MaterialRequirement()])), "requires nothing"),
        ("material long", req(constraints=pb.JobConstraints(materials=[
            pb.MaterialRequirement(colour="c" * 65)])), "constraints.materials[0].colour"),
        ("profile chars", req(constraints=pb.JobConstraints(profiles=["a b"])),
         "constraints.profiles[0] 'a b'"),
        ("profiles many", req(constraints=pb.JobConstraints(
            profiles=["p%d" % i for i in range(17)])), "constraints.profiles has 17"),
        ("profile twice", req(constraints=pb.JobConstraints(profiles=["p", "p"])),
         "listed twice"),
        ("label key", req(constraints=pb.JobConstraints(printer_labels=[
            common_pb2.Label(key="", value="x")])), "printer_labels[0] has an empty key"),
        ("labels many", req(constraints=pb.JobConstraints(printer_labels=[
            common_pb2.Label(key="k%d" % i) for i in range(33)])), "printer_labels has 33"),
    ]


def test_bad_submits_change_nothing(farm, bundle):
    b, _ = bundle
    before = db_state(farm)
    jobs_before = len(list_all_jobs(farm))
    for what, req, fragment in _bad_submits(b):
        details = expect(farm, "SubmitJob", req, grpc.StatusCode.INVALID_ARGUMENT)
        assert fragment in details, "%s: %r not in %r" % (what, fragment, details)
    # bytes no generated class writes: a count of -1 (a 10-byte varint), garbage
    good = pb.SubmitJobRequest(bundle=digest(b)).SerializeToString()
    code, details = raw_call(farm, "SubmitJob", good + b"\x20" + varint(-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "count 4294967295" in details, details
    code, details = raw_call(farm, "SubmitJob", b"\xff\xff\xff\xff")
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert db_state(farm) == before
    assert len(list_all_jobs(farm)) == jobs_before


def test_bad_updates_change_nothing(farm, bundle):
    b, _ = bundle
    job = farm.submit(b, count=2)
    before = db_state(farm)
    cases = [
        ("UpdateJob", pb.UpdateJobRequest(id=job.id), grpc.StatusCode.INVALID_ARGUMENT,
         "nothing to change"),
        ("UpdateJob", pb.UpdateJobRequest(id=job.id, count=0), grpc.StatusCode.INVALID_ARGUMENT,
         "count 0"),
        ("UpdateJob", pb.UpdateJobRequest(id=job.id, priority=99999),
         grpc.StatusCode.INVALID_ARGUMENT, "priority 99999"),
        ("UpdateJob", pb.UpdateJobRequest(id=job.id, name=""), grpc.StatusCode.INVALID_ARGUMENT,
         "name is required"),
        ("UpdateJob", pb.UpdateJobRequest(id="j-missing", priority=1), grpc.StatusCode.NOT_FOUND,
         "j-missing"),
        ("CancelJob", pb.CancelJobRequest(id="j-missing"), grpc.StatusCode.NOT_FOUND,
         "j-missing"),
        ("CancelJob", pb.CancelJobRequest(id=job.id, reason="r" * 501),
         grpc.StatusCode.INVALID_ARGUMENT, "reason"),
        ("CancelJob", pb.CancelJobRequest(), grpc.StatusCode.INVALID_ARGUMENT, "id is required"),
        ("ListJobs", pb.ListJobsRequest(page_size=1001), grpc.StatusCode.INVALID_ARGUMENT,
         "page_size 1001"),
        ("ListJobs", pb.ListJobsRequest(page_token="not-a-token"),
         grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
        ("ListJobs", pb.ListJobsRequest(states=[0]), grpc.StatusCode.INVALID_ARGUMENT,
         "states[0] 0"),
        ("ListJobs", pb.ListJobsRequest(queue="bad queue"), grpc.StatusCode.INVALID_ARGUMENT,
         "queue"),
        ("ListPrinters", pb.ListPrintersRequest(page_token="00ff"),
         grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
        ("ListPrinters", pb.ListPrintersRequest(page_size=5000),
         grpc.StatusCode.INVALID_ARGUMENT, "page_size 5000"),
        ("UpdatePrinter", pb.UpdatePrinterRequest(id="no-such-printer", release_quarantine=True),
         grpc.StatusCode.NOT_FOUND, "no-such-printer"),
        ("UpdatePrinter", pb.UpdatePrinterRequest(id="bad id", release_quarantine=True),
         grpc.StatusCode.INVALID_ARGUMENT, "id 'bad id'"),
        ("ConfirmBedClear", pb.ConfirmBedClearRequest(printer_id="no-such-printer"),
         grpc.StatusCode.NOT_FOUND, "no-such-printer"),
        ("ConfirmBedClear", pb.ConfirmBedClearRequest(), grpc.StatusCode.INVALID_ARGUMENT,
         "printer_id is required"),
    ]
    for method, req, code, fragment in cases:
        expect(farm, method, req, code, fragment)
    assert db_state(farm) == before
    assert farm.job(job.id) == job


# --------------------------------------------------------------------------
# idempotency
# --------------------------------------------------------------------------

def test_idempotent_submit(farm, bundle):
    b, _ = bundle
    key = unique("idem")
    req = pb.SubmitJobRequest(bundle=digest(b), count=2, idempotency_key=key, name="idem")
    first = farm.stub.SubmitJob(req, timeout=RPC_TIMEOUT, metadata=farm.metadata)
    assert not first.duplicate and first.job.idempotency_key == key
    before = db_state(farm)
    again = farm.stub.SubmitJob(req, timeout=RPC_TIMEOUT, metadata=farm.metadata)
    assert again.duplicate and again.job.id == first.job.id
    assert again.job == first.job
    assert db_state(farm) == before  # no new job, no event

    other = pb.SubmitJobRequest(bundle=digest(b), count=3, idempotency_key=key, name="idem")
    expect(farm, "SubmitJob", other, grpc.StatusCode.ALREADY_EXISTS,
           "idempotency key '%s' was used for a different request (job %s)"
           % (key, first.job.id))
    assert db_state(farm) == before
    assert job_events(farm, first.job.id) == [pb.EVENT_KIND_JOB_SUBMITTED]


def test_concurrent_duplicates_make_one_job(farm, bundle):
    b, _ = bundle
    key = unique("race")
    req = pb.SubmitJobRequest(bundle=digest(b), count=1, idempotency_key=key)
    results, errors = [], []

    def go():
        try:
            stub = pb_grpc.SchedulerStub(farm.leader().new_channel())
            results.append(stub.SubmitJob(req, timeout=RPC_TIMEOUT, metadata=farm.metadata))
        except grpc.RpcError as e:  # pragma: no cover - reported below
            errors.append((e.code(), e.details()))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RPC_TIMEOUT * 2)
    assert not errors, errors
    assert len({r.job.id for r in results}) == 1
    assert sum(1 for r in results if not r.duplicate) == 1
    assert farm.sql("SELECT count(*) FROM jobs WHERE idempotency_key = :'k'", k=key) == [("1",)]


# --------------------------------------------------------------------------
# ListJobs
# --------------------------------------------------------------------------

def test_list_jobs_paging_and_filters(farm, bundle):
    b, _ = bundle
    queue = unique("page")
    ids = [farm.submit(b, queue=queue, name="page %d" % i).id for i in range(7)]
    held = farm.submit(b, queue=queue, hold=True).id
    ids.append(held)

    everything = farm.stub.ListJobs(pb.ListJobsRequest(queue=queue), timeout=RPC_TIMEOUT,
                                    metadata=farm.metadata)
    assert [j.id for j in everything.jobs] == list(reversed(ids))  # newest first
    assert everything.next_page_token == ""

    pages, token = [], ""
    while True:
        r = farm.stub.ListJobs(pb.ListJobsRequest(queue=queue, page_size=3, page_token=token),
                               timeout=RPC_TIMEOUT, metadata=farm.metadata)
        pages.append([j.id for j in r.jobs])
        token = r.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 2]
    assert sum(pages, []) == list(reversed(ids))

    # a page token is bound to its filter
    first = farm.stub.ListJobs(pb.ListJobsRequest(queue=queue, page_size=2), timeout=RPC_TIMEOUT,
                               metadata=farm.metadata)
    expect(farm, "ListJobs", pb.ListJobsRequest(queue="default", page_token=first.next_page_token),
           grpc.StatusCode.INVALID_ARGUMENT, "different filter")
    tampered = first.next_page_token[:-2] + ("00" if first.next_page_token[-2:] != "00" else "11")
    expect(farm, "ListJobs", pb.ListJobsRequest(queue=queue, page_token=tampered),
           grpc.StatusCode.INVALID_ARGUMENT, "page_token is not a token this server issued")

    only_held = farm.stub.ListJobs(pb.ListJobsRequest(queue=queue, states=[pb.JOB_STATE_HELD]),
                                   timeout=RPC_TIMEOUT, metadata=farm.metadata)
    assert [j.id for j in only_held.jobs] == [held]
    queued = farm.stub.ListJobs(
        pb.ListJobsRequest(queue=queue, states=[pb.JOB_STATE_QUEUED, pb.JOB_STATE_DONE]),
        timeout=RPC_TIMEOUT, metadata=farm.metadata)
    assert len(queued.jobs) == 7
    none = farm.stub.ListJobs(pb.ListJobsRequest(queue=unique("empty")), timeout=RPC_TIMEOUT,
                              metadata=farm.metadata)
    assert list(none.jobs) == [] and none.next_page_token == ""
    # every job of every queue, default page size
    assert set(ids) <= {j.id for j in list_all_jobs(farm)}


# --------------------------------------------------------------------------
# UpdateJob / CancelJob
# --------------------------------------------------------------------------

def test_update_hold_release(farm, bundle):
    b, _ = bundle
    job = farm.submit(b, count=2, name="before")
    r = farm.stub.UpdateJob(pb.UpdateJobRequest(id=job.id, priority=-3, count=5, name="after"),
                            timeout=RPC_TIMEOUT, metadata=farm.metadata).job
    assert (r.priority, r.count, r.name, r.state) == (-3, 5, "after", pb.JOB_STATE_QUEUED)
    assert r.updated_unix_ms >= job.updated_unix_ms

    r = farm.stub.UpdateJob(pb.UpdateJobRequest(id=job.id, hold=True), timeout=RPC_TIMEOUT,
                            metadata=farm.metadata).job
    assert r.state == pb.JOB_STATE_HELD and "held" in r.state_reason
    # holding a held job again is a no-op: no new event
    n = len(job_events(farm, job.id))
    again = farm.stub.UpdateJob(pb.UpdateJobRequest(id=job.id, hold=True), timeout=RPC_TIMEOUT,
                                metadata=farm.metadata).job
    assert again == r and len(job_events(farm, job.id)) == n
    # hold=false is a change (the oneof carries presence)
    r = farm.stub.UpdateJob(pb.UpdateJobRequest(id=job.id, hold=False), timeout=RPC_TIMEOUT,
                            metadata=farm.metadata).job
    assert r.state == pb.JOB_STATE_QUEUED and r.state_reason == ""
    assert job_events(farm, job.id) == [pb.EVENT_KIND_JOB_SUBMITTED, pb.EVENT_KIND_JOB_UPDATED,
                                        pb.EVENT_KIND_JOB_HELD, pb.EVENT_KIND_JOB_RELEASED]


def test_cancel(farm, bundle):
    b, _ = bundle
    job = farm.submit(b, count=2)
    r = farm.stub.CancelJob(pb.CancelJobRequest(id=job.id, reason="wrong colour"),
                            timeout=RPC_TIMEOUT, metadata=farm.metadata).job
    assert r.state == pb.JOB_STATE_CANCELLED and r.state_reason == "wrong colour"
    before = db_state(farm)
    again = farm.stub.CancelJob(pb.CancelJobRequest(id=job.id, reason="again"),
                                timeout=RPC_TIMEOUT, metadata=farm.metadata).job
    assert again == r and db_state(farm) == before  # OK, nothing changes
    expect(farm, "UpdateJob", pb.UpdateJobRequest(id=job.id, priority=1),
           grpc.StatusCode.FAILED_PRECONDITION, "is cancelled", "cannot be changed")
    assert db_state(farm) == before
    assert job_events(farm, job.id) == [pb.EVENT_KIND_JOB_SUBMITTED, pb.EVENT_KIND_JOB_CANCELLED]


def test_running_attempts_count_and_cancel(farm):
    """Two printers print two copies of a 3-copy job: the count may not drop
    below 2; cancel_running sends CancelPrint to both."""
    profile = unique("run")
    b = farm.bundle([profile], name="running")
    a1 = farm.agent(unique("pr"), profile)
    a2 = farm.agent(unique("pr"), profile)
    a1.wait_welcome()
    a2.wait_welcome()
    job = farm.submit(b, count=3)
    s1, s2 = a1.wait_start(), a2.wait_start()
    assert s1.job_id == s2.job_id == job.id
    a1.started(s1.attempt_id)
    a2.started(s2.attempt_id)
    running = farm.wait_job(job.id, lambda j: j.in_progress == 2)
    got = farm.get_job(job.id)
    assert {a.id for a in got.attempts} == {s1.attempt_id, s2.attempt_id}

    before = db_state(farm)
    expect(farm, "UpdateJob", pb.UpdateJobRequest(id=job.id, count=1),
           grpc.StatusCode.INVALID_ARGUMENT, "count 1", "below the copies already succeeded (0) "
           "plus printing (2)")
    assert db_state(farm) == before
    # lowering to exactly what is printing makes the job printing (nothing left to start)
    r = farm.stub.UpdateJob(pb.UpdateJobRequest(id=job.id, count=2), timeout=RPC_TIMEOUT,
                            metadata=farm.metadata).job
    assert r.count == 2 and r.state == pb.JOB_STATE_PRINTING and running.in_progress == 2

    r = farm.stub.CancelJob(pb.CancelJobRequest(id=job.id, cancel_running=True),
                            timeout=RPC_TIMEOUT, metadata=farm.metadata).job
    assert r.state == pb.JOB_STATE_CANCELLED and "cancelled by" in r.state_reason
    c1 = a1.wait(lambda m: m.HasField("cancel"), what="CancelPrint").cancel
    c2 = a2.wait(lambda m: m.HasField("cancel"), what="CancelPrint").cancel
    assert {c1.attempt_id, c2.attempt_id} == {s1.attempt_id, s2.attempt_id}
    a1.cancelled(s1.attempt_id)
    a2.cancelled(s2.attempt_id)
    done = farm.wait_job(job.id, lambda j: j.in_progress == 0)
    assert done.state == pb.JOB_STATE_CANCELLED and done.cancelled_attempts == 2
    assert {a.state for a in farm.get_job(job.id).attempts} == {pb.ATTEMPT_STATE_CANCELLED}


def test_done_job_cannot_be_cancelled_and_bed_clear(farm):
    profile = unique("done")
    b = farm.bundle([profile], name="done")
    printer = unique("pr")
    ag = farm.agent(printer, profile)
    ag.wait_welcome()
    job = farm.submit(b, count=1)
    sp = ag.wait_start()
    ag.started(sp.attempt_id)
    ag.succeeded(sp.attempt_id)
    farm.wait_job(job.id, pb.JOB_STATE_DONE)
    before = db_state(farm)
    expect(farm, "CancelJob", pb.CancelJobRequest(id=job.id), grpc.StatusCode.FAILED_PRECONDITION,
           "is already done")
    expect(farm, "UpdateJob", pb.UpdateJobRequest(id=job.id, count=5),
           grpc.StatusCode.FAILED_PRECONDITION, "is done")
    assert db_state(farm) == before

    p = farm.wait_printer(printer, pb.PRINTER_STATE_AWAITING_CLEAR)
    assert p.current_attempt_id == sp.attempt_id and p.current_job_id == job.id
    expect(farm, "ConfirmBedClear",
           pb.ConfirmBedClearRequest(printer_id=printer, attempt_id="a-not-that-one"),
           grpc.StatusCode.FAILED_PRECONDITION, "a-not-that-one",
           "is not the last finished attempt of printer '%s'" % printer)
    assert db_state(farm) == before
    r = farm.confirm_clear(printer, sp.attempt_id)
    assert r.printer.state == pb.PRINTER_STATE_IDLE
    # again: OK and no change
    after = db_state(farm)
    r = farm.confirm_clear(printer)
    assert r.printer.state == pb.PRINTER_STATE_IDLE and db_state(farm) == after
    kinds = [int(k[0]) for k in farm.sql(
        "SELECT kind FROM events WHERE printer_id = :'p' AND kind = :'k'", p=printer,
        k=str(pb.EVENT_KIND_BED_CLEARED))]
    assert kinds == [pb.EVENT_KIND_BED_CLEARED]


# --------------------------------------------------------------------------
# printers
# --------------------------------------------------------------------------

def test_list_and_update_printers(farm):
    profile = unique("lp")
    ids = sorted(unique("lp-printer") for _ in range(3))
    agents = [farm.agent(i, profile, materials=[(0, "PLA", "black")]) for i in ids]
    for a in agents:
        a.wait_welcome()
    for i in ids:
        p = farm.wait_printer(i, pb.PRINTER_STATE_IDLE)
        assert p.profile == profile
        assert [(m.extruder, m.material, m.colour) for m in p.materials] == [(0, "PLA", "black")]
        assert p.last_seen_unix_ms > 0 and p.agent_version == "scripted-1"

    # paging by id, page size 1, with a state filter
    seen, token = [], ""
    while True:
        r = farm.stub.ListPrinters(
            pb.ListPrintersRequest(page_size=1, page_token=token, states=[pb.PRINTER_STATE_IDLE]),
            timeout=RPC_TIMEOUT, metadata=farm.metadata)
        assert len(r.printers) <= 1
        seen.extend(p.id for p in r.printers)
        token = r.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and set(ids) <= set(seen)

    queue = unique("lpq")
    upd = pb.UpdatePrinterRequest(
        id=ids[0],
        materials=pb.ExtruderMaterials(items=[pb.ExtruderMaterial(extruder=0, material="PETG",
                                                                  colour="#ff0000")]),
        labels=pb.Labels(items=[common_pb2.Label(key="enclosure", value="yes")]),
        queues=pb.QueueWeights(items=[pb.QueueWeight(queue=queue, weight=5)]),
        windows=pb.AvailabilityWindows(items=[pb.AvailabilityWindow(
            days=[pb.WEEKDAY_MONDAY, pb.WEEKDAY_FRIDAY], start_minute=480, end_minute=1020,
            utc_offset_minutes=60)]))
    p = farm.stub.UpdatePrinter(upd, timeout=RPC_TIMEOUT, metadata=farm.metadata).printer
    assert p.materials[0].material == "PETG" and p.labels[0].key == "enclosure"
    assert (p.queues[0].queue, p.queues[0].weight) == (queue, 5)
    assert list(p.windows[0].days) == [pb.WEEKDAY_MONDAY, pb.WEEKDAY_FRIDAY]
    assert p.windows[0].utc_offset_minutes == 60

    served = farm.stub.ListPrinters(pb.ListPrintersRequest(queue=queue), timeout=RPC_TIMEOUT,
                                    metadata=farm.metadata)
    assert [x.id for x in served.printers] == [ids[0]]

    # an absent group stays; a present empty group clears
    p = farm.stub.UpdatePrinter(pb.UpdatePrinterRequest(id=ids[0], labels=pb.Labels()),
                                timeout=RPC_TIMEOUT, metadata=farm.metadata).printer
    assert list(p.labels) == [] and p.materials[0].material == "PETG"
    assert p.queues[0].queue == queue

    before = db_state(farm)
    bad = [
        (pb.UpdatePrinterRequest(id=ids[0]), "nothing to change"),
        (pb.UpdatePrinterRequest(id=ids[0], materials=pb.ExtruderMaterials(items=[
            pb.ExtruderMaterial(extruder=8)])), "materials[0].extruder 8"),
        (pb.UpdatePrinterRequest(id=ids[0], materials=pb.ExtruderMaterials(items=[
            pb.ExtruderMaterial(extruder=1), pb.ExtruderMaterial(extruder=1)])),
         "materials[1].extruder 1 is repeated"),
        (pb.UpdatePrinterRequest(id=ids[0], queues=pb.QueueWeights(items=[
            pb.QueueWeight(queue="q", weight=0)])), "queues[0].weight 0"),
        (pb.UpdatePrinterRequest(id=ids[0], queues=pb.QueueWeights(items=[
            pb.QueueWeight(queue="q", weight=1), pb.QueueWeight(queue="q", weight=2)])),
         "queue 'q' is repeated"),
        (pb.UpdatePrinterRequest(id=ids[0], windows=pb.AvailabilityWindows(items=[
            pb.AvailabilityWindow(start_minute=1440, end_minute=10)])),
         "windows[0].start_minute 1440"),
        (pb.UpdatePrinterRequest(id=ids[0], windows=pb.AvailabilityWindows(items=[
            pb.AvailabilityWindow(start_minute=0, end_minute=60, utc_offset_minutes=900)])),
         "utc_offset_minutes 900"),
        (pb.UpdatePrinterRequest(id=ids[0], windows=pb.AvailabilityWindows(items=[
            pb.AvailabilityWindow(days=[0], start_minute=0, end_minute=60)])),
         "days[0] 0 is not a weekday"),
        (pb.UpdatePrinterRequest(id=ids[0], labels=pb.Labels(items=[
            common_pb2.Label(key="k" * 65)])), "labels[0].key"),
    ]
    for req, fragment in bad:
        expect(farm, "UpdatePrinter", req, grpc.StatusCode.INVALID_ARGUMENT, fragment)
    expect(farm, "UpdatePrinter", pb.UpdatePrinterRequest(id=ids[1], release_quarantine=True),
           grpc.StatusCode.FAILED_PRECONDITION, "is not quarantined")
    assert db_state(farm) == before

    # an offline printer is still listed, as offline
    agents[2].close()
    farm.wait_printer(ids[2], pb.PRINTER_STATE_OFFLINE)
    off = farm.stub.ListPrinters(pb.ListPrintersRequest(states=[pb.PRINTER_STATE_OFFLINE]),
                                 timeout=RPC_TIMEOUT, metadata=farm.metadata)
    assert ids[2] in [x.id for x in off.printers]
    assert ids[0] not in [x.id for x in off.printers]


def test_release_quarantine(farm):
    profile = unique("quar")
    printer = unique("pr")
    ag = farm.agent(printer, profile)
    ag.wait_welcome()
    farm.wait_printer(printer, pb.PRINTER_STATE_IDLE)
    # quarantine comes from the failure policy; set it directly to test the release path
    farm.sql("UPDATE printers SET quarantined = true, consecutive_failures = 3, "
             "state_reason = 'failed 3 different jobs in a row' WHERE id = :'p'", p=printer)
    p = farm.printer(printer)
    assert p.state == pb.PRINTER_STATE_QUARANTINED and p.consecutive_failures == 3
    p = farm.stub.UpdatePrinter(pb.UpdatePrinterRequest(id=printer, release_quarantine=True),
                                timeout=RPC_TIMEOUT, metadata=farm.metadata).printer
    assert p.state != pb.PRINTER_STATE_QUARANTINED and p.consecutive_failures == 0
    assert p.state_reason == ""
    kinds = [int(r[0]) for r in farm.sql("SELECT kind FROM events WHERE printer_id = :'p'",
                                         p=printer)]
    assert pb.EVENT_KIND_PRINTER_RELEASED in kinds


# --------------------------------------------------------------------------
# roles
# --------------------------------------------------------------------------

TOKENS = [("admin", "adm", "admin-token-0123456789"),
          ("operator", "op", "operator-token-0123456789"),
          ("viewer", "view", "viewer-token-0123456789"),
          ("agent", "printer-1", "agent-token-0123456789")]


def test_roles(farm_factory):
    f = farm_factory(tokens=TOKENS)
    b = f.bundle([unique("roles")], name="roles")
    submit = pb.SubmitJobRequest(bundle=digest(b), count=1)

    r = f.stub.SubmitJob(submit, timeout=RPC_TIMEOUT, metadata=f.md("op"))
    assert r.job.submitted_by == "op"
    job_id = r.job.id
    before = db_state(f)

    # viewer: reads yes, writes no
    for method, req in [("ListJobs", pb.ListJobsRequest()), ("GetJob", pb.GetJobRequest(id=job_id)),
                        ("ListPrinters", pb.ListPrintersRequest())]:
        code, _, details = call(f, method, req, metadata=f.md("view"))
        assert code == grpc.StatusCode.OK, (method, details)
    for method, req in [("SubmitJob", submit),
                        ("UpdateJob", pb.UpdateJobRequest(id=job_id, priority=1)),
                        ("CancelJob", pb.CancelJobRequest(id=job_id)),
                        ("UpdatePrinter", pb.UpdatePrinterRequest(id="x", release_quarantine=True)),
                        ("ConfirmBedClear", pb.ConfirmBedClearRequest(printer_id="x"))]:
        expect(f, method, req, grpc.StatusCode.PERMISSION_DENIED, "viewer", metadata=f.md("view"))
        # an agent token may only Connect
        expect(f, method, req, grpc.StatusCode.PERMISSION_DENIED, "agent",
               metadata=f.md("printer-1"))
        expect(f, method, req, grpc.StatusCode.UNAUTHENTICATED, metadata=())
        expect(f, method, req, grpc.StatusCode.UNAUTHENTICATED,
               metadata=(("authorization", "Bearer wrong-token-0123456789"),))
    expect(f, "ListJobs", pb.ListJobsRequest(), grpc.StatusCode.PERMISSION_DENIED,
           metadata=f.md("printer-1"))
    expect(f, "ListJobs", pb.ListJobsRequest(), grpc.StatusCode.UNAUTHENTICATED, metadata=())
    assert db_state(f) == before

    # operator and admin manage
    r = f.stub.UpdateJob(pb.UpdateJobRequest(id=job_id, priority=3), timeout=RPC_TIMEOUT,
                         metadata=f.md("op")).job
    assert r.priority == 3
    r = f.stub.CancelJob(pb.CancelJobRequest(id=job_id), timeout=RPC_TIMEOUT,
                         metadata=f.md("adm")).job
    assert r.state == pb.JOB_STATE_CANCELLED and "adm" in r.state_reason


# --------------------------------------------------------------------------
# followers
# --------------------------------------------------------------------------

def test_follower_redirects(farm_factory):
    f = farm_factory(replicas=2)
    leader = f.leader()
    follower = f.followers()[0]
    b = f.bundle([unique("fol")], name="follower")
    fstub = f.stub_for(follower)
    before = db_state(f)
    reqs = [("SubmitJob", pb.SubmitJobRequest(bundle=digest(b), count=1)),
            ("GetJob", pb.GetJobRequest(id="j-x")),
            ("ListJobs", pb.ListJobsRequest()),
            ("UpdateJob", pb.UpdateJobRequest(id="j-x", priority=1)),
            ("CancelJob", pb.CancelJobRequest(id="j-x")),
            ("ListPrinters", pb.ListPrintersRequest()),
            ("UpdatePrinter", pb.UpdatePrinterRequest(id="x", release_quarantine=True)),
            ("ConfirmBedClear", pb.ConfirmBedClearRequest(printer_id="x")),
            # even a request that is invalid gets the redirect first
            ("SubmitJob", pb.SubmitJobRequest(count=0))]
    for method, req in reqs:
        try:
            getattr(fstub, method)(req, timeout=RPC_TIMEOUT)
            raise AssertionError("%s answered on a follower" % method)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (method, e.code(), e.details())
            trailers = dict(e.trailing_metadata() or ())
            assert trailers.get("printfarm-leader") == leader.address, (method, trailers)
    assert db_state(f) == before
    # the leader answers the same request
    job = f.submit(b)
    assert f.job(job.id).id == job.id
