"""BPF instruction decoding (ISA v4, RFC 9669) and bpftool-style text.

`decode` turns raw little-endian bytes into `Insn` records (an ld_imm64 takes two
8-byte slots and yields one `Insn`); `format_insn` prints one the way
`bpftool prog dump xlated` does, e.g. ``r1 = *(u32 *)(r2 +4)`` or ``if w1 s< w2 goto pc-2``.
Opcodes that the ISA does not define print as ``(code) invalid`` instead of raising.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from qstep.bpf.helpers import HELPER_NAMES
from qstep.errors import ObjectError

INSN_SIZE = 8

# Instruction classes.
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)

# Source operand (ALU/JMP) and size/mode fields (loads and stores).
BPF_K, BPF_X = 0x00, 0x08
BPF_W, BPF_H, BPF_B, BPF_DW = 0x00, 0x08, 0x10, 0x18
MODE_IMM, MODE_ABS, MODE_IND, MODE_MEM, MODE_MEMSX, MODE_ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0

# ALU operations.
ALU_END, ALU_NEG, ALU_MOV, ALU_DIV, ALU_MOD = 0xD0, 0x80, 0xB0, 0x30, 0x90
ALU_OPS: dict[int, str] = {
    0x00: "+=", 0x10: "-=", 0x20: "*=", 0x30: "/=", 0x40: "|=", 0x50: "&=", 0x60: "<<=",
    0x70: ">>=", 0x90: "%=", 0xA0: "^=", 0xB0: "=", 0xC0: "s>>=",
}

# Jump operations.
JMP_JA, JMP_CALL, JMP_EXIT = 0x00, 0x80, 0x90
JMP_OPS: dict[int, str] = {
    0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&", 0x50: "!=", 0x60: "s>", 0x70: "s>=",
    0xA0: "<", 0xB0: "<=", 0xC0: "s<", 0xD0: "s<=",
}

# Atomic operations (in imm).
ATOMIC_FETCH = 0x01
ATOMIC_XCHG, ATOMIC_CMPXCHG = 0xE0 | ATOMIC_FETCH, 0xF0 | ATOMIC_FETCH
ATOMIC_LOAD_ACQ, ATOMIC_STORE_REL = 0x100, 0x110
ATOMIC_ALU: dict[int, tuple[str, str]] = {
    0x00: ("+=", "add"), 0x40: ("|=", "or"), 0x50: ("&=", "and"), 0xA0: ("^=", "xor"),
}

# Pseudo source registers.
PSEUDO_CALL, PSEUDO_KFUNC_CALL = 1, 2
PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_BTF_ID = 1, 2, 3
PSEUDO_FUNC, PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE = 4, 5, 6

LDIMM64_CODE = LD | MODE_IMM | BPF_DW
SIZE_BYTES: dict[int, int] = {BPF_W: 4, BPF_H: 2, BPF_B: 1, BPF_DW: 8}

HelperNamer = Callable[[int], "str | None"]
MapNamer = Callable[["Insn"], "str | None"]


@dataclass(frozen=True)
class Insn:
    """One decoded instruction; `index` is its slot index (8-byte units)."""

    index: int
    code: int
    dst: int
    src: int
    off: int
    imm: int
    imm64: int | None = None
    size: int = 1

    @property
    def cls(self) -> int:
        """Instruction class (LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64)."""
        return self.code & 0x07

    @property
    def op(self) -> int:
        """ALU/JMP operation bits (code & 0xf0)."""
        return self.code & 0xF0

    @property
    def mode(self) -> int:
        """Load/store mode bits (code & 0xe0)."""
        return self.code & 0xE0

    @property
    def uses_reg_src(self) -> bool:
        """True for the BPF_X (register source) form of ALU/JMP."""
        return bool(self.code & BPF_X)

    @property
    def is_call(self) -> bool:
        """Any call: helper, bpf-to-bpf or kfunc."""
        return self.code == JMP | JMP_CALL

    @property
    def is_helper_call(self) -> bool:
        """Call of a kernel helper by id."""
        return self.is_call and self.src == 0

    @property
    def is_pseudo_call(self) -> bool:
        """bpf-to-bpf call (target is pc-relative in imm)."""
        return self.is_call and self.src == PSEUDO_CALL

    @property
    def is_kfunc_call(self) -> bool:
        """Call of a kernel function by BTF id."""
        return self.is_call and self.src == PSEUDO_KFUNC_CALL

    @property
    def is_exit(self) -> bool:
        """The exit instruction."""
        return self.code == JMP | JMP_EXIT

    @property
    def is_jump(self) -> bool:
        """Conditional or unconditional jump (not call/exit)."""
        if self.cls not in (JMP, JMP32) or self.op in (JMP_CALL, JMP_EXIT):
            return False
        if self.op == JMP_JA:
            return not self.uses_reg_src
        return self.op in JMP_OPS

    @property
    def is_ldimm64(self) -> bool:
        """The two-slot 64-bit immediate load."""
        return self.code == LDIMM64_CODE

    @property
    def jump_target(self) -> int | None:
        """Absolute slot index of a jump's target (None if not a jump)."""
        if not self.is_jump:
            return None
        if self.cls == JMP32 and self.op == JMP_JA:
            return self.index + 1 + self.imm
        return self.index + 1 + self.off

    @property
    def call_target(self) -> int | None:
        """Absolute slot index of a bpf-to-bpf call's target, from imm."""
        return self.index + 1 + self.imm if self.is_pseudo_call else None

    @property
    def mem_size(self) -> int | None:
        """Access size in bytes of loads and stores, else None."""
        if self.cls in (LD, LDX, ST, STX):
            return SIZE_BYTES[self.code & 0x18]
        return None

    @property
    def slots(self) -> range:
        """Slot indexes this instruction occupies."""
        return range(self.index, self.index + self.size)


