"""A direct GDB remote serial protocol client for QEMU's gdbstub (unix socket).

Every command waits for its own reply. QEMU quirks handled here:
- it stops the VM when a client connects and, if the VM was running, sends an
  unsolicited stop reply first; it is consumed during the handshake;
- while the VM runs, *any* byte received stops it (and is dropped), so nothing
  but the interrupt byte is ever sent while running;
- ``c`` at a pc with a breakpoint re-stops there at once; ``s`` ignores
  breakpoints, so ``resume()`` steps once first;
- system emulation does not wait for acks, so an ack goes out in front of the
  next packet (one write and one QEMU wake-up less per reply);
- stop replies carry no pc: the registers are read (``g``) after every stop;
- once any client (gdb) negotiated ``multiprocess+``, QEMU stays in that mode for
  later clients too, and then refuses a plain ``D`` (``E22``): ``D;pid`` is sent.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from pathlib import Path

from qstep import interrupts, log
from qstep.target.base import REG_NAMES, Stop, Target, TargetError, X86Regs, check_watch_kind
from qstep.target.packets import (
    PacketError,
    PacketReader,
    StopReply,
    decode_hex,
    frame,
    is_stop_reply,
    parse_stop_reply,
    thread_pid,
)

COMMAND_TIMEOUT = 10.0
GPR_LAYOUT = struct.Struct("<17QI")  # rax..r15, rip (8 bytes each), eflags (4)
SIGINT, SIGTRAP = 2, 5
WATCH_TYPES = {"write": 2, "read": 3, "access": 4}
DEFAULT_PACKET_SIZE = 4096


class RspTarget(Target):
    """One connection to QEMU's gdbstub (connecting stops the VM)."""

    def __init__(self, socket_path: str | Path, timeout: float = COMMAND_TIMEOUT) -> None:
        self.path = str(socket_path)
        self.timeout = timeout
        self._reader = PacketReader()
        self._ack = True
        self._ack_due = False
        self._packet_size = DEFAULT_PACKET_SIZE
        self._running = False
        self._exited = False
        self._action = "attach"  # what the next stop reply answers: attach, step, continue
        self._stop = Stop("interrupt", 0)
        self._pending: Stop | None = None  # a stop resume() already saw
        self._regs: X86Regs | None = None
        self._pid: int | None = None  # set when QEMU speaks multiprocess
        self._bps: set[tuple[int, bool]] = set()
        self._wps: set[tuple[int, int, str]] = set()
        self._sock: socket.socket | None = self._connect()
        try:
            self._handshake()
        except BaseException:
            self._drop()
            raise

    # -- connection ----------------------------------------------------
    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as err:
            sock.close()
            raise TargetError(f"cannot connect to QEMU's gdbstub at {self.path}: {err}") from None
        return sock

    def _handshake(self) -> None:
        """Features, no-ack mode if offered, then the initial stop."""
        features = self._command(b"qSupported", "connecting (is another debugger attached?)")
        for item in features.decode("ascii", "replace").split(";"):
            if item.startswith("PacketSize="):
                self._packet_size = int(item.split("=", 1)[1], 16)
        if b"QStartNoAckMode+" in features.split(b";"):
            self._expect_ok(b"QStartNoAckMode", "switching to no-ack mode")
            self._ack = False
        self._send(b"?")
        reply = self._read_stop(self._deadline(), "the initial stop")
        self._pid = thread_pid(reply.thread) if reply else None
        self._stop = self._stopped(reply)

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _deadline(self, timeout: float | None = None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _live_sock(self, what: str) -> socket.socket:
        if self._sock is None:
            raise TargetError(f"the gdbstub connection is closed ({what})")
        return self._sock

    def _send(self, payload: bytes) -> None:
        """Send a packet, with the ack of the last received packet in front."""
        ack, self._ack_due = (b"+" if self._ack_due else b""), False
        self._send_raw(ack + frame(payload), payload.decode("ascii", "replace"))

    def _send_raw(self, data: bytes, what: str) -> None:
        log.gdb.debug("--> %r", data)
        try:
            self._live_sock(what).sendall(data)
        except OSError as err:
            self._drop()
            raise TargetError(f"QEMU's gdbstub connection failed sending {what!r}: {err}") from None

    def _recv_packet(self, deadline: float, what: str) -> bytes | None:
        """The next packet, or None when ``deadline`` passes first."""
        while True:
            try:
                packet = self._reader.next_packet()
            except PacketError as err:
                raise TargetError(f"garbled packet from QEMU's gdbstub ({what}): {err}") from None
            if packet is not None:
                log.gdb.debug("<-- %s", log.shorten(repr(packet)))
                self._ack_due = self._ack  # sent with the next packet (one write less)
                return packet
            if not self._fill(deadline, what):
                return None

    def _fill(self, deadline: float, what: str) -> bool:
        sock = self._live_sock(what)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
            return False
        try:
            data = sock.recv(65536)
        except OSError as err:
            data, reason = b"", str(err)
        else:
            reason = "connection closed"
        if not data:
            self._drop()
            raise TargetError(f"QEMU's gdbstub went away while {what} ({reason}); "
                              "did QEMU exit?")
        self._reader.feed(data)
        return True

    # -- commands ------------------------------------------------------
    @interrupts.deferred()  # a request and its reply are never cut apart by Ctrl-C
    def _command(self, payload: bytes, what: str) -> bytes:
        """Send one command while stopped and return its reply."""
        self._check_stopped(what)
        self._send(payload)
        deadline = self._deadline()
        while True:
            reply = self._recv_packet(deadline, what)
            if reply is None:
                raise TargetError(f"QEMU's gdbstub did not answer {payload[:40]!r} within "
                                  f"{self.timeout:.0f} s ({what})")
            if not is_stop_reply(reply):
                return reply  # a stop reply here can only be the one sent on connect

    def _expect_ok(self, payload: bytes, what: str) -> None:
        reply = self._command(payload, what)
        if reply == b"OK":
            return
        if not reply:
            raise TargetError(f"QEMU's gdbstub does not support {payload!r} ({what})")
        raise TargetError(f"QEMU's gdbstub refused {payload!r} ({what}): {reply[:40]!r}")

    def _check_stopped(self, what: str) -> None:
        if self._exited:
            raise TargetError(f"the guest has exited ({what})")
        if self.running:
            raise TargetError(f"the target is running; interrupt() it first ({what})")

    # -- stops ---------------------------------------------------------
    def _read_stop(self, deadline: float, what: str) -> StopReply | None:
        while True:
            packet = self._recv_packet(deadline, what)
            if packet is None:
                return None
            if is_stop_reply(packet):
                return parse_stop_reply(packet)
            if not packet.startswith(b"O"):  # O = console output, skip it
                raise TargetError(f"unexpected packet {packet[:40]!r} while {what}")

    def _stopped(self, reply: StopReply | None) -> Stop:
        if reply is None:
            raise TargetError("QEMU's gdbstub sent no stop reply")
        self._running = False
        self._regs = None
        if reply.kind in "WX":
            self._exited = True
            self._stop = Stop("exited", 0)
            return self._stop
        pc = self.registers().rip
        self._stop = Stop(self._reason(reply, pc), pc, reply.watch_addr)
        return self._stop

    def _reason(self, reply: StopReply, pc: int) -> str:
        if reply.watch_addr is not None:
            return "watchpoint"
        if reply.signal == SIGINT or self._action == "attach":
            return "interrupt"
        if reply.signal != SIGTRAP:
            return "signal"
        if self._action == "step":
            return "step"
        return "breakpoint" if any(addr == pc for addr, _ in self._bps) else "signal"

    # -- Target --------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running or self._pending is not None

    def registers(self) -> X86Regs:
        if self._regs is None:
            self._regs = self._read_registers()
        return self._regs

    def _read_registers(self) -> X86Regs:
        try:
            data = decode_hex(self._command(b"g", "reading registers"), "g")
        except PacketError as err:
            raise TargetError(f"cannot read registers: {err}") from None
        if len(data) < GPR_LAYOUT.size:
            raise TargetError(f"'g' reply has {len(data)} bytes; {len(REG_NAMES)} registers "
                              f"need {GPR_LAYOUT.size}")
        return X86Regs.from_values(list(GPR_LAYOUT.unpack_from(data)))

    def read_memory(self, addr: int, size: int) -> bytes:
        chunk = max(16, (self._packet_size - 8) // 2)
        out = bytearray()
        while len(out) < size:
            part = min(chunk, size - len(out))
            out += self._read_chunk(addr + len(out), part)
        return bytes(out)

    def _read_chunk(self, addr: int, size: int) -> bytes:
        reply = self._command(b"m%x,%x" % (addr, size), f"reading memory at {addr:#x}")
        try:
            data = decode_hex(reply, f"m {addr:#x},{size}")
        except PacketError:
            raise TargetError(f"cannot read {size} bytes of guest memory at {addr:#x} "
                              f"(QEMU replied {reply[:20]!r})") from None
        if len(data) != size:
            raise TargetError(f"short read at {addr:#x}: {len(data)} of {size} bytes")
        return data

    def write_register(self, name: str, value: int) -> None:
        number = REG_NAMES.index(name)  # the 'g' order is QEMU's register numbering
        self._expect_ok(b"P%x=%s" % (number, (value % (1 << 64)).to_bytes(8, "little").hex()
                                     .encode()), f"writing {name}")
        self._regs = None

    def write_memory(self, addr: int, data: bytes) -> None:
        self._expect_ok(b"M%x,%x:%s" % (addr, len(data), data.hex().encode()),
                        f"writing {len(data)} bytes at {addr:#x}")

    def set_breakpoint(self, addr: int, hardware: bool = True) -> None:
        if (addr, hardware) not in self._bps:
            self._expect_ok(b"Z%d,%x,1" % (int(hardware), addr), f"breakpoint at {addr:#x}")
            self._bps.add((addr, hardware))

    def clear_breakpoint(self, addr: int, hardware: bool = True) -> None:
        if (addr, hardware) in self._bps:
            self._expect_ok(b"z%d,%x,1" % (int(hardware), addr), f"breakpoint at {addr:#x}")
            self._bps.discard((addr, hardware))

    def set_watchpoint(self, addr: int, length: int, kind: str) -> None:
        check_watch_kind(kind)
        if (addr, length, kind) not in self._wps:
            self._expect_ok(b"Z%d,%x,%x" % (WATCH_TYPES[kind], addr, length),
                            f"{kind} watchpoint at {addr:#x}")
            self._wps.add((addr, length, kind))

    def clear_watchpoint(self, addr: int, length: int, kind: str) -> None:
        check_watch_kind(kind)
        if (addr, length, kind) in self._wps:
            self._expect_ok(b"z%d,%x,%x" % (WATCH_TYPES[kind], addr, length),
                            f"{kind} watchpoint at {addr:#x}")
            self._wps.discard((addr, length, kind))

    def _step_once(self) -> Stop:
        self._check_stopped("step")
        self._action = "step"
        self._send(b"s")
        reply = self._read_stop(self._deadline(), "single-stepping")
        if reply is None:
            self._running = True
            stop = self.interrupt()
            raise TargetError(f"a single step did not finish within {self.timeout:.0f} s "
                              f"(interrupted at {stop.pc:#x})")
        return self._stopped(reply)

    @interrupts.deferred()
    def resume(self) -> None:
        self._check_stopped("resume")
        if any(addr == self.registers().rip for addr, _ in self._bps):
            stop = self.step()  # QEMU would re-stop here; a step ignores breakpoints
            if stop.reason != "step" or any(addr == stop.pc for addr, _ in self._bps):
                self._pending = Stop("breakpoint", stop.pc) if stop.reason == "step" else stop
                return
        self._action = "continue"
        self._send(b"c")
        self._running = True

    def wait(self, timeout: float) -> Stop | None:
        if self._pending is not None:
            stop, self._pending = self._pending, None
            self._stop = stop
            return stop
        if not self._running:
            return self._stop
        reply = self._read_stop(time.monotonic() + timeout, "waiting for a stop")
        return None if reply is None else self._stopped(reply)

    @interrupts.deferred()
    def interrupt(self) -> Stop:
        if not self._running:
            return self.wait(0) or self._stop
        self._send_raw(b"\x03", "interrupt")
        stop = self.wait(self.timeout)
        if stop is None:
            raise TargetError(f"the guest did not stop within {self.timeout:.0f} s of an "
                              "interrupt")
        return stop

    def close(self, resume: bool = True) -> None:
        """Detach (QEMU drops all breakpoints and resumes); see ``Target.close``."""
        if self._sock is None:
            return
        try:
            if not self._exited:
                self.interrupt()
                if resume:  # QEMU keeps multiprocess mode once any client asked for it
                    pid = b"" if self._pid is None else b";%x" % self._pid
                    self._expect_ok(b"D" + pid, "detaching")
                else:
                    self.clear_all()
        finally:
            self._drop()

    def fileno(self) -> int:
        return self._live_sock("fileno").fileno()
