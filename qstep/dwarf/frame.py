"""A BPF function's stack size (LLVM's StackSize), which clang-19's DWARF needs.

clang-19 measures r10-relative DWARF offsets from ``r10 - StackSize``. StackSize
is not in the DWARF; it is the depth of the lowest stack byte the function
touches, rounded up to 8 (LLVM aligns BPF frames to 8), which is also what the
x86-64 JIT reserves (``sub rsp, round_up(stack_depth, 8)``).
"""

from __future__ import annotations

from collections.abc import Iterable

import capstone

from qstep.bpf import insn as bi
from qstep.bpf.insn import Insn

FP = 10
STACK_ALIGN = 8
_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def _round_up(n: int) -> int:
    return (n + STACK_ALIGN - 1) // STACK_ALIGN * STACK_ALIGN


def stack_size_from_insns(insns: Iterable[Insn]) -> int:
    """StackSize from the lowest r10 offset the code uses (accesses and ``rX = r10 + k``)."""
    lowest = 0
    derived: dict[int, int] = {}  # register → its offset from r10 (straight-line copies)
    for ins in insns:
        cls = ins.cls
        if cls in (bi.LDX, bi.STX, bi.ST):
            base = ins.src if cls == bi.LDX else ins.dst
            if base == FP or base in derived:
                lowest = min(lowest, derived.get(base, 0) + ins.off)
            if cls == bi.LDX:
                derived.pop(ins.dst, None)
            continue
        if cls == bi.ALU64 and ins.op == bi.ALU_MOV and ins.uses_reg_src and ins.src == FP:
            derived[ins.dst] = 0
            continue
        if cls == bi.ALU64 and ins.op == 0x00 and not ins.uses_reg_src and ins.dst in derived:
            derived[ins.dst] += ins.imm
            lowest = min(lowest, derived[ins.dst])
            continue
        if cls in (bi.ALU, bi.ALU64, bi.LD):
            derived.pop(ins.dst, None)
        elif ins.is_call:
            for reg in range(6):
                derived.pop(reg, None)
    return _round_up(-lowest)


def stack_size_from_prologue(code: bytes, addr: int = 0) -> int | None:
    """The ``sub rsp, imm`` of an x86-64 JIT prologue (None when there is none)."""
    for ins in _CS.disasm(code[:64], addr):
        if ins.mnemonic == "sub" and ins.op_str.startswith("rsp, "):
            return int(ins.op_str.split(", ")[1], 0)
        if ins.mnemonic not in ("nop", "push", "mov", "xor", "endbr64"):
            break
    return None
