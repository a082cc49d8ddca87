"""x86-64 JIT state → BPF state.

The x86-64 JIT keeps BPF registers in fixed x86 registers (the same from 6.1 to
7.3, arch/x86/net/bpf_jit_comp.c ``reg2hex``): r0=rax, r1=rdi, r2=rsi, r3=rdx,
r4=rcx, r5=r8, r6=rbx, r7=r13, r8=r14, r9=r15, r10=rbp. The frame pointer r10
is the exception: where it is depends on the function and the pc
(:mod:`qstep.debugger.jitframe`), so the caller passes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from qstep.target.base import X86Regs

BPF_TO_X86 = ("rax", "rdi", "rsi", "rdx", "rcx", "r8", "rbx", "r13", "r14", "r15", "rbp")
MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class BpfRegs:
    """r0..r10 as unsigned 64-bit values."""

    values: tuple[int, ...]

    def __getitem__(self, n: int) -> int:
        return self.values[n]

    def as_dict(self) -> dict[str, int]:
        return {f"r{n}": v for n, v in enumerate(self.values)}


def bpf_regs(x86: X86Regs, r10: int) -> BpfRegs:
    """BPF registers r0-r9 from x86 ones, and the frame pointer ``r10`` given."""
    regs = x86.as_dict()
    values = [regs[name] & MASK64 for name in BPF_TO_X86[:10]]
    return BpfRegs((*values, r10 & MASK64))
