"""Reference semantics of one BPF instruction (RFC 9669, ISA v4), used as a test oracle.

`step` computes, from the registers before an instruction and a memory reader, the
registers after it, the memory it writes and where execution continues. Division
and modulo follow the kernel's runtime rules (x/0 = 0, x%0 = x, INT_MIN/-1 = INT_MIN,
INT_MIN%-1 = 0); 32-bit results are zero-extended to 64 bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qstep.bpf import insn as bi
from qstep.bpf.insn import Insn, format_insn
from qstep.errors import QstepError

MemRead = Callable[[int, int], bytes]
LdImm64Value = Callable[[Insn], int]
PercpuOffset = Callable[[], int]

NREGS = 11
M64 = (1 << 64) - 1
# Registers a helper call defines (r0) or clobbers (r1-r5).
CALL_CLOBBERED = frozenset(range(6))

_ALU_OFFS: dict[int, tuple[int, ...]] = {0x30: (0, 1), 0x90: (0, 1)}  # div/mod: off 1 = signed
_MOVSX_OFFS: dict[int, tuple[int, ...]] = {bi.ALU64: (8, 16, 32), bi.ALU: (8, 16)}


class OracleError(QstepError):
    """The oracle cannot execute an instruction (invalid, unsupported or unknowable)."""


@dataclass(frozen=True)
class MemWrite:
    """A memory write: `value` holds `size` little-endian bytes at `addr`."""

    addr: int
    size: int
    value: bytes


@dataclass(frozen=True)
class Effect:
    """What one instruction does; registers listed in `unknown` have no defined value."""

    regs: tuple[int, ...]
    writes: tuple[MemWrite, ...]
    next_pc: int | None
    kind: str
    unknown: frozenset[int] = frozenset()
    call_target: int | None = None


def _mask(bits: int) -> int:
    return (1 << bits) - 1


def sext(value: int, bits: int) -> int:
    """Two's-complement value of the low `bits` bits of `value`."""
    value &= _mask(bits)
    return value - (1 << bits) if value >> (bits - 1) else value


def bswap(value: int, nbytes: int) -> int:
    """Reverse the low `nbytes` bytes of `value`."""
    return int.from_bytes((value & _mask(8 * nbytes)).to_bytes(nbytes, "little"), "big")


def _fail(insn: Insn, why: str = "invalid instruction") -> OracleError:
    return OracleError(f"insn {insn.index}: {why}: {format_insn(insn)} (code {insn.code:#04x})")


def _effect(insn: Insn, regs: list[int], kind: str, writes: tuple[MemWrite, ...] = ()) -> Effect:
    return Effect(tuple(regs), writes, insn.index + insn.size, kind)


# ---- ALU ---------------------------------------------------------------------------------

def _tdiv(a: int, b: int) -> int:
    """C (truncating) signed division."""
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def _div(a: int, b: int, bits: int, signed: bool) -> int:
    if b == 0:
        return 0
    return _tdiv(sext(a, bits), sext(b, bits)) if signed else a // b


def _mod(a: int, b: int, bits: int, signed: bool) -> int:
    if b == 0:
        return a
    if not signed:
        return a % b
    sa, sb = sext(a, bits), sext(b, bits)
    return sa - sb * _tdiv(sa, sb)


_BINOPS: dict[int, Callable[[int, int, int, bool], int]] = {
    0x00: lambda a, b, n, s: a + b,
    0x10: lambda a, b, n, s: a - b,
    0x20: lambda a, b, n, s: a * b,
    0x30: _div,
    0x40: lambda a, b, n, s: a | b,
    0x50: lambda a, b, n, s: a & b,
    0x60: lambda a, b, n, s: a << (b & (n - 1)),
    0x70: lambda a, b, n, s: a >> (b & (n - 1)),
    0x90: _mod,
    0xA0: lambda a, b, n, s: a ^ b,
    0xC0: lambda a, b, n, s: sext(a, n) >> (b & (n - 1)),
}


def _operand(insn: Insn, regs: Sequence[int], bits: int) -> int:
    """src register or sign-extended imm, truncated to the operation width."""
    return (regs[insn.src] if insn.uses_reg_src else insn.imm) & _mask(bits)


def _alu_value(insn: Insn, regs: Sequence[int]) -> int:
    bits = 64 if insn.cls == bi.ALU64 else 32
    op, dst = insn.op, regs[insn.dst] & _mask(bits)
    if op == bi.ALU_END:
        return _end(insn, regs[insn.dst])
    if op == bi.ALU_NEG:
        if insn.uses_reg_src or insn.off:
            raise _fail(insn)
        return -dst & _mask(bits)
    if op == bi.ALU_MOV:
        return _mov(insn, regs, bits)
    fn = _BINOPS.get(op)
    if fn is None or insn.off not in _ALU_OFFS.get(op, (0,)):
        raise _fail(insn)
    return fn(dst, _operand(insn, regs, bits), bits, insn.off == 1) & _mask(bits)


