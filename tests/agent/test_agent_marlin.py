"""pf-agent with the marlin driver over a pseudo-terminal: a small Python
firmware on the master side answers like Marlin (ok, temperatures, M115,
checksum errors with Resend), and a scripted scheduler (fake_scheduler.py)
sends the print. Checks that every gcode line of the file reaches the
firmware exactly once and in order, even with resends, and that the attempt
succeeds; then that a firmware that halts puts the printer in error."""

import os
import pty
import re
import threading
import time
import tty

from conftest import gcode, upload, scheduler_pb2 as pb

LINE_RE = re.compile(rb"^N(\d+) (.*)\*(\d+)$")


def checksum(data):
    c = 0
    for b in data:
        c ^= b
    return c


class FakeFirmware:
    """Marlin's side of the serial protocol on a pty master."""

    def __init__(self, resend_every=0, halt_after=None):
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)
        self.resend_every = resend_every
        self.halt_after = halt_after
        self.expected = 1
        self.executed = []  # commands run, in order
        self.numbered = 0
        self.resends = 0
        self.halted = False
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _send(self, text):
        try:
            os.write(self.master, text.encode())
        except OSError:
            pass

    def _run(self):
        buf = b""
        while not self.stop:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                time.sleep(0.05)  # no reader attached yet
                continue
            if not chunk:
                continue
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                self._line(raw.strip())

    def _line(self, raw):
        if not raw or self.halted:
            return
        m = LINE_RE.match(raw)
        if m is None:  # an unnumbered probe
            self._reply(raw.decode())
            return
        n, cmd, cs = int(m.group(1)), m.group(2), int(m.group(3))
        body = raw[:raw.rindex(b"*")]
        if checksum(body) != cs:
            self._send("Error:checksum mismatch, Last Line: %d\nResend: %d\nok\n"
                       % (self.expected - 1, self.expected))
            return
        if cmd.startswith(b"M110"):
            self.expected = n + 1
            self._send("ok\n")
            return
        if n != self.expected:
            self._send("Error:Line Number is not Last Line Number+1, Last Line: %d\n"
                       "Resend: %d\nok\n" % (self.expected - 1, self.expected))
            return
        self.numbered += 1
        if self.resend_every and self.numbered % self.resend_every == 0:
            self.resends += 1
            self._send("Error:checksum mismatch, Last Line: %d\nResend: %d\nok\n"
                       % (self.expected - 1, self.expected))
            return
        self.expected = n + 1
        self.executed.append(cmd.decode())
        if self.halt_after is not None and len(self.executed) >= self.halt_after:
            self.halted = True
            self._send("Error:Thermal Runaway, system stopped! Heater_ID: 0\n"
                       "Error:Printer halted. kill() called!\n")
            return
        self._reply(cmd.decode())

    def _reply(self, cmd):
        if cmd.startswith("M105"):
            self._send("ok T:210.0 /210.0 B:60.0 /60.0 @:0 B@:0\n")
        elif cmd.startswith("M115"):
            self._send("FIRMWARE_NAME:Marlin 2.1.2 (fake) SOURCE_CODE_URL:x PROTOCOL_VERSION:1.0 "
                       "MACHINE_TYPE:Fake EXTRUDER_COUNT:1\nok\n")
        else:
            self._send("ok\n")

    def close(self):
        self.stop = True
        os.close(self.master)


def _print_commands(data):
    out = []
    for line in data.decode().splitlines():
        line = line.split(";", 1)[0].strip()
        if line:
            out.append(line)
    return out


def test_marlin_print_with_resends(pf_files, fake_factory, fake_db, agent_factory):
    fw = FakeFirmware(resend_every=7)
    try:
        sched = fake_factory()
        data = gcode(60, filler_bytes=6000, tag="marlin")
        digest, size = upload(pf_files.channel, data)
        agent = agent_factory("p-marlin", sched.address, pf_files.address, "--driver", "marlin",
                              "--serial-port", fw.path, "--baud", "115200")
        hello = fake_db.wait_connected("p-marlin")
        assert hello.capabilities.driver == "marlin"
        fake_db.start_print("p-marlin", "a-1", "j-1", digest, size)
        fake_db.wait_event("p-marlin", "a-1", "SUCCEEDED", timeout=60)
        expected = _print_commands(data)
        got = [c for c in fw.executed if not c.startswith(("M105", "M115", "M155"))]
        assert got == expected
        assert fw.resends > 0
        rec = fake_db.printer("p-marlin")
        fake_db.wait(lambda: any(any(t.sensor == "T0" and t.actual == 210.0
                                     for t in s.temperatures) for s in rec.statuses), 15,
                     "temperatures in a status")
        assert "printfarm_agent_serial_resends_total" in agent.metrics()
        # the Hello after a reconnect carries the firmware's name
        agent.stop()
        agent.start()
        hello = fake_db.wait_connected("p-marlin", hellos=2)
        assert hello.capabilities.firmware.startswith("Marlin 2.1.2"), hello.capabilities
        assert hello.current.attempt_id == "a-1"
        assert hello.current.state == pb.ATTEMPT_STATE_SUCCEEDED
    finally:
        fw.close()


def test_marlin_firmware_halt_fails_the_attempt(pf_files, fake_factory, fake_db, agent_factory):
    fw = FakeFirmware(halt_after=20)
    try:
        sched = fake_factory()
        data = gcode(60, filler_bytes=6000, tag="halt")
        digest, size = upload(pf_files.channel, data)
        agent_factory("p-halt", sched.address, pf_files.address, "--driver", "marlin",
                      "--serial-port", fw.path)
        fake_db.wait_connected("p-halt")
        fake_db.start_print("p-halt", "a-1", "j-1", digest, size)
        ev = fake_db.wait_event("p-halt", "a-1", "FAILED", timeout=60)
        assert "halted" in ev[0][2].lower() or "runaway" in ev[0][2].lower(), ev
        rec = fake_db.printer("p-halt")
        fake_db.wait(lambda: any(s.state == pb.PRINTER_STATE_ERROR and s.error
                                 for s in rec.statuses), 15, "an error status")
    finally:
        fw.close()
