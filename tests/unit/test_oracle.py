"""qstep.oracle: exact per-instruction values (RFC 9669, ISA v4) and the whole-program runner."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qstep.bpf import insn as bi
from qstep.bpf.asm import (
    alu32,
    alu64,
    assemble,
    atomic,
    call,
    exit_,
    jmp,
    jmp32,
    ldimm64,
    ldx,
    raw,
)
from qstep.bpf.asm import st as st_imm
from qstep.bpf.asm import stx as st_reg
from qstep.bpf.insn import Insn
from qstep.oracle import Effect, FlatMemory, MemRead, MemWrite, OracleError, run_program, step
from qstep.oracle.run import POISON, STACK_SIZE, STACK_TOP

M64 = (1 << 64) - 1
MIN64, MIN32 = 1 << 63, 1 << 31
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0)


def neg(v: int, bits: int = 64) -> int:
    """Two's complement encoding of -v."""
    return -v & ((1 << bits) - 1)


def at(insn: Insn, index: int = 10) -> Insn:
    return assemble([insn], index)[0]


def regs_with(**kw: int) -> list[int]:
    regs = [0] * 11
    for name, v in kw.items():
        regs[int(name[1:])] = v & M64
    return regs


def no_mem(addr: int, size: int) -> bytes:
    raise AssertionError(f"unexpected read {addr:#x}/{size}")


def run1(insn: Insn, read: MemRead = no_mem, **kw: int) -> Effect:
    return step(at(insn), regs_with(**kw), read)


# ---- ALU -----------------------------------------------------------------------------------