def decode(data: bytes, start_index: int = 0) -> list[Insn]:
    """Decode little-endian instruction bytes; ld_imm64 consumes two slots."""
    if len(data) % INSN_SIZE:
        raise ObjectError(f"instruction bytes: size {len(data)} is not a multiple of 8")
    out: list[Insn] = []
    pos = 0
    while pos < len(data):
        code, regs, off, imm = struct.unpack_from("<BBhi", data, pos)
        index = start_index + pos // INSN_SIZE
        if code == LDIMM64_CODE:
            if pos + 2 * INSN_SIZE > len(data):
                raise ObjectError(f"instruction {index}: ld_imm64 truncated (missing 2nd slot)")
            (imm_hi,) = struct.unpack_from("<i", data, pos + 12)
            imm64 = (imm & 0xFFFFFFFF) | ((imm_hi & 0xFFFFFFFF) << 32)
            out.append(Insn(index, code, regs & 0xF, regs >> 4, off, imm, imm64, 2))
            pos += 2 * INSN_SIZE
        else:
            out.append(Insn(index, code, regs & 0xF, regs >> 4, off, imm))
            pos += INSN_SIZE
    return out


def encode(insn: Insn) -> bytes:
    """Inverse of `decode` for one instruction (8 or 16 bytes)."""
    regs = (insn.src << 4) | insn.dst
    if insn.is_ldimm64 and insn.imm64 is not None:
        lo = insn.imm64 & 0xFFFFFFFF
        hi = (insn.imm64 >> 32) & 0xFFFFFFFF
        return struct.pack("<BBhIBBhI", insn.code, regs, insn.off, lo, 0, 0, 0, hi)
    return struct.pack("<BBhi", insn.code, regs, insn.off, insn.imm)


def _invalid(insn: Insn) -> str:
    return f"({insn.code:02x}) invalid"


def _mem(reg: int, off: int) -> str:
    return f"(r{reg} {off:+d})"


def _utype(insn: Insn) -> str:
    return f"u{SIZE_BYTES[insn.code & 0x18] * 8}"


