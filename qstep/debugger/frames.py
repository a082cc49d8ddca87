"""Call stack across bpf-to-bpf calls, unwound through the JIT's rbp frame chain.

Each JIT function starts ``push rbp; mov rbp, rsp``, so inside a function body
[rbp] is the caller's rbp and [rbp+8] the return address into the caller's JIT
code. At the entry, before the prologue, and at the final ``ret`` the return
address is at [rsp] instead. BPF r10 is rbp, except in functions on a private
stack (see :mod:`qstep.debugger.jitframe`), where it is r9; such a caller saves
r9 right above the return address (``push r9; call``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import capstone

from qstep.debugger.jitframe import layout_of
from qstep.loaded import InsnSite, JitFunction, LoadedProgram
from qstep.target.base import X86Regs

ReadMemory = Callable[[int, int], bytes]
_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
MAX_FRAMES = 16


@dataclass(frozen=True)
class Frame:
    """One BPF function activation."""

    level: int
    function: JitFunction
    site: InsnSite | None
    r10: int
    pc: int
    return_addr: int | None  # where the caller resumes; None for the outermost frame
    cfa: int  # rsp after this frame returns


def _u64(read: ReadMemory, addr: int) -> int:
    return int.from_bytes(read(addr, 8), "little")


def _is_ret(prog: LoadedProgram, pc: int) -> bool:
    ins = next(_CS.disasm(prog.jit_bytes(pc, pc + 1), pc, 1), None)
    return ins is not None and ins.mnemonic == "ret"


def _innermost(prog: LoadedProgram, func: JitFunction, x86: X86Regs,
               read: ReadMemory) -> tuple[int, int]:
    """(address of the return-address slot, caller's rbp) for the current frame."""
    pro = layout_of(prog, func)
    pc = x86.rip
    if pc <= pro.push_rbp or _is_ret(prog, pc):
        return x86.rsp, x86.rbp
    if pc < pro.frame_set:  # rbp pushed, not yet set
        return x86.rsp + 8, _u64(read, x86.rsp)
    return x86.rbp + 8, _u64(read, x86.rbp)


def backtrace(prog: LoadedProgram, x86: X86Regs, read: ReadMemory,
              percpu_offset: Callable[[], int]) -> list[Frame]:
    """Frames from the current one outwards; empty when pc is outside the program.

    ``percpu_offset`` gives this CPU's per-CPU offset, needed only at the entry
    of a function on a private stack.
    """
    func = next((f for f in prog.functions if f.contains(x86.rip)), None)
    if func is None:
        return []
    layout = layout_of(prog, func)
    if layout.private_stack is None and _is_ret(prog, x86.rip):
        r10 = x86.rsp - 8  # after ``leave``: rbp is the caller's again
    else:
        r10 = layout.frame_pointer(x86, percpu_offset)
    slot, caller_rbp = _innermost(prog, func, x86, read)
    frames: list[Frame] = []
    pc = x86.rip
    site = prog.site_at(pc)
    while len(frames) < MAX_FRAMES:
        ret = _u64(read, slot)
        caller = next((f for f in prog.functions if f.contains(ret)), None)
        frames.append(Frame(len(frames), func, site, r10, pc,
                            ret if caller else None, slot + 8))
        if caller is None:
            break
        private = layout_of(prog, caller).private_stack is not None
        r10 = _u64(read, slot + 8) if private else caller_rbp
        func, pc, site = caller, ret, prog.site_at(ret - 1)
        slot, caller_rbp = caller_rbp + 8, _u64(read, caller_rbp)
    return frames