ALU_TABLE: list[tuple[str, Insn, int, int, int]] = [
    # name, insn (dst r1, src r2), r1, r2, expected r1
    ("add64 wrap", alu64(ADD, 1, 2), M64, 1, 0),
    ("add64 imm sign-extended", alu64(ADD, 1, imm=-1), 5, 0, 4),
    ("add32 wrap, zero-extends", alu32(ADD, 1, 2), 0xAAAA_AAAA_FFFF_FFFF, 2, 1),
    ("add32 imm", alu32(ADD, 1, imm=-1), 5, 0, 4),
    ("sub32 below zero", alu32(SUB, 1, 2), 0, 1, 0xFFFF_FFFF),
    ("sub64 below zero", alu64(SUB, 1, imm=1), 0, 0, M64),
    ("mul64 overflow", alu64(MUL, 1, 2), MIN64, 2, 0),
    ("mul32 overflow", alu32(MUL, 1, 2), 0x1_0001_0000, 0x10000, 0),
    ("mul64 by -1 imm", alu64(MUL, 1, imm=-1), 3, 0, neg(3)),
    ("and64 imm sign-extended", alu64(AND, 1, imm=-2), M64, 0, M64 - 1),
    ("and32 imm", alu32(AND, 1, imm=-2), M64, 0, 0xFFFF_FFFE),
    ("or32 zero-extends", alu32(OR, 1, 2), 0xFFFF_0000_0000_0000, 1, 1),
    ("xor64", alu64(XOR, 1, 2), 0xF0F0, 0xFF00, 0x0FF0),
    ("xor32 imm", alu32(XOR, 1, imm=-1), 0x1_0000_0000, 0, 0xFFFF_FFFF),
    ("mov64 imm -1", alu64(MOV, 1, imm=-1), 0, 0, M64),
    ("mov32 imm -1", alu32(MOV, 1, imm=-1), 0, 0, 0xFFFF_FFFF),
    ("mov32 reg truncates", alu32(MOV, 1, 2), 7, 0x1_2345_6789, 0x2345_6789),
    ("lsh64 by 63", alu64(LSH, 1, 2), 1, 63, MIN64),
    ("lsh64 by 64 masks to 0", alu64(LSH, 1, 2), 1, 64, 1),
    ("lsh64 by 65 masks to 1", alu64(LSH, 1, 2), 1, 65, 2),
    ("lsh32 by 31", alu32(LSH, 1, 2), 3, 31, MIN32),
    ("lsh32 by 32 masks to 0", alu32(LSH, 1, 2), 0x1_0000_0003, 32, 3),
    ("rsh64 by 63", alu64(RSH, 1, imm=63), MIN64, 0, 1),
    ("rsh32 ignores upper half", alu32(RSH, 1, imm=31), 0xFFFF_FFFF_8000_0000, 0, 1),
    ("arsh64 by 63", alu64(ARSH, 1, imm=63), MIN64, 0, M64),
    ("arsh64 by 64 masks to 0", alu64(ARSH, 1, 2), MIN64, 64, MIN64),
    ("arsh32 sign of bit 31", alu32(ARSH, 1, imm=31), MIN32, 0, 0xFFFF_FFFF),
    ("arsh32 ignores bit 63", alu32(ARSH, 1, imm=1), MIN64 | 4, 0, 2),
    ("div64", alu64(DIV, 1, 2), 7, 2, 3),
    ("div64 by zero", alu64(DIV, 1, 2), 7, 0, 0),
    ("div64 imm -1 is unsigned 2^64-1", alu64(DIV, 1, imm=-1), M64, 0, 1),
    ("div64 imm -1 small dividend", alu64(DIV, 1, imm=-1), 7, 0, 0),
    ("div32 imm -1 is 0xffffffff", alu32(DIV, 1, imm=-1), 0xFFFF_FFFF, 0, 1),
    ("div32 by zero (upper half ignored)", alu32(DIV, 1, 2), 7, 0x1_0000_0000, 0),
    ("div32 zero-extends", alu32(DIV, 1, 2), 0x5_0000_0009, 3, 3),
    ("mod64", alu64(MOD, 1, 2), 7, 3, 1),
    ("mod64 by zero keeps dst", alu64(MOD, 1, 2), 0xFFFF_FFFF_0000_0007, 0, 0xFFFF_FFFF_0000_0007),
    ("mod32 by zero zero-extends dst", alu32(MOD, 1, 2), 0xFFFF_FFFF_0000_0007, 0x1_0000_0000, 7),
    ("mod32", alu32(MOD, 1, imm=10), 0x1_0000_0019, 0, 5),
    ("sdiv64 truncates", alu64(DIV, 1, 2, off=1), neg(7), 2, neg(3)),
    ("sdiv64 neg/neg", alu64(DIV, 1, 2, off=1), neg(7), neg(2), 3),
    ("sdiv64 INT_MIN/-1", alu64(DIV, 1, 2, off=1), MIN64, M64, MIN64),
    ("sdiv64 imm -1", alu64(DIV, 1, imm=-1, off=1), 5, 0, neg(5)),
    ("sdiv64 by zero", alu64(DIV, 1, 2, off=1), neg(7), 0, 0),
    ("smod64 sign of dividend", alu64(MOD, 1, 2, off=1), neg(7), 2, neg(1)),
    ("smod64 negative divisor", alu64(MOD, 1, 2, off=1), 7, neg(2), 1),
    ("smod64 INT_MIN%-1", alu64(MOD, 1, 2, off=1), MIN64, M64, 0),
    ("smod64 by zero keeps dst", alu64(MOD, 1, 2, off=1), neg(7), 0, neg(7)),
    ("sdiv32 INT_MIN/-1", alu32(DIV, 1, 2, off=1), MIN32, 0xFFFF_FFFF, MIN32),
    ("sdiv32 truncates", alu32(DIV, 1, imm=2, off=1), neg(7, 32), 0, neg(3, 32)),
    ("sdiv32 uses low halves", alu32(DIV, 1, 2, off=1), 0x7_FFFF_FFF9, 0x5_0000_0002, neg(3, 32)),
    ("sdiv32 by zero", alu32(DIV, 1, 2, off=1), 9, 0x1_0000_0000, 0),
    ("smod32 INT_MIN%-1", alu32(MOD, 1, imm=-1, off=1), MIN32, 0, 0),
    ("smod32 sign of dividend", alu32(MOD, 1, imm=-3, off=1), neg(7, 32), 0, neg(1, 32)),
    ("smod32 by zero zero-extends", alu32(MOD, 1, 2, off=1), 0xFFFF_FFFF_FFFF_FFF9, 0,
     0xFFFF_FFF9),
    ("neg64", alu64(NEG, 1), 1, 0, M64),
    ("neg64 INT_MIN", alu64(NEG, 1), MIN64, 0, MIN64),
    ("neg32", alu32(NEG, 1), 1, 0, 0xFFFF_FFFF),
    ("neg32 zero-extends", alu32(NEG, 1), 0xFFFF_FFFF_0000_0000, 0, 0),
    ("movsx64 s8", alu64(MOV, 1, 2, off=8), 0, 0x1_0000_0080, neg(0x80)),
    ("movsx64 s16 positive", alu64(MOV, 1, 2, off=16), 0, 0xFFFF_7FFF, 0x7FFF),
    ("movsx64 s32", alu64(MOV, 1, 2, off=32), 0, MIN32, neg(MIN32)),
    ("movsx32 s8", alu32(MOV, 1, 2, off=8), M64, 0xFF, 0xFFFF_FFFF),
    ("movsx32 s16", alu32(MOV, 1, 2, off=16), 0, 0x1_0000_8000, 0xFFFF_8000),
    ("le16", alu32(END, 1, imm=16), 0x1122_3344_5566_7788, 0, 0x7788),
    ("le32", alu32(END, 1, imm=32), 0x1122_3344_5566_7788, 0, 0x5566_7788),
    ("le64", alu32(END, 1, imm=64), 0x1122_3344_5566_7788, 0, 0x1122_3344_5566_7788),
    ("be16", alu32(END, 1, 0, imm=16), 0x1122_3344_5566_7788, 0, 0x8877),
    ("be32", alu32(END, 1, 0, imm=32), 0x1122_3344_5566_7788, 0, 0x8877_6655),
    ("be64", alu32(END, 1, 0, imm=64), 0x1122_3344_5566_7788, 0, 0x8877_6655_4433_2211),
    ("bswap16", alu64(END, 1, imm=16), 0x1122_3344_5566_7788, 0, 0x8877),
    ("bswap32", alu64(END, 1, imm=32), 0x1122_3344_5566_7788, 0, 0x8877_6655),
    ("bswap64", alu64(END, 1, imm=64), 0x1122_3344_5566_7788, 0, 0x8877_6655_4433_2211),
]