def _mov(insn: Insn, regs: Sequence[int], bits: int) -> int:
    if insn.off == 0:
        return _operand(insn, regs, bits)
    if not insn.uses_reg_src or insn.off not in _MOVSX_OFFS[insn.cls]:
        raise _fail(insn)
    return sext(regs[insn.src], insn.off) & _mask(bits)


def _end(insn: Insn, value: int) -> int:
    width = insn.imm
    if width not in (16, 32, 64) or insn.off:
        raise _fail(insn)
    if insn.cls == bi.ALU64:
        if insn.uses_reg_src:
            raise _fail(insn)
        return bswap(value, width // 8)
    if insn.uses_reg_src:  # to big endian: swap on this little-endian ISA
        return bswap(value, width // 8)
    return value & _mask(width)


def _alu(insn: Insn, regs: list[int]) -> Effect:
    regs[insn.dst] = _alu_value(insn, regs)
    return _effect(insn, regs, "alu")


# ---- jumps, calls, exit ------------------------------------------------------------------

_CONDS: dict[int, Callable[[int, int, int], bool]] = {
    0x10: lambda a, b, n: a == b,
    0x20: lambda a, b, n: a > b,
    0x30: lambda a, b, n: a >= b,
    0x40: lambda a, b, n: bool(a & b),
    0x50: lambda a, b, n: a != b,
    0x60: lambda a, b, n: sext(a, n) > sext(b, n),
    0x70: lambda a, b, n: sext(a, n) >= sext(b, n),
    0xA0: lambda a, b, n: a < b,
    0xB0: lambda a, b, n: a <= b,
    0xC0: lambda a, b, n: sext(a, n) < sext(b, n),
    0xD0: lambda a, b, n: sext(a, n) <= sext(b, n),
}


def _jmp(insn: Insn, regs: list[int]) -> Effect:
    op, is32 = insn.op, insn.cls == bi.JMP32
    if op in (bi.JMP_CALL, bi.JMP_EXIT) and not is32 and not insn.uses_reg_src:
        return _call(insn, regs) if op == bi.JMP_CALL else Effect(tuple(regs), (), None, "exit")
    if op == bi.JMP_JA and not insn.uses_reg_src:
        return Effect(tuple(regs), (), insn.jump_target, "jump")
    cond = _CONDS.get(op)
    if cond is None:
        raise _fail(insn)
    bits = 32 if is32 else 64
    taken = cond(regs[insn.dst] & _mask(bits), _operand(insn, regs, bits), bits)
    return Effect(tuple(regs), (), insn.jump_target if taken else insn.index + 1, "jump")


def _call(insn: Insn, regs: list[int]) -> Effect:
    if insn.src == bi.PSEUDO_CALL:
        return Effect(tuple(regs), (), None, "call_bpf", call_target=insn.call_target)
    if insn.src in (0, bi.PSEUDO_KFUNC_CALL):
        return Effect(tuple(regs), (), insn.index + 1, "call_helper", CALL_CLOBBERED)
    raise _fail(insn)


# ---- loads and stores --------------------------------------------------------------------

def _addr(regs: Sequence[int], reg: int, off: int) -> int:
    return (regs[reg] + off) & M64


def _load(insn: Insn, read: MemRead, addr: int, size: int) -> int:
    data = read(addr, size)
    if len(data) != size:
        raise _fail(insn, f"read of {size} bytes at {addr:#x} returned {len(data)}")
    return int.from_bytes(data, "little")


def _write(addr: int, size: int, value: int) -> MemWrite:
    return MemWrite(addr, size, (value & _mask(8 * size)).to_bytes(size, "little"))


def _ld(insn: Insn, regs: list[int], ldimm64_value: LdImm64Value | None) -> Effect:
    if not insn.is_ldimm64:
        if insn.mode in (bi.MODE_ABS, bi.MODE_IND):
            raise _fail(insn, "unsupported legacy packet load")
        raise _fail(insn)
    if insn.src == 0 and insn.imm64 is not None:
        value = insn.imm64
    elif ldimm64_value is not None:
        value = ldimm64_value(insn)
    else:
        raise _fail(insn, "ld_imm64 value unknown without ldimm64_value")
    regs[insn.dst] = value & M64
    return _effect(insn, regs, "ldimm64")


def _ldx(insn: Insn, regs: list[int], read: MemRead) -> Effect:
    size = insn.mem_size or 0
    if insn.mode not in (bi.MODE_MEM, bi.MODE_MEMSX) or (insn.mode == bi.MODE_MEMSX
                                                          and size == 8):
        raise _fail(insn)
    value = _load(insn, read, _addr(regs, insn.src, insn.off), size)
    regs[insn.dst] = sext(value, 8 * size) & M64 if insn.mode == bi.MODE_MEMSX else value
    return _effect(insn, regs, "load")


def _st(insn: Insn, regs: list[int]) -> Effect:
    if insn.mode != bi.MODE_MEM:
        raise _fail(insn)
    size = insn.mem_size or 0
    value = regs[insn.src] if insn.cls == bi.STX else insn.imm
    return _effect(insn, regs, "store", (_write(_addr(regs, insn.dst, insn.off), size, value),))


# ---- atomics -----------------------------------------------------------------------------

_ATOMIC_OPS: dict[int, Callable[[int, int], int]] = {
    0x00: lambda old, v: old + v,
    0x40: lambda old, v: old | v,
    0x50: lambda old, v: old & v,
    0xA0: lambda old, v: old ^ v,
}


def _atomic(insn: Insn, regs: list[int], read: MemRead) -> Effect:
    size, imm = insn.mem_size or 0, insn.imm
    if imm == bi.ATOMIC_LOAD_ACQ:
        regs[insn.dst] = _load(insn, read, _addr(regs, insn.src, insn.off), size)
        return _effect(insn, regs, "load")
    addr = _addr(regs, insn.dst, insn.off)
    if imm == bi.ATOMIC_STORE_REL:
        return _effect(insn, regs, "store", (_write(addr, size, regs[insn.src]),))
    if size not in (4, 8):
        raise _fail(insn)
    old, operand = _load(insn, read, addr, size), regs[insn.src] & _mask(8 * size)
    if imm == bi.ATOMIC_CMPXCHG:
        equal = regs[0] & _mask(8 * size) == old
        regs[0] = old
        writes = (_write(addr, size, operand),) if equal else ()
        return _effect(insn, regs, "atomic", writes)
    if imm == bi.ATOMIC_XCHG:
        new = operand
    elif imm & ~bi.ATOMIC_FETCH in _ATOMIC_OPS:
        new = _ATOMIC_OPS[imm & ~bi.ATOMIC_FETCH](old, operand)
    else:
        raise _fail(insn)
    if imm & bi.ATOMIC_FETCH:
        regs[insn.src] = old
    return _effect(insn, regs, "atomic", (_write(addr, size, new),))


# ---- entry point -------------------------------------------------------------------------

def step(insn: Insn, regs: Sequence[int], read: MemRead,
         ldimm64_value: LdImm64Value | None = None,
         percpu_offset: PercpuOffset | None = None) -> Effect:
    """Effect of executing `insn` with registers `regs` (r0..r10, unsigned 64-bit).

    Up to two more registers are the hidden scratch registers the kernel's verifier
    patches (e.g. signed division guards) use in xlated code: BPF_REG_AX is
    register 11 in 6.x and 12 in 7.2/7.3 (seen in their xlated code).
    `read(addr, size)` supplies memory for loads and atomics; `ldimm64_value(insn)`
    supplies the value of pseudo ld_imm64 loads (maps, functions, ksyms);
    `percpu_offset()` this CPU's per-CPU offset, for the kernel-internal per-CPU
    address mov of verifier-inlined helpers (6.10+). Raises `OracleError` for invalid
    or unsupported instructions.
    """
    if not NREGS <= len(regs) <= NREGS + 2:
        raise OracleError(f"expected {NREGS} registers (up to {NREGS + 2} with hidden ones), "
                          f"got {len(regs)}")
    r = [v & M64 for v in regs]
    cls = insn.cls
    if bi.is_percpu_mov(insn):
        if percpu_offset is None:
            raise _fail(insn, "the per-CPU offset is unknown")
        r[insn.dst] = (r[insn.src] + percpu_offset()) & M64
        return _effect(insn, r, "alu")
    if cls in (bi.ALU, bi.ALU64):
        return _alu(insn, r)
    if cls in (bi.JMP, bi.JMP32):
        return _jmp(insn, r)
    if cls == bi.LD:
        return _ld(insn, r, ldimm64_value)
    if cls == bi.LDX:
        return _ldx(insn, r, read)
    if cls == bi.STX and insn.mode == bi.MODE_ATOMIC:
        return _atomic(insn, r, read)
    return _st(insn, r)
