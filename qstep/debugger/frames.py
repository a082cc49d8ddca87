"""Call stack across bpf-to-bpf calls, unwound through the JIT's rbp frame chain.

Each JIT function starts ``push rbp; mov rbp, rsp``, so inside a function body
rbp is the BPF frame pointer r10, [rbp] the caller's r10 and [rbp+8] the return
address into the caller's JIT code. At the entry, before the prologue, and at
the final ``ret`` the return address is at [rsp] instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import capstone

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


@dataclass(frozen=True)
class Prologue:
    push_rbp: int  # address of ``push rbp``
    frame_set: int  # address right after ``mov rbp, rsp``


@cache
def _prologue_cached(code: bytes, addr: int) -> Prologue:
    push = None
    for ins in _CS.disasm(code, addr):
        if ins.mnemonic == "push" and ins.op_str == "rbp":
            push = ins.address
        elif push is not None and ins.mnemonic == "mov" and ins.op_str == "rbp, rsp":
            return Prologue(push, ins.address + ins.size)
    return Prologue(addr, addr)


def prologue(prog: LoadedProgram, func: JitFunction) -> Prologue:
    return _prologue_cached(prog.jit_bytes(func.addr, func.addr + min(func.length, 64)), func.addr)


def _u64(read: ReadMemory, addr: int) -> int:
    return int.from_bytes(read(addr, 8), "little")


def _is_ret(prog: LoadedProgram, pc: int) -> bool:
    ins = next(_CS.disasm(prog.jit_bytes(pc, pc + 1), pc, 1), None)
    return ins is not None and ins.mnemonic == "ret"


def _innermost(prog: LoadedProgram, func: JitFunction, x86: X86Regs,
               read: ReadMemory) -> tuple[int, int, int]:
    """(r10, address of the return-address slot, caller's rbp) for the current frame."""
    pro = prologue(prog, func)
    pc = x86.rip
    if pc <= pro.push_rbp or _is_ret(prog, pc):
        return x86.rsp - 8, x86.rsp, x86.rbp
    if pc < pro.frame_set:  # rbp pushed, not yet set
        return x86.rsp, x86.rsp + 8, _u64(read, x86.rsp)
    return x86.rbp, x86.rbp + 8, _u64(read, x86.rbp)


def backtrace(prog: LoadedProgram, x86: X86Regs, read: ReadMemory) -> list[Frame]:
    """Frames from the current one outwards; empty when pc is outside the program."""
    func = next((f for f in prog.functions if f.contains(x86.rip)), None)
    if func is None:
        return []
    r10, slot, caller_rbp = _innermost(prog, func, x86, read)
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
        func, pc, site = caller, ret, prog.site_at(ret - 1)
        r10, slot, caller_rbp = caller_rbp, caller_rbp + 8, _u64(read, caller_rbp)
    return frames