@pytest.mark.parametrize(("name", "insn", "dst", "src", "want"), ALU_TABLE,
                         ids=[c[0] for c in ALU_TABLE])
def test_alu(name: str, insn: Insn, dst: int, src: int, want: int) -> None:
    eff = run1(insn, r1=dst, r2=src, r9=99)
    assert eff.regs[1] == want, f"{name}: {eff.regs[1]:#x} != {want:#x}"
    assert eff.regs[2] == src and eff.regs[9] == 99
    assert (eff.kind, eff.next_pc, eff.writes, eff.unknown) == ("alu", 11, (), frozenset())


def test_alu_same_register() -> None:
    assert run1(alu64(SUB, 3, 3), r3=5).regs[3] == 0
    assert run1(alu32(DIV, 3, 3), r3=0x1_0000_0000).regs[3] == 0  # 32-bit divisor is 0
    assert run1(alu64(MOD, 3, 3, off=1), r3=MIN64).regs[3] == 0


@given(st.sampled_from([ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, MOD, XOR, MOV, ARSH]),
       st.integers(0, 1), st.integers(0, M64), st.integers(0, M64),
       st.integers(-(2**31), 2**31 - 1), st.booleans())
def test_alu32_results_are_zero_extended(op: int, off: int, a: int, b: int, imm: int,
                                         use_reg: bool) -> None:
    off = off if op in (DIV, MOD) else 0
    insn = alu32(op, 4, 5 if use_reg else None, imm=imm, off=off)
    eff = run1(insn, r4=a, r5=b, r6=a)
    assert eff.regs[4] >> 32 == 0
    assert eff.regs[:4] == (0,) * 4 and eff.regs[5:7] == (b, a)