def _format_alu(insn: Insn) -> str:
    r = "r" if insn.cls == ALU64 else "w"
    dst, op = f"{r}{insn.dst}", insn.op
    if op == ALU_END:
        return _format_end(insn)
    if op == ALU_NEG:
        return f"{dst} = -{dst}" if not insn.uses_reg_src and insn.off == 0 else _invalid(insn)
    if op not in ALU_OPS:
        return _invalid(insn)
    text = ALU_OPS[op]
    if op in (ALU_DIV, ALU_MOD) and insn.off == 1:
        text = "s" + text
    elif op == ALU_MOV and insn.off != 0:
        return _format_movsx(insn)
    elif insn.off != 0:
        return _invalid(insn)
    operand = f"{r}{insn.src}" if insn.uses_reg_src else str(insn.imm)
    return f"{dst} {text} {operand}"


ADDR_PERCPU = -1  # kernel-internal mov (verifier-inlined helpers, 6.10+): add the CPU offset


def is_percpu_mov(insn: Insn) -> bool:
    """The kernel-internal ``dst = src + this CPU's per-CPU offset`` (xlated code only)."""
    return (insn.cls == ALU64 and insn.op == ALU_MOV and insn.uses_reg_src
            and insn.off == ADDR_PERCPU)


def _format_movsx(insn: Insn) -> str:
    if is_percpu_mov(insn):
        return f"r{insn.dst} = &(void __percpu *)(r{insn.src})"
    allowed = (8, 16, 32) if insn.cls == ALU64 else (8, 16)
    if not insn.uses_reg_src or insn.off not in allowed:
        return _invalid(insn)
    r = "r" if insn.cls == ALU64 else "w"
    return f"{r}{insn.dst} = (s{insn.off}){r}{insn.src}"


def _format_end(insn: Insn) -> str:
    if insn.imm not in (16, 32, 64) or insn.off != 0:
        return _invalid(insn)
    if insn.cls == ALU64:
        if insn.uses_reg_src:
            return _invalid(insn)
        return f"r{insn.dst} = bswap{insn.imm} r{insn.dst}"
    kind = "be" if insn.uses_reg_src else "le"
    return f"r{insn.dst} = {kind}{insn.imm} r{insn.dst}"


def _target(delta: int, insn: Insn, pc_relative: bool) -> str:
    return f"pc{delta:+d}" if pc_relative else str(insn.index + 1 + delta)


def _format_jmp(insn: Insn, helper_name: HelperNamer | None, pc_relative: bool) -> str:
    op, is32 = insn.op, insn.cls == JMP32
    if op == JMP_JA and not insn.uses_reg_src:
        if is32:
            return f"gotol {_target(insn.imm, insn, pc_relative)}"
        return f"goto {_target(insn.off, insn, pc_relative)}"
    if insn.is_call:
        return _format_call(insn, helper_name, pc_relative)
    if insn.is_exit:
        return "exit"
    if op not in JMP_OPS:
        return _invalid(insn)
    r = "w" if is32 else "r"
    operand = f"{r}{insn.src}" if insn.uses_reg_src else f"{insn.imm & 0xFFFFFFFF:#x}"
    target = _target(insn.off, insn, pc_relative)
    return f"if {r}{insn.dst} {JMP_OPS[op]} {operand} goto {target}"


def _format_call(insn: Insn, helper_name: HelperNamer | None, pc_relative: bool) -> str:
    if insn.src == PSEUDO_CALL:
        return f"call {_target(insn.imm, insn, pc_relative)}"
    if insn.src == PSEUDO_KFUNC_CALL:
        return f"call kfunc#{insn.imm}"
    if insn.src != 0:
        return _invalid(insn)
    name = helper_name(insn.imm) if helper_name else HELPER_NAMES.get(insn.imm)
    return f"call {name or 'unknown'}#{insn.imm}"


def _format_ld(insn: Insn, map_name: MapNamer | None) -> str:
    size = insn.code & 0x18
    if insn.is_ldimm64:
        return _format_ldimm64(insn, map_name)
    if insn.mode == MODE_ABS and size != BPF_DW:
        return f"r0 = *({_utype(insn)} *)skb[{insn.imm}]"
    if insn.mode == MODE_IND and size != BPF_DW:
        return f"r0 = *({_utype(insn)} *)skb[r{insn.src} + {insn.imm}]"
    return _invalid(insn)


