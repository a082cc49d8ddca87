"""Expression environment over a stopped program: BPF registers and guest memory."""

from __future__ import annotations

from qstep.debugger.engine import Debugger
from qstep.errors import QstepError, UsageError


class UnreadableMemory(UsageError):
    """Guest memory that cannot be read (an in-guest probe's probe_read would fail too)."""


class StoppedEnv:
    """``reg``/``mem``/``name`` for ``qstep.expr.evaluate`` at the current stop."""

    def __init__(self, dbg: Debugger) -> None:
        self._dbg = dbg
        self._regs = dbg.regs()

    def reg(self, n: int) -> int:
        return self._regs[n]

    def mem(self, addr: int, size: int) -> bytes:
        try:
            return self._dbg.read_memory(addr, size)
        except QstepError as err:
            raise UnreadableMemory(f"cannot read {size} bytes at {addr:#x}: {err}") from err

    def name(self, name: str) -> int | bytes:
        raise UsageError(f"unknown name '{name}' (C variables need the object's DWARF; "
                         "registers are $r0..$r10, memory mem(ADDR, SIZE))")