# ---- jumps ---------------------------------------------------------------------------------

JMP_TABLE: list[tuple[str, Insn, int, int, bool]] = [
    ("jeq", jmp(JEQ, 1, 2, off=3), 5, 5, True),
    ("jeq imm -1 sign-extended", jmp(JEQ, 1, imm=-1, off=3), M64, 0, True),
    ("jeq imm -1 vs 0xffffffff", jmp(JEQ, 1, imm=-1, off=3), 0xFFFF_FFFF, 0, False),
    ("jeq32 imm -1 vs 0xffffffff", jmp32(JEQ, 1, imm=-1, off=3), 0x5_FFFF_FFFF, 0, True),
    ("jne", jmp(JNE, 1, 2, off=3), 5, 5, False),
    ("jne32 upper half ignored", jmp32(JNE, 1, 2, off=3), 0x1_0000_0005, 5, False),
    ("jgt unsigned", jmp(JGT, 1, imm=1, off=3), M64, 0, True),
    ("jgt equal", jmp(JGT, 1, 2, off=3), 7, 7, False),
    ("jge equal", jmp(JGE, 1, 2, off=3), 7, 7, True),
    ("jge32", jmp32(JGE, 1, 2, off=3), 0x1, 0x1_0000_0002, False),
    ("jlt unsigned", jmp(JLT, 1, 2, off=3), 1, MIN64, True),
    ("jlt32", jmp32(JLT, 1, imm=-1, off=3), 0xFFFF_FFFE, 0, True),
    ("jle equal", jmp(JLE, 1, 2, off=3), 3, 3, True),
    ("jle", jmp(JLE, 1, 2, off=3), 4, 3, False),
    ("jset", jmp(JSET, 1, 2, off=3), 0x100, 0x300, True),
    ("jset none", jmp(JSET, 1, imm=0xFF, off=3), 0x100, 0, False),
    ("jset32 upper half ignored", jmp32(JSET, 1, 2, off=3), 1 << 32, 1 << 32, False),
    ("jset imm -1 reaches bit 63", jmp(JSET, 1, imm=-1, off=3), MIN64, 0, True),
    ("jsgt -1 > 1", jmp(JSGT, 1, imm=1, off=3), M64, 0, False),
    ("jsgt INT_MAX > INT_MIN", jmp(JSGT, 1, 2, off=3), MIN64 - 1, MIN64, True),
    ("jsgt32 bit 31 negative", jmp32(JSGT, 1, 2, off=3), MIN32, 0x7FFF_FFFF, False),
    ("jsgt64 bit 31 positive", jmp(JSGT, 1, 2, off=3), MIN32, 0x7FFF_FFFF, True),
    ("jsge equal", jmp(JSGE, 1, 2, off=3), MIN64, MIN64, True),
    ("jsge32 imm", jmp32(JSGE, 1, imm=-1, off=3), 0xFFFF_FFFF, 0, True),
    ("jslt INT_MIN < 0", jmp(JSLT, 1, imm=0, off=3), MIN64, 0, True),
    ("jslt32 INT_MIN < INT_MAX", jmp32(JSLT, 1, 2, off=3), MIN32, 0x7FFF_FFFF, True),
    ("jslt64 0x80000000 < 0x7fffffff", jmp(JSLT, 1, 2, off=3), MIN32, 0x7FFF_FFFF, False),
    ("jsle -1 <= -1", jmp(JSLE, 1, imm=-1, off=3), M64, 0, True),
    ("jsle32 0 <= -1", jmp32(JSLE, 1, 2, off=3), 1 << 32, M64, False),
]


