"""Where a JIT-compiled BPF function keeps its frame pointer, read from its prologue.

The x86-64 JIT's prologue differs by kernel and by program, so qstep reads what
the kernel emitted instead of assuming:

- 6.1: ``nop5; nop2|xor eax,eax; push rbp; mov rbp,rsp; sub rsp,N; push callee-saved``;
  6.12+ adds ``endbr64`` at the entry and after ``mov rbp,rsp``. BPF r10 is rbp.
- 6.13+ runs tracing programs with 64 bytes of stack or more on a per-CPU private
  stack: after ``push rbp; mov rbp,rsp`` the prologue loads
  ``mov|movabs r9, PTR; add r9, gs:[this_cpu_off]`` and BPF r10 is x86 r9; a call
  from such a function is ``push r9; call; pop r9``.

A prologue matching neither is refused (:class:`JitLayoutError`) rather than
guessed, because a wrong frame pointer would show wrong stack values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import capstone
from capstone import x86 as cs_x86

from qstep.errors import QstepError
from qstep.loaded import JitFunction, LoadedProgram
from qstep.target.base import X86Regs

PROLOGUE_WINDOW = 96  # bytes: entry padding, frame set-up, private stack pointer
_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_CS.detail = True
MASK64 = (1 << 64) - 1


class JitLayoutError(QstepError):
    """The JIT prologue of a function is not one qstep knows how to read."""


@dataclass(frozen=True)
class FrameLayout:
    """What one JIT function's prologue does, as addresses and registers."""

    entry: int
    push_rbp: int  # address of ``push rbp``
    frame_set: int  # address right after ``mov rbp, rsp``
    fp_reg: str  # x86 register holding BPF r10 in the body: "rbp" or "r9"
    fp_ready: int  # from this address on, fp_reg holds r10
    stack_size: int | None  # ``sub rsp, N`` (None: no stack, or a private stack)
    private_stack: int | None  # r9 frames: the per-CPU pointer before the CPU offset

    def frame_pointer(self, x86: X86Regs, percpu_offset: Callable[[], int]) -> int:
        """BPF r10 at ``x86.rip`` inside this function (before, in or after the prologue)."""
        pc = x86.rip
        if self.private_stack is not None:
            if pc >= self.fp_ready:
                return x86.r9
            return (self.private_stack + percpu_offset()) & MASK64
        if pc <= self.push_rbp:
            return (x86.rsp - 8) & MASK64
        if pc < self.frame_set:
            return x86.rsp
        return x86.rbp


def _is(ins: capstone.CsInsn, mnemonic: str, op_str: str | None = None) -> bool:
    return bool(ins.mnemonic == mnemonic and (op_str is None or ins.op_str == op_str))


def _private_stack(insns: list[capstone.CsInsn], i: int) -> tuple[int, int] | None:
    """(pointer, address after) for ``mov r9, PTR; add r9, gs:[...]`` at insns[i]."""
    if i + 1 >= len(insns):
        return None
    load, add = insns[i], insns[i + 1]
    if load.mnemonic not in ("mov", "movabs") or not load.op_str.startswith("r9, "):
        return None
    if not _is(add, "add") or not add.op_str.startswith("r9, qword ptr gs:["):
        return None
    imm = load.operands[1]
    if imm.type != cs_x86.X86_OP_IMM:
        return None
    return imm.imm & MASK64, add.address + add.size


@cache
def parse_prologue(code: bytes, addr: int) -> FrameLayout:
    """Read the layout from the first bytes (at most the function) of a JIT function."""
    insns = list(_CS.disasm(code, addr))
    push = next((i for i, ins in enumerate(insns) if _is(ins, "push", "rbp")), None)
    if push is None or push + 1 >= len(insns) or not _is(insns[push + 1], "mov", "rbp, rsp"):
        raise JitLayoutError(f"unknown JIT prologue at {addr:#x} (no 'push rbp; mov rbp, rsp'): "
                             "qstep cannot tell where this kernel keeps the BPF frame pointer")
    frame_set = insns[push + 1].address + insns[push + 1].size
    stack = None
    for i in range(push + 2, len(insns)):
        ins = insns[i]
        if _is(ins, "sub") and ins.op_str.startswith("rsp, ") and stack is None:
            stack = ins.operands[1].imm
        priv = _private_stack(insns, i)
        if priv is not None:
            return FrameLayout(addr, insns[push].address, frame_set, "r9", priv[1], stack, priv[0])
    return FrameLayout(addr, insns[push].address, frame_set, "rbp", frame_set, stack, None)


def layout_of(prog: LoadedProgram, func: JitFunction) -> FrameLayout:
    """The frame layout of one JIT function of a loaded program."""
    end = func.addr + min(func.length, PROLOGUE_WINDOW)
    return parse_prologue(prog.jit_bytes(func.addr, end), func.addr)


def needs_percpu_offset(prog: LoadedProgram) -> bool:
    """Whether a function of ``prog`` runs on a private (per-CPU) stack."""
    return any(layout_of(prog, f).private_stack is not None for f in prog.functions)