def _format_ldimm64(insn: Insn, map_name: MapNamer | None) -> str:
    value = insn.imm64 if insn.imm64 is not None else insn.imm & 0xFFFFFFFF
    dst, hi = f"r{insn.dst}", value >> 32
    if insn.src == 0:
        return f"{dst} = {value:#x} ll"
    if insn.src in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE):
        name = map_name(insn) if map_name else None
        if name is None:
            kind = "idx" if insn.src in (PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE) else "id"
            name = f"{kind}:{insn.imm & 0xFFFFFFFF}"
        if insn.src in (PSEUDO_MAP_FD, PSEUDO_MAP_IDX):
            return f"{dst} = map[{name}]"
        return f"{dst} = map[{name}][0]+{hi}"
    if insn.src == PSEUDO_BTF_ID:
        return f"{dst} = ksym[btf_id:{insn.imm}]"
    if insn.src == PSEUDO_FUNC:
        return f"{dst} = func[pc{insn.imm:+d}]"
    return _invalid(insn)


def _format_ldx(insn: Insn) -> str:
    size = insn.code & 0x18
    if insn.mode == MODE_MEM:
        return f"r{insn.dst} = *({_utype(insn)} *){_mem(insn.src, insn.off)}"
    if insn.mode == MODE_MEMSX and size != BPF_DW:
        return f"r{insn.dst} = *(s{SIZE_BYTES[size] * 8} *){_mem(insn.src, insn.off)}"
    return _invalid(insn)


def _format_st(insn: Insn) -> str:
    if insn.mode != MODE_MEM:
        return _invalid(insn)
    return f"*({_utype(insn)} *){_mem(insn.dst, insn.off)} = {insn.imm}"


def _format_stx(insn: Insn) -> str:
    if insn.mode == MODE_MEM:
        return f"*({_utype(insn)} *){_mem(insn.dst, insn.off)} = r{insn.src}"
    if insn.mode == MODE_ATOMIC:
        return _format_atomic(insn)
    return _invalid(insn)


def _format_atomic(insn: Insn) -> str:
    size, imm = insn.code & 0x18, insn.imm
    ptr = f"({_utype(insn)} *){_mem(insn.dst, insn.off)}"
    if imm == ATOMIC_LOAD_ACQ:
        return f"r{insn.src} = load_acquire({ptr})"
    if imm == ATOMIC_STORE_REL:
        return f"store_release({ptr}, r{insn.src})"
    if size not in (BPF_W, BPF_DW):
        return _invalid(insn)
    bits = "64" if size == BPF_DW else ""
    if imm in (ATOMIC_XCHG, ATOMIC_CMPXCHG):
        if imm == ATOMIC_XCHG:
            return f"r{insn.src} = atomic{bits}_xchg({ptr}, r{insn.src})"
        return f"r0 = atomic{bits}_cmpxchg({ptr}, r0, r{insn.src})"
    alu = ATOMIC_ALU.get(imm & ~ATOMIC_FETCH)
    if alu is None:
        return _invalid(insn)
    if imm & ATOMIC_FETCH:
        return f"r{insn.src} = atomic{bits}_fetch_{alu[1]}({ptr}, r{insn.src})"
    return f"lock *({_utype(insn)} *){_mem(insn.dst, insn.off)} {alu[0]} r{insn.src}"


def format_insn(
    insn: Insn,
    helper_name: HelperNamer | None = None,
    pc_relative: bool = True,
    map_name: MapNamer | None = None,
) -> str:
    """bpftool-style text of one instruction.

    `helper_name(id)` overrides the built-in helper table; `map_name(insn)` names the
    map of a pseudo map ld_imm64 (src 1, 2, 5, 6) instead of ``id:N``/``idx:N``.
    With `pc_relative=False` jump and call targets print as absolute slot indexes.
    """
    cls = insn.cls
    if cls in (ALU, ALU64):
        return _format_alu(insn)
    if cls in (JMP, JMP32):
        return _format_jmp(insn, helper_name, pc_relative)
    if cls == LD:
        return _format_ld(insn, map_name)
    if cls == LDX:
        return _format_ldx(insn)
    if cls == ST:
        return _format_st(insn)
    return _format_stx(insn)