@pytest.mark.parametrize(("name", "insn", "dst", "src", "taken"), JMP_TABLE,
                         ids=[c[0] for c in JMP_TABLE])
def test_jump(name: str, insn: Insn, dst: int, src: int, taken: bool) -> None:
    eff = run1(insn, r1=dst, r2=src)
    assert eff.next_pc == (14 if taken else 11), name
    assert (eff.kind, eff.regs) == ("jump", tuple(regs_with(r1=dst, r2=src)))


def test_ja_and_gotol() -> None:
    assert run1(jmp(JA, off=3)).next_pc == 14
    assert run1(jmp(JA, off=-1)).next_pc == 10
    assert run1(jmp32(JA, imm=-5)).next_pc == 6
    assert run1(jmp32(JA, imm=100_000, off=7)).next_pc == 100_011  # gotol ignores off


# ---- calls, exit, ld_imm64 -----------------------------------------------------------------

def test_helper_and_kfunc_calls_clobber_r0_to_r5() -> None:
    for insn in (call(12), call(7, src=bi.PSEUDO_KFUNC_CALL)):
        eff = run1(insn, r1=1, r6=6)
        assert (eff.kind, eff.next_pc, eff.unknown) == ("call_helper", 11, frozenset(range(6)))
        assert eff.regs[6] == 6


def test_bpf_call_and_exit() -> None:
    eff = run1(call(-4, src=bi.PSEUDO_CALL), r1=1, r10=STACK_TOP)
    assert (eff.kind, eff.next_pc, eff.call_target) == ("call_bpf", None, 7)
    assert eff.regs == tuple(regs_with(r1=1, r10=STACK_TOP))
    assert (run1(exit_()).kind, run1(exit_()).next_pc) == ("exit", None)


def test_ldimm64() -> None:
    eff = run1(ldimm64(3, 0x8000_0000_FFFF_FFFF))
    assert (eff.regs[3], eff.next_pc, eff.kind) == (0x8000_0000_FFFF_FFFF, 12, "ldimm64")
    pseudo = at(ldimm64(3, 7, src=bi.PSEUDO_MAP_FD))
    with pytest.raises(OracleError, match="ldimm64_value"):
        step(pseudo, [0] * 11, no_mem)
    eff = step(pseudo, [0] * 11, no_mem, ldimm64_value=lambda i: 0xFFFF_0000 + i.imm)
    assert eff.regs[3] == 0xFFFF_0007


# ---- loads and stores ----------------------------------------------------------------------

def memory(addr: int, data: bytes) -> FlatMemory:
    mem = FlatMemory()
    mem.write(addr, data)
    return mem


DATA = bytes([0x81, 0x92, 0xA3, 0xB4, 0xC5, 0xD6, 0xE7, 0xF8])


@pytest.mark.parametrize(("size", "signed", "want"), [
    (1, False, 0x81), (2, False, 0x9281), (4, False, 0xB4A3_9281),
    (8, False, 0xF8E7_D6C5_B4A3_9281),
    (1, True, neg(0x7F)), (2, True, 0xFFFF_FFFF_FFFF_9281), (4, True, 0xFFFF_FFFF_B4A3_9281)])
def test_ldx(size: int, signed: bool, want: int) -> None:
    mem = memory(0x1000, DATA)
    eff = run1(ldx(size, 4, 5, off=-0x10, signed=signed), mem.read, r5=0x1010)
    assert (eff.regs[4], eff.kind, eff.writes, eff.next_pc) == (want, "load", (), 11)


def test_ldx_address_wraps() -> None:
    mem = memory(M64 - 1, b"\x01\x02")
    assert run1(ldx(2, 4, 5, off=-3), mem.read, r5=1).regs[4] == 0x0201


