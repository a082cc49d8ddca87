"""x86-64 JIT state → BPF state.

The x86-64 JIT keeps BPF registers in fixed x86 registers (the same in 6.1 and
6.12, arch/x86/net/bpf_jit_comp.c ``reg2hex``): r0=rax, r1=rdi, r2=rsi, r3=rdx,
r4=rcx, r5=r8, r6=rbx, r7=r13, r8=r14, r9=r15, r10=rbp.
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


def bpf_regs(x86: X86Regs, at_function_entry: bool) -> BpfRegs:
    """BPF registers from x86 ones.

    At a function's entry the prologue (``push rbp; mov rbp, rsp``) has not run
    yet, so the frame pointer r10 is what rbp will become: rsp - 8.
    """
    regs = x86.as_dict()
    values = [regs[name] & MASK64 for name in BPF_TO_X86]
    if at_function_entry:
        values[10] = (x86.rsp - 8) & MASK64
    return BpfRegs(tuple(values))
