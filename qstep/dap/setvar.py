"""setVariable where it is safe: registers r0-r9 that hold no pointer, and C objects in
the BPF stack of a frame. Everything else is refused with the reason.

A register that holds a kernel pointer (ctx, packet, map value, stack) is refused:
the verifier proved the program's memory accesses for the pointers it computed, and
another pointer could make the kernel fault. Scalars and stack bytes are the
program's own data (a value outside what the verifier proved at a later access is
the user's experiment, as in any debugger).
"""

from __future__ import annotations

from typing import Any

from qstep.dap.state import DapState, Result
from qstep.debugger.jitframe import layout_of
from qstep.dwarf.format import format_value
from qstep.dwarf.types import BASE, ENUM, POINTER
from qstep.dwarf.values import Value
from qstep.errors import UsageError
from qstep.target.base import KERNEL_BASE

MASK64 = (1 << 64) - 1


def encode_int(value: int, size: int, what: str) -> bytes:
    """``value`` in ``size`` little-endian bytes; a one-line error if it does not fit."""
    if not -(1 << (8 * size - 1)) <= value < 1 << (8 * size):
        raise UsageError(f"{what}: {value} does not fit in {size} bytes")
    return (value % (1 << (8 * size))).to_bytes(size, "little")


class SetVariable:
    """The ``setVariable`` request."""

    def __init__(self, state: DapState) -> None:
        self.s = state

    def req_setVariable(self, args: dict[str, Any]) -> Result:
        name, ref = str(args["name"]), int(args["variablesReference"])
        if self.s.handles.evaluate_name(ref, name) is None:
            self.s.handles.children(ref)  # a client may set without listing first
        expr = self.s.handles.evaluate_name(ref, name) or name
        new = self._number(str(args["value"]))
        if expr.startswith("$r") and expr[2:].isdigit():
            return self._register(int(expr[2:]), new), None
        return self._c_object(expr, new), None

    def _number(self, text: str) -> int:
        data = self.s.command_set().cmd_print(text).data
        value = data.get("value")
        if not isinstance(value, int):
            raise UsageError(f"setVariable: {text!r} is not a number")
        return value

    def _register(self, n: int, value: int) -> dict[str, Any]:
        dbg = self.s.debugger()
        old = dbg.regs()[n]
        if old >= KERNEL_BASE:
            raise UsageError(f"r{n} holds a kernel pointer ({old:#x}); only scalars may be "
                             "set (another pointer could make the kernel fault)")
        dbg.write_register(n, value & MASK64)
        now = dbg.regs()[n]
        return {"value": f"{now:#x}", "variablesReference": 0}

    def _c_object(self, expr: str, value: int) -> dict[str, Any]:
        source = self.s.command_set().source
        found = source.resolve(expr) if source is not None else None
        if found is None:
            raise UsageError(f"setVariable: {expr} is not a C object here")
        if found.address is None:
            raise UsageError(f"{expr} is not in memory here (a register, a constant or "
                             "optimized out); set its register in Registers")
        size = len(found.data)
        if not self._in_stack(found.address, size):
            raise UsageError(f"{expr} is at {found.address:#x}, outside the BPF stack; only "
                             "stack objects and registers may be set")
        kind = found.type.strip().kind
        if kind == POINTER:
            raise UsageError(f"{expr} is a pointer; only scalars may be set")
        if kind not in (BASE, ENUM) or size > 8:
            raise UsageError(f"{expr} is a {found.type.c_name()}; set one of its members")
        dbg = self.s.debugger()
        dbg.write_memory(found.address, encode_int(value, size, expr))
        now = Value(found.type, dbg.read_memory(found.address, size), (True,) * size,
                    found.address)
        return {"value": format_value(now, expr), "type": found.type.c_name(),
                "variablesReference": 0}

    def _in_stack(self, addr: int, size: int) -> bool:
        """Inside some frame's BPF stack: [r10 - stack size, r10)."""
        dbg = self.s.debugger()
        for frame in dbg.frames():
            depth = layout_of(dbg.prog, frame.function).stack_size or 0
            if frame.r10 - depth <= addr and addr + size <= frame.r10:
                return True
        return False