def test_ldx_short_read() -> None:
    with pytest.raises(OracleError, match="returned 1"):
        run1(ldx(4, 4, 5), lambda a, n: b"\0", r5=8)


@pytest.mark.parametrize(("insn", "want"), [
    (st_imm(1, 5, -4, -2), MemWrite(0xFFC, 1, b"\xfe")),
    (st_imm(2, 5, 2, -2), MemWrite(0x1002, 2, b"\xfe\xff")),
    (st_imm(4, 5, 0, 0x12345678), MemWrite(0x1000, 4, bytes.fromhex("78563412"))),
    (st_imm(8, 5, 0, -1), MemWrite(0x1000, 8, b"\xff" * 8)),
    (st_imm(8, 5, 0, -0x80000000), MemWrite(0x1000, 8, bytes.fromhex("00000080ffffffff"))),
    (st_reg(1, 5, 6, 1), MemWrite(0x1001, 1, b"\x88")),
    (st_reg(4, 5, 6, 0), MemWrite(0x1000, 4, bytes.fromhex("88776655"))),
    (st_reg(8, 5, 6, 0), MemWrite(0x1000, 8, bytes.fromhex("8877665544332211"))),
])
def test_store(insn: Insn, want: MemWrite) -> None:
    eff = run1(insn, r5=0x1000, r6=0x1122_3344_5566_7788)
    assert (eff.writes, eff.kind, eff.next_pc) == ((want,), "store", 11)
    assert eff.regs == tuple(regs_with(r5=0x1000, r6=0x1122_3344_5566_7788))


# ---- atomics -------------------------------------------------------------------------------

ATOMIC_TABLE: list[tuple[str, int, int, int, int, int, int | None, int, int]] = [
    # name, size, op, memory, r2 (src), r0, new memory (None: no write), r2 after, r0 after
    ("add64", 8, 0x00, 5, 3, 0, 8, 3, 0),
    ("add32 wraps", 4, 0x00, 0xFFFF_FFFF, 0x1_0000_0001, 0, 0, 0x1_0000_0001, 0),
    ("fetch_add64", 8, 0x01, M64, 2, 0, 1, M64, 0),
    ("fetch_add32 zero-extends", 4, 0x01, 0xFFFF_FFFF, 0xFFFF_FFFF_0000_0001, 0, 0, 0xFFFF_FFFF,
     0),
    ("or64", 8, 0x40, 0xF0, 0x0F, 0, 0xFF, 0x0F, 0),
    ("fetch_or32", 4, 0x41, 0xF0, 0x0F, 0, 0xFF, 0xF0, 0),
    ("and64", 8, 0x50, 0xF0, 0x3C, 0, 0x30, 0x3C, 0),
    ("fetch_and64", 8, 0x51, 0xF0, 0x3C, 0, 0x30, 0xF0, 0),
    ("xor32", 4, 0xA0, 0xFF, 0x0F, 0, 0xF0, 0x0F, 0),
    ("fetch_xor64", 8, 0xA1, 0xFF, 0x0F, 0, 0xF0, 0xFF, 0),
    ("xchg64", 8, 0xE1, 0x1234, M64, 0, M64, 0x1234, 0),
    ("xchg32", 4, 0xE1, 0xFFFF_FFFF, 0x1_0000_0002, 0, 2, 0xFFFF_FFFF, 0),
    ("cmpxchg64 equal", 8, 0xF1, 9, 4, 9, 4, 4, 9),
    ("cmpxchg64 differs", 8, 0xF1, 9, 4, 8, None, 4, 9),
    ("cmpxchg64 differs in upper half", 8, 0xF1, 9, 4, 0x1_0000_0009, None, 4, 9),
    ("cmpxchg32 equal low halves", 4, 0xF1, 9, 0x7_0000_0004, 0x5_0000_0009, 4, 0x7_0000_0004, 9),
    ("cmpxchg32 differs", 4, 0xF1, 0xFFFF_FFFF, 4, 1, None, 4, 0xFFFF_FFFF),
]


