"""Callee-saved BPF registers (r6-r9) of calling frames, from the JIT prologues.

A JIT-compiled function saves the x86 registers behind r6-r9 (rbx, r13, r14, r15)
that it uses with ``push`` right after ``push rbp; mov rbp, rsp; sub rsp, N``;
one it does not use still holds its caller's value. So a calling frame's rN is
the slot of the nearest inner frame that pushed it, or the current register.
The slots are read from each function's own prologue, not assumed per kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import capstone

from qstep.debugger.frames import Frame
from qstep.debugger.regs import BPF_TO_X86
from qstep.loaded import JitFunction, LoadedProgram

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
CALLEE_SAVED = (6, 7, 8, 9)
_PROLOGUE_OPS = ("nop", "endbr64", "xor", "push", "mov", "sub")


@cache
def _slots(code: bytes, addr: int) -> tuple[tuple[int, int], ...]:
    by_x86 = {BPF_TO_X86[n]: n for n in CALLEE_SAVED}
    offset: int | None = None  # rsp - rbp, once rbp is set
    slots = []
    for ins in _CS.disasm(code, addr):
        if ins.mnemonic not in _PROLOGUE_OPS:
            break
        if ins.mnemonic == "mov" and ins.op_str == "rbp, rsp":
            offset = 0
        elif offset is None:
            continue
        elif ins.mnemonic == "sub" and ins.op_str.startswith("rsp, "):
            offset -= int(ins.op_str.split(", ")[1], 0)
        elif ins.mnemonic == "push":
            offset -= 8
            if ins.op_str in by_x86:
                slots.append((by_x86[ins.op_str], offset))
        elif ins.mnemonic == "mov":
            break  # the body starts (a BPF mov)
    return tuple(slots)


def saved_registers(prog: LoadedProgram, func: JitFunction) -> dict[int, int]:
    """BPF register → its save slot's offset from the function's r10 (rbp)."""
    return dict(_slots(prog.jit_bytes(func.addr, func.addr + min(func.length, 96)), func.addr))


def caller_register(prog: LoadedProgram, frames: list[Frame], level: int, n: int,
                    current: int, read: Callable[[int, int], bytes]) -> int | None:
    """rN of frame ``level`` (None for r0-r5, which calls clobber)."""
    if n == 10:
        return frames[level].r10
    if n not in CALLEE_SAVED:
        return None
    for inner in reversed(frames[:level]):
        if inner.level == 0 and inner.pc == inner.function.addr:
            continue  # stopped at its entry: its prologue has not saved anything yet
        slot = saved_registers(prog, inner.function).get(n)
        if slot is not None:
            return int.from_bytes(read(inner.r10 + slot, 8), "little")
    return current
