"""The gdb/MI backend: an owned ``gdb --interpreter=mi3`` connected to QEMU's gdbstub.

Slower than ``RspTarget`` (gdb adds its own packets and work per stop) but it is
the reference client. gdb steps off a breakpoint at the pc by itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qstep import interrupts
from qstep.target.base import REG_NAMES, Stop, Target, TargetError, X86Regs, check_watch_kind
from qstep.target.mi import MiChannel, Record

COMMAND_TIMEOUT = 30.0
SETUP = ("-gdb-set mi-async on", "-gdb-set confirm off", "-gdb-set pagination off",
         "-gdb-set architecture i386:x86-64")
WATCH_FLAGS = {"write": "", "read": "-r ", "access": "-a "}
WATCH_KEYS = ("wpt", "hw-rwpt", "hw-awpt")
REASONS = {
    "breakpoint-hit": "breakpoint", "end-stepping-range": "step",
    "watchpoint-trigger": "watchpoint", "read-watchpoint-trigger": "watchpoint",
    "access-watchpoint-trigger": "watchpoint", "exited": "exited",
    "exited-normally": "exited", "exited-signalled": "exited",
}


class GdbMiTarget(Target):
    """QEMU's gdbstub through gdb; the gdb process lives and dies with this object."""

    def __init__(self, socket_path: str | Path, timeout: float = COMMAND_TIMEOUT,
                 gdb: str = "gdb") -> None:
        self.path = str(socket_path)
        self.timeout = timeout
        self._running = False
        self._regs: X86Regs | None = None
        self._bps: dict[tuple[int, bool], str] = {}
        self._wps: dict[tuple[int, int, str], str] = {}
        self._pending: Stop | None = None  # a stop the step off a breakpoint already made
        self._closed = False
        self._chan = MiChannel([gdb, "--interpreter=mi3", "-nx", "-q"])
        try:
            self._numbers = self._connect()
            self._stop = Stop("interrupt", self.registers().rip)
        except BaseException:
            self._chan.shutdown(grace=0)
            raise

    @property
    def pid(self) -> int:
        """The gdb process id."""
        return self._chan.pid

    def _command(self, cmd: str, what: str) -> dict[str, Any]:
        if self._closed:
            raise TargetError(f"the target is closed ({what})")
        return self._chan.command(cmd, what, self.timeout).get("payload") or {}

    def _connect(self) -> list[str]:
        """Set gdb up, connect, and return the register numbers in ``REG_NAMES`` order."""
        if any(c.isspace() for c in self.path):
            raise TargetError(f"gdb cannot connect to a socket path with blanks: {self.path!r}")
        for cmd in SETUP:
            self._command(cmd, "setting gdb up")
        self._command(f"-target-select remote {self.path}", "connecting to QEMU's gdbstub")
        names = self._command("-data-list-register-names", "listing registers")
        positions = {name: str(i) for i, name in enumerate(names.get("register-names", []))}
        missing = [n for n in REG_NAMES if n not in positions]
        if missing:
            raise TargetError(f"gdb does not know the registers {', '.join(missing)}")
        return [positions[n] for n in REG_NAMES]

    def _check_stopped(self, what: str) -> None:
        if self._running:
            raise TargetError(f"the target is running; interrupt() it first ({what})")

    # -- stops ---------------------------------------------------------
    def _stopped(self, record: Record) -> Stop:
        payload = record.get("payload") or {}
        self._running = False
        self._regs = None
        reason = self._reason(payload)
        if reason == "exited":
            self._stop = Stop("exited", 0)
            return self._stop
        frame = payload.get("frame") or {}
        pc = int(frame["addr"], 16) if "addr" in frame else self.registers().rip
        self._stop = Stop(reason, pc, self._watch_addr(payload))
        return self._stop

    @staticmethod
    def _reason(payload: dict[str, Any]) -> str:
        reason = payload.get("reason", "")
        if reason == "signal-received":
            return "interrupt" if payload.get("signal-name") == "SIGINT" else "signal"
        return REASONS.get(reason, "interrupt" if not reason else "signal")

    def _watch_addr(self, payload: dict[str, Any]) -> int | None:
        for key in WATCH_KEYS:
            if key in payload:
                number = payload[key].get("number")
                return next((k[0] for k, n in self._wps.items() if n == number), None)
        return None

    def _next_stop(self, timeout: float, what: str) -> Stop | None:
        record = self._chan.next_stop(time.monotonic() + timeout, what)
        return None if record is None else self._stopped(record)

    # -- Target --------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def registers(self) -> X86Regs:
        if self._regs is None:
            self._check_stopped("reading registers")
            payload = self._command("-data-list-register-values --skip-unavailable x "
                                    + " ".join(self._numbers), "reading registers")
            values = {v["number"]: int(v["value"], 16) for v in payload["register-values"]}
            try:
                self._regs = X86Regs.from_values([values[n] for n in self._numbers])
            except KeyError:
                raise TargetError(f"gdb did not report every register: {values}") from None
        return self._regs

    def read_memory(self, addr: int, size: int) -> bytes:
        self._check_stopped("reading memory")
        what = f"reading {size} bytes at {addr:#x}"
        payload = self._command(f"-data-read-memory-bytes {addr:#x} {size}", what)
        data = b"".join(bytes.fromhex(block["contents"]) for block in payload["memory"])
        if len(data) != size:
            raise TargetError(f"short read at {addr:#x}: {len(data)} of {size} bytes")
        return data

    def set_breakpoint(self, addr: int, hardware: bool = True) -> None:
        if (addr, hardware) not in self._bps:
            flag = "-h " if hardware else ""
            payload = self._command(f"-break-insert {flag}*{addr:#x}", f"breakpoint at {addr:#x}")
            self._bps[(addr, hardware)] = payload["bkpt"]["number"]

    def clear_breakpoint(self, addr: int, hardware: bool = True) -> None:
        number = self._bps.pop((addr, hardware), None)
        if number is not None:
            self._command(f"-break-delete {number}", f"deleting the breakpoint at {addr:#x}")

    def set_watchpoint(self, addr: int, length: int, kind: str) -> None:
        check_watch_kind(kind)
        key = (addr, length, kind)
        if key not in self._wps:
            payload = self._command(f"-break-watch {WATCH_FLAGS[kind]}"
                                    f"*(char(*)[{length}]){addr:#x}",
                                    f"{kind} watchpoint at {addr:#x}")
            found = next(payload[k] for k in WATCH_KEYS if k in payload)
            self._wps[key] = found["number"]

    def clear_watchpoint(self, addr: int, length: int, kind: str) -> None:
        check_watch_kind(kind)
        number = self._wps.pop((addr, length, kind), None)
        if number is not None:
            self._command(f"-break-delete {number}", f"deleting the watchpoint at {addr:#x}")

    def _step_once(self) -> Stop:
        self._check_stopped("step")
        self._command("-exec-step-instruction", "single-stepping")
        self._running = True
        stop = self._next_stop(self.timeout, "single-stepping")
        if stop is None:
            stop = self.interrupt()
            raise TargetError(f"a single step did not finish within {self.timeout:.0f} s "
                              f"(interrupted at {stop.pc:#x})")
        return stop

    @interrupts.deferred()
    def resume(self) -> None:
        self._check_stopped("resume")
        # gdb steps over a breakpoint at the pc by itself, but with one raw single step:
        # when QEMU ends it without executing anything (see Target.step), the continue
        # re-stops at the same breakpoint. Step off it here, with the retries.
        if any(addr == self.registers().rip for addr, _hw in self._bps):
            stop = self.step()
            if stop.reason != "step" or any(addr == stop.pc for addr, _hw in self._bps):
                self._pending = Stop("breakpoint", stop.pc) if stop.reason == "step" else stop
                return
        self._command("-exec-continue", "resuming")
        self._running = True

    def wait(self, timeout: float) -> Stop | None:
        if self._pending is not None:
            stop, self._pending = self._pending, None
            self._stop = stop
            return stop
        if not self._running:
            return self._stop
        return self._next_stop(timeout, "waiting for a stop")

    @interrupts.deferred()
    def interrupt(self) -> Stop:
        if not self._running:
            return self.wait(0) or self._stop
        if self._chan.has_stop():
            return self._next_stop(0, "interrupting") or self._stop
        try:
            self._command("-exec-interrupt", "interrupting")
        except TargetError:
            if not self._chan.has_stop():  # the target stopped by itself meanwhile
                raise
        stop = self._next_stop(self.timeout, "interrupting")
        if stop is None:
            raise TargetError(f"the guest did not stop within {self.timeout:.0f} s of an "
                              "interrupt")
        return stop

    def close(self, resume: bool = True) -> None:
        """Detach (QEMU resumes) and end gdb; see ``Target.close``."""
        if self._closed:
            return
        try:
            if self._chan.death is None:
                self._leave(resume)
        finally:
            self._closed = True
            self._chan.shutdown()

    def _leave(self, resume: bool) -> None:
        self.interrupt()
        if resume:
            self._command("-target-detach", "detaching")
        else:
            self.clear_all()
            self._command("-interpreter-exec console disconnect", "disconnecting")
        self._chan.exit()

    def fileno(self) -> int:
        return self._chan.fileno()