@pytest.mark.parametrize(("name", "size", "op", "mem", "src", "r0", "new", "src_after",
                          "r0_after"), ATOMIC_TABLE, ids=[c[0] for c in ATOMIC_TABLE])
def test_atomic(name: str, size: int, op: int, mem: int, src: int, r0: int, new: int | None,
                src_after: int, r0_after: int) -> None:
    m = memory(0x2000, mem.to_bytes(size, "little"))
    eff = run1(atomic(size, 1, 2, 8, op), m.read, r0=r0, r1=0x1FF8, r2=src)
    want = () if new is None else (MemWrite(0x2000, size, new.to_bytes(size, "little")),)
    assert (eff.writes, eff.regs[2], eff.regs[0], eff.kind) == (want, src_after, r0_after,
                                                               "atomic")


def test_load_acquire_store_release() -> None:
    m = memory(0x2000, DATA)
    acq = raw(bi.STX | bi.MODE_ATOMIC | bi.BPF_H, 3, 1, 2, bi.ATOMIC_LOAD_ACQ)
    eff = run1(acq, m.read, r1=0x2000)
    assert (eff.regs[3], eff.kind, eff.writes) == (0xB4A3, "load", ())
    rel = raw(bi.STX | bi.MODE_ATOMIC | bi.BPF_B, 1, 3, -1, bi.ATOMIC_STORE_REL)
    assert run1(rel, r1=0x2000, r3=0x1FF).writes == (MemWrite(0x1FFF, 1, b"\xff"),)


# ---- invalid and unsupported instructions --------------------------------------------------

@pytest.mark.parametrize(("insn", "match"), [
    (raw(0x00), r"invalid.*\(00\) invalid"),  # LD | W | IMM
    (raw(bi.LD | bi.MODE_ABS | bi.BPF_W, imm=4), "unsupported legacy"),
    (raw(bi.LD | bi.MODE_IND | bi.BPF_B, src=2), "unsupported legacy"),
    (alu64(NEG, 1, 2), "invalid"),
    (alu64(MOV, 1, imm=3, off=8), "invalid"),
    (alu64(MOV, 1, 2, off=24), "invalid"),
    (alu32(MOV, 1, 2, off=32), "invalid"),
    (alu64(ADD, 1, 2, off=1), "invalid"),
    (alu64(DIV, 1, 2, off=2), "invalid"),
    (alu64(0xE0, 1, 2), "invalid"),
    (alu64(END, 1, 0, imm=16), "invalid"),
    (alu32(END, 1, imm=8), "invalid"),
    (jmp(0xE0, 1, 2), "invalid"),
    (jmp(JA, 1, 2), "invalid"),
    (jmp32(0x80, imm=1), "invalid"),
    (jmp32(0x90), "invalid"),
    (call(1, src=3), "invalid"),
    (raw(bi.LDX | bi.MODE_MEMSX | bi.BPF_DW, 1, 2), "invalid"),
    (raw(bi.ST | bi.MODE_ATOMIC | bi.BPF_W, 1, 2), "invalid"),
    (atomic(1, 1, 2, 0, 0x00), "invalid"),
    (atomic(8, 1, 2, 0, 0x02), "invalid"),
])
def test_invalid(insn: Insn, match: str) -> None:
    with pytest.raises(OracleError, match=match) as info:
        run1(insn, read=lambda a, n: bytes(n))
    assert str(info.value).startswith("insn 10: ")


