"""Tiny BPF assembler: build `Insn` records by hand (probes, tests) and lay them out.

Builders return instructions with index 0; `assemble` assigns slot indexes in order.
`src=None` selects the immediate (BPF_K) form of ALU and jump instructions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from qstep.bpf import insn as bi
from qstep.bpf.insn import Insn, encode

_SIZES = {1: bi.BPF_B, 2: bi.BPF_H, 4: bi.BPF_W, 8: bi.BPF_DW}


def raw(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Insn:
    """An instruction from its raw fields."""
    return Insn(0, code, dst, src, off, imm)


def _alu(cls: int, op: int, dst: int, src: int | None, imm: int, off: int) -> Insn:
    if src is None:
        return raw(cls | op | bi.BPF_K, dst, 0, off, imm)
    return raw(cls | op | bi.BPF_X, dst, src, off, imm)


def alu64(op: int, dst: int, src: int | None = None, imm: int = 0, off: int = 0) -> Insn:
    """64-bit ALU op (`op` = code & 0xf0, e.g. 0x00 add, 0xd0 end)."""
    return _alu(bi.ALU64, op, dst, src, imm, off)


def alu32(op: int, dst: int, src: int | None = None, imm: int = 0, off: int = 0) -> Insn:
    """32-bit ALU op."""
    return _alu(bi.ALU, op, dst, src, imm, off)


def jmp(op: int, dst: int = 0, src: int | None = None, imm: int = 0, off: int = 0) -> Insn:
    """64-bit jump (`op` = code & 0xf0, e.g. 0x10 jeq, 0x00 ja)."""
    return _alu(bi.JMP, op, dst, src, imm, off)


def jmp32(op: int, dst: int = 0, src: int | None = None, imm: int = 0, off: int = 0) -> Insn:
    """32-bit jump; `jmp32(0, imm=n)` is gotol."""
    return _alu(bi.JMP32, op, dst, src, imm, off)


def ldx(size: int, dst: int, src: int, off: int = 0, signed: bool = False) -> Insn:
    """dst = *(uN / sN *)(src + off)."""
    mode = bi.MODE_MEMSX if signed else bi.MODE_MEM
    return raw(bi.LDX | mode | _SIZES[size], dst, src, off)


def st(size: int, dst: int, off: int, imm: int) -> Insn:
    """*(uN *)(dst + off) = imm."""
    return raw(bi.ST | bi.MODE_MEM | _SIZES[size], dst, 0, off, imm)


def stx(size: int, dst: int, src: int, off: int = 0) -> Insn:
    """*(uN *)(dst + off) = src."""
    return raw(bi.STX | bi.MODE_MEM | _SIZES[size], dst, src, off)


def atomic(size: int, dst: int, src: int, off: int, op: int) -> Insn:
    """Atomic operation `op` (imm: 0x00 add, 0x01 fetch add, 0xe1 xchg, ...) on dst + off."""
    return raw(bi.STX | bi.MODE_ATOMIC | _SIZES[size], dst, src, off, op)


def ldimm64(dst: int, value: int, src: int = 0) -> Insn:
    """dst = 64-bit immediate (two slots)."""
    value &= (1 << 64) - 1
    lo = value & 0xFFFFFFFF
    return Insn(0, bi.LDIMM64_CODE, dst, src, 0, lo - (1 << 32) if lo >> 31 else lo, value, 2)


def call(imm: int, src: int = 0) -> Insn:
    """Helper call (src 0) or bpf-to-bpf call (src 1, imm = pc-relative target)."""
    return raw(bi.JMP | bi.JMP_CALL, 0, src, 0, imm)


def exit_() -> Insn:
    """The exit instruction."""
    return raw(bi.JMP | bi.JMP_EXIT)


def assemble(insns: Iterable[Insn], start: int = 0) -> list[Insn]:
    """Assign consecutive slot indexes from `start`."""
    out: list[Insn] = []
    index = start
    for i in insns:
        out.append(dataclasses.replace(i, index=index))
        index += i.size
    return out


def to_bytes(insns: Iterable[Insn]) -> bytes:
    """Raw little-endian encoding of `insns`."""
    return b"".join(encode(i) for i in insns)
