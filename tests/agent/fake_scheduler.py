"""A scripted stand-in for pf-scheduler's Connect stream, for the agent tests.

It speaks the agent side of the protocol exactly as scheduler.proto states it
(Hello first, Welcome with acked_seq, Ack for every numbered message, repeats
ignored) and records everything, so a test can check what the agent said and
when. Its `FakeDb` outlives a replica: stopping one replica and starting
another on the same db is a scheduler restart or a failover. A replica made a
follower answers every Connect with UNAVAILABLE and the `printfarm-leader`
trailer, as real followers do.

The generated modules (printfarm.v1.scheduler_pb2) must be importable: the
agent conftest puts them on sys.path before importing this file.
"""

import queue
import threading
import time
from concurrent import futures

import grpc

from printfarm.v1 import scheduler_pb2 as pb


class PrinterRecord:
    """What the fake scheduler knows of one printer (its 'database row')."""

    def __init__(self, printer_id):
        self.printer_id = printer_id
        self.acked_seq = 0
        self.hellos = []       # AgentHello, in order
        self.events = []       # AgentMessage with seq, each recorded once
        self.repeats = []      # seqs received again (resends), for checks
        self.statuses = []     # PrinterStatus
        self.others = []       # progress, cache updates
        self.outbox = None     # queue.Queue of the live stream, None when offline


class FakeDb:
    def __init__(self):
        self.lock = threading.Condition()
        self.printers = {}

    def printer(self, printer_id):
        with self.lock:
            if printer_id not in self.printers:
                self.printers[printer_id] = PrinterRecord(printer_id)
            return self.printers[printer_id]

    def wait(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
                self.lock.wait(min(left, 0.2))

    def attempt_events(self, printer_id, attempt_id=None):
        """(seq, kind name, reason) of the numbered attempt events recorded."""
        rec = self.printer(printer_id)
        with self.lock:
            out = []
            for m in rec.events:
                if m.WhichOneof("msg") != "attempt_event":
                    continue
                ev = m.attempt_event
                if attempt_id is None or ev.attempt_id == attempt_id:
                    out.append((m.seq, pb.AttemptEventKind.Name(ev.kind), ev.reason,
                                ev.attempt_id))
            return out

    def wait_event(self, printer_id, attempt_id, kind, timeout=30):
        def found():
            return [e for e in self.attempt_events(printer_id, attempt_id)
                    if e[1] == "ATTEMPT_EVENT_KIND_" + kind]
        return self.wait(found, timeout, "%s %s on %s" % (kind, attempt_id, printer_id))

    def wait_connected(self, printer_id, hellos=1, timeout=30):
        rec = self.printer(printer_id)
        self.wait(lambda: len(rec.hellos) >= hellos and rec.outbox is not None, timeout,
                  "hello #%d from %s" % (hellos, printer_id))
        return rec.hellos[hellos - 1]

    def send(self, printer_id, msg, timeout=30):
        """Queues a SchedulerMessage on the printer's live stream (waits for one)."""
        rec = self.printer(printer_id)
        self.wait(lambda: rec.outbox is not None, timeout, "a stream from %s" % printer_id)
        with self.lock:
            rec.outbox.put(msg)

    def start_print(self, printer_id, attempt_id, job_id, digest, size, estimated=0):
        sp = pb.StartPrint(attempt_id=attempt_id, job_id=job_id, job_name="test " + job_id,
                           size=size, profile="test-profile")
        sp.file.sha256 = digest
        sp.metadata.estimated_seconds = estimated
        self.send(printer_id, pb.SchedulerMessage(start_print=sp))


class FakeScheduler:
    """One replica. leader_address=None: it is the leader; else a follower
    that redirects there."""

    def __init__(self, db, port=0, leader_address=None, scheduler_id="fake-1", ack=True):
        self.db = db
        self.leader_address = leader_address
        self.scheduler_id = scheduler_id
        self.ack = ack
        self.connects = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        handler = grpc.method_handlers_generic_handler("printfarm.v1.Scheduler", {
            "Connect": grpc.stream_stream_rpc_method_handler(
                self._connect,
                request_deserializer=pb.AgentMessage.FromString,
                response_serializer=pb.SchedulerMessage.SerializeToString),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:%d" % port)
        if self.port == 0:
            raise RuntimeError("fake scheduler could not bind port %d" % port)
        self.server.start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        self.server.stop(grace=0).wait(5)

    def _connect(self, requests, context):
        self.connects += 1
        if self.leader_address is not None:
            context.set_trailing_metadata((("printfarm-leader", self.leader_address),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "not the leader")
        outbox = queue.Queue()
        state = {"rec": None, "done": False}
        reader = threading.Thread(target=self._read, args=(requests, outbox, state, context),
                                  daemon=True)
        reader.start()
        try:
            while context.is_active():
                try:
                    msg = outbox.get(timeout=0.1)
                except queue.Empty:
                    if state["done"]:
                        break
                    continue
                if msg is None:
                    break
                yield msg
        finally:
            rec = state["rec"]
            if rec is not None:
                with self.db.lock:
                    if rec.outbox is outbox:
                        rec.outbox = None
                    self.db.lock.notify_all()

    def _read(self, requests, outbox, state, context):
        db = self.db
        try:
            for m in requests:
                kind = m.WhichOneof("msg")
                with db.lock:
                    if state["rec"] is None:
                        if kind != "hello":
                            outbox.put(None)
                            return
                        rec = db.printers.setdefault(m.hello.printer_id,
                                                     PrinterRecord(m.hello.printer_id))
                        if rec.outbox is not None:
                            rec.outbox.put(None)  # a second stream replaces the first
                        state["rec"] = rec
                        rec.hellos.append(m.hello)
                        rec.outbox = outbox
                        outbox.put(pb.SchedulerMessage(welcome=pb.Welcome(
                            scheduler_id=self.scheduler_id, epoch=1, acked_seq=rec.acked_seq,
                            status_interval_ms=200)))
                    else:
                        rec = state["rec"]
                        if m.seq != 0:
                            if m.seq <= rec.acked_seq:
                                rec.repeats.append(m.seq)
                            else:
                                rec.events.append(m)
                                if self.ack:
                                    rec.acked_seq = m.seq
                            if self.ack:
                                outbox.put(pb.SchedulerMessage(ack=pb.Ack(seq=rec.acked_seq)))
                        elif kind == "status":
                            rec.statuses.append(m.status)
                        else:
                            rec.others.append(m)
                    db.lock.notify_all()
        except grpc.RpcError:
            pass
        except Exception:  # a broken stream ends the call
            pass
        finally:
            state["done"] = True