def test_percpu_address_mov_adds_this_cpus_offset() -> None:
    """The verifier's inlined per-CPU lookups (6.10+): r0 = &(void __percpu *)(r0)."""
    mov = at(alu64(MOV, 0, 0, off=-1))
    eff = step(mov, regs_with(r0=0x2A8C0), no_mem, percpu_offset=lambda: 0xFFFF88803EC00000)
    assert (eff.regs[0], eff.kind, eff.next_pc) == (0xFFFF88803EC2A8C0, "alu", 11)
    with pytest.raises(OracleError, match="the per-CPU offset is unknown"):
        step(mov, regs_with(r0=1), no_mem)


def test_register_count_checked() -> None:
    with pytest.raises(OracleError, match="expected 11 registers"):
        step(at(exit_()), [0] * 10, no_mem)


# ---- run_program ---------------------------------------------------------------------------

def test_run_loop() -> None:
    prog = assemble([alu64(MOV, 0, imm=0), alu64(MOV, 1, imm=10), alu64(ADD, 0, 1),
                     alu64(SUB, 1, imm=1), jmp(JNE, 1, imm=0, off=-3), exit_()])
    assert run_program(prog, {}, FlatMemory(), {}) == 55


def test_run_calls_frames_and_helpers() -> None:
    # main: r6 = 7; *(r10-8) = 1; r1 = 5; call f; r0 += r6; r0 += *(r10-8); r0 += r3 (poison?)
    # f:    r6 = 100; *(r10-8) = 2; r0 = r1 * 2 + helper#5(); r0 += *(r10-8); exit
    main = [alu64(MOV, 6, imm=7), st_imm(8, 10, -8, 1), alu64(MOV, 1, imm=5),
            call(2, src=bi.PSEUDO_CALL), alu64(ADD, 0, 6), ldx(8, 2, 10, -8), alu64(ADD, 0, 2),
            exit_()]
    f = [alu64(MOV, 6, imm=100), st_imm(8, 10, -8, 2), alu64(MOV, 7, 1), alu64(MUL, 7, imm=2),
         call(5), alu64(ADD, 0, 7), ldx(8, 2, 10, -8), alu64(ADD, 0, 2), exit_()]
    prog = assemble(main + f)
    prog[3] = Insn(3, prog[3].code, 0, bi.PSEUDO_CALL, 0, 8 - 4)  # call f (index 8)
    seen: list[list[int]] = []

    def helper(regs: list[int], mem: FlatMemory) -> int:
        seen.append(regs)
        return 1000

    mem = FlatMemory()
    assert run_program(prog, {1: 0xC0}, mem, {5: helper}) == 1000 + 10 + 2 + 7 + 1
    assert seen[0][1] == 5 and seen[0][10] == STACK_TOP - STACK_SIZE
    assert mem.read(STACK_TOP - 8, 8) == (1).to_bytes(8, "little")
    assert mem.read(STACK_TOP - STACK_SIZE - 8, 8) == (2).to_bytes(8, "little")


def test_run_poisons_clobbered_registers() -> None:
    prog = assemble([alu64(MOV, 3, imm=1), call(9), alu64(MOV, 0, 3), exit_()])
    assert run_program(prog, {}, FlatMemory(), {9: lambda r, m: 0}) == POISON


def test_run_ldimm64_value() -> None:
    prog = assemble([ldimm64(0, 3, src=bi.PSEUDO_MAP_FD), exit_()])
    assert run_program(prog, {}, FlatMemory(), {}, ldimm64_value=lambda i: i.imm + 1) == 4


@pytest.mark.parametrize(("prog", "match"), [
    ([jmp(JA, off=-1)], "no exit after 50 steps"),
    ([call(77), exit_()], "no helper #77"),
    ([jmp(JA, off=5), exit_()], "pc 6 is outside"),
    ([ldx(8, 0, 10, -8), exit_()], "never written"),
    ([call(-1, src=bi.PSEUDO_CALL), exit_()], "call depth exceeds 8"),
])
def test_run_errors(prog: list[Insn], match: str) -> None:
    with pytest.raises(OracleError, match=match):
        run_program(assemble(prog), {}, FlatMemory(), {}, max_steps=50)
