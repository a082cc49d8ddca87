"""qstep.oracle.step against the host kernel: every instruction form, run by BPF_PROG_TEST_RUN.

Each case is one instruction wrapped in an XDP program that loads r7, r8, r0 and a
stack slot from the packet, executes it, and writes r7, r8, r0, the slot and a
"branch taken" marker back into the packet. The kernel's output (JIT-compiled, after
the verifier's div/mod rewrites) must equal what the oracle computes from the inputs.
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from conftest import require_tool

from qstep.bpf import insn as bi
from qstep.bpf.asm import (
    alu32,
    alu64,
    assemble,
    atomic,
    exit_,
    jmp,
    jmp32,
    ldimm64,
    ldx,
    st,
    stx,
    to_bytes,
)
from qstep.bpf.insn import Insn, format_insn
from qstep.oracle import FlatMemory, step
from qstep.oracle.hostrun import load_raw, prog_run

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or os.uname().machine != "x86_64",
                                reason="loads BPF on the host: needs root on x86-64")


@pytest.fixture(autouse=True)
def _bpftool() -> None:
    require_tool("bpftool")

RUNS = 120
FP = 0x7F00_0000
PKT_LEN = 72
DST, SRC = 7, 8

# ---- cases ---------------------------------------------------------------------------------

SHIFTS, DIVMOD = (0x60, 0x70, 0xC0), (0x30, 0x90)
K_IMMS = (0, 1, -1, 12345, 0x7FFFFFFF, -0x80000000)
DIV_IMMS = (1, -1, 3, -7, 0x7FFFFFFF, -0x80000000)


def _k_forms(op: int, bits: int) -> list[Insn]:
    build = alu64 if bits == 64 else alu32
    if op in SHIFTS:
        return [build(op, DST, imm=i) for i in (0, 1, 7, bits - 1)]
    if op in DIVMOD:
        return [build(op, DST, imm=i, off=o) for i in DIV_IMMS for o in (0, 1)]
    return [build(op, DST, imm=i) for i in K_IMMS]


def alu_cases() -> list[Insn]:
    out: list[Insn] = []
    for bits, build in ((64, alu64), (32, alu32)):
        for op in (0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xA0, 0xB0, 0xC0):
            offs = (0, 1) if op in DIVMOD else (0,)
            out += [build(op, DST, SRC, off=o) for o in offs]
            out += [build(op, DST, DST, off=o) for o in offs if op in (0x10, 0x30, 0x90)]
            out += _k_forms(op, bits)
        out.append(build(0x80, DST))
        out += [build(0xB0, DST, SRC, off=o) for o in ((8, 16, 32) if bits == 64 else (8, 16))]
        out += [build(0xD0, DST, imm=w) for w in (16, 32, 64)]  # le (ALU) / bswap (ALU64)
    out += [alu32(0xD0, DST, 0, imm=w) for w in (16, 32, 64)]  # be
    out += [ldimm64(DST, 0x8000_0001_FFFF_FFFE), ldimm64(DST, 42)]
    return out


def jump_cases() -> list[Insn]:
    conds = (0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0)
    out: list[Insn] = []
    for build in (jmp, jmp32):
        for op in conds:
            out.append(build(op, DST, SRC, off=1))
            out += [build(op, DST, imm=i, off=1) for i in (0, 1, -1, 5, 0x7FFFFFFF, -0x80000000)]
    return out


def mem_cases() -> list[Insn]:
    offs = {1: (-8, -5, -1), 2: (-8, -6, -2), 4: (-8, -4), 8: (-8,)}
    out: list[Insn] = []
    for size, sizes_offs in offs.items():
        for off in sizes_offs:
            out += [ldx(size, DST, 10, off), stx(size, 10, SRC, off)]
            out += [st(size, 10, off, i) for i in (-1, 0x12345678, -0x80000000)]
            out += [ldx(size, DST, 10, off, signed=True)] if size < 8 else []
            out += [atomic(size, DST, 10, off, bi.ATOMIC_LOAD_ACQ),  # dst = *(src + off)
                    atomic(size, 10, SRC, off, bi.ATOMIC_STORE_REL)]
    ops = (0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xA0, 0xA1, 0xE1, 0xF1)
    for size, off in ((4, -8), (4, -4), (8, -8)):
        out += [atomic(size, 10, SRC, off, op) for op in ops]
    return out


CASES = alu_cases() + jump_cases() + mem_cases()

# ---- harness -------------------------------------------------------------------------------


def wrap(insn: Insn) -> bytes:
    """XDP program: inputs from the packet, `insn`, outputs into the packet."""
    body = [insn, alu64(0xB0, 9, imm=1)] if insn.is_jump else [insn]
    epilogue = [stx(8, 2, 7, 32), stx(8, 2, 8, 40), stx(8, 2, 0, 48), ldx(8, 3, 10, -8),
                stx(8, 2, 3, 56), stx(8, 2, 9, 64)]
    skip = sum(i.size for i in body) + 6 + len(epilogue)
    prologue = [ldx(4, 2, 1, 0), ldx(4, 3, 1, 4), alu64(0xB0, 4, 2), alu64(0x00, 4, imm=PKT_LEN),
                jmp(0x20, 4, 3, off=skip), ldx(8, 7, 2, 0), ldx(8, 8, 2, 8), ldx(8, 0, 2, 16),
                ldx(8, 9, 2, 24), stx(8, 10, 9, -8), alu64(0xB0, 9, imm=0)]
    tail = [alu64(0xB0, 0, imm=2), exit_()]
    return to_bytes(assemble(prologue + body + epilogue + tail))


def oracle(insn: Insn, a: int, b: int, c: int, m: int) -> tuple[int, ...]:
    """(r7, r8, r0, stack slot, taken) after `insn`, per the oracle."""
    mem = FlatMemory()
    mem.write(FP - 8, m.to_bytes(8, "little"))
    regs = [c, 0, 0, 0, 0, 0, 0, a, b, 0, FP]
    eff = step(assemble([insn])[0], regs, mem.read)
    for w in eff.writes:
        mem.write(w.addr, w.value)
    marker = int(insn.is_jump and eff.next_pc == 1)  # the jump fell through to "r9 = 1"
    stack = int.from_bytes(mem.read(FP - 8, 8), "little")
    return eff.regs[DST], eff.regs[SRC], eff.regs[0], stack, marker


EDGE32 = (0, 1, 2, 3, 31, 32, 63, 64, 0x7F, 0x80, 0xFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
          0x80000001, 0xFFFFFFFE, 0xFFFFFFFF)


def value(rng: random.Random) -> int:
    """Random 64-bit value biased towards 32- and 64-bit boundaries."""
    if rng.random() < 0.3:
        return rng.getrandbits(64)
    hi = rng.choice((0, 0, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 1, rng.getrandbits(32)))
    lo = rng.choice((*EDGE32, rng.getrandbits(32), rng.getrandbits(8)))
    return hi << 32 | lo


def inputs(rng: random.Random) -> tuple[int, int, int, int]:
    a, b, c, m = (value(rng) for _ in range(4))
    if rng.random() < 0.2:
        b = a
    if rng.random() < 0.3:  # make cmpxchg succeed (64- or 32-bit compare)
        c = m if rng.random() < 0.5 else (c & ~0xFFFFFFFF) | (m & 0xFFFFFFFF)
    return a, b, c, m


def kernel(fd: int, a: int, b: int, c: int, m: int) -> tuple[int, ...]:
    _, out = prog_run(fd, struct.pack("<4Q", a, b, c, m) + bytes(PKT_LEN - 32))
    r7, r8, r0, stack, marker = struct.unpack_from("<5Q", out, 32)
    return r7, r8, r0, stack, marker


@pytest.mark.parametrize("insn", CASES, ids=[f"{format_insn(i)}@{i.code:#04x}" for i in CASES])
def test_insn_matches_kernel(insn: Insn) -> None:
    fd = load_raw(wrap(insn))
    try:
        rng = random.Random(f"{insn}")
        for _ in range(RUNS):
            args = inputs(rng)
            assert oracle(insn, *args) == kernel(fd, *args), [hex(x) for x in args]
    finally:
        os.close(fd)
