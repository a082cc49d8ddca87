"""Expression environment over a stopped program: BPF registers and guest memory."""

from __future__ import annotations

from collections.abc import Callable

from qstep.debugger.engine import Debugger
from qstep.errors import QstepError, UsageError

NameLookup = Callable[[str], "int | bytes | None"]


class UnreadableMemory(UsageError):
    """Guest memory that cannot be read (an in-guest probe's probe_read would fail too)."""


class StoppedEnv:
    """``reg``/``mem``/``name`` for ``qstep.expr.evaluate`` at the current stop."""

    def __init__(self, dbg: Debugger, names: NameLookup | None = None) -> None:
        self._dbg = dbg
        self._regs = dbg.regs()
        self._names = names

    def reg(self, n: int) -> int:
        return self._regs[n]

    def mem(self, addr: int, size: int) -> bytes:
        try:
            return self._dbg.read_memory(addr, size)
        except QstepError as err:
            raise UnreadableMemory(f"cannot read {size} bytes at {addr:#x}: {err}") from err

    def name(self, name: str) -> int | bytes:
        found = self._names(name) if self._names is not None else None
        if found is None:
            raise UsageError(f"unknown name '{name}' (no C variable of that name here; "
                             "registers are $r0..$r10, memory mem(ADDR, SIZE))")
        return found
