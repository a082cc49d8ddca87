"""qstep.bpf.insn: decoding and bpftool-style text, checked by hand and against llvm-objdump."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import clang_bpf
from elftools.elf.elffile import ELFFile
from hypothesis import given
from hypothesis import strategies as st

from qstep.bpf.insn import Insn, decode, encode, format_insn
from qstep.errors import ObjectError

SRC = Path(__file__).parent / "bpf_src"


def compile_bpf(out_dir: Path, name: str, *flags: str) -> Path:
    """Compile tests/unit/bpf_src/NAME.c into out_dir."""
    return clang_bpf(SRC / f"{name}.c", out_dir / f"{name}.o", *flags)


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("insn")
    return {"multi": compile_bpf(d, "multi"), "v4": compile_bpf(d, "v4", "-mcpu=v4")}


def raw(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def text(data: bytes, **kwargs: object) -> str:
    (insn,) = decode(data)
    return format_insn(insn, **kwargs)  # type: ignore[arg-type]


# One hand-assembled instruction per line: bytes -> expected bpftool-style text.
CASES = [
    # ALU64 / ALU, immediate and register forms
    (raw(0x07, 1, imm=3), "r1 += 3"),
    (raw(0x04, 1, imm=3), "w1 += 3"),
    (raw(0x0F, 1, 2), "r1 += r2"),
    (raw(0x1C, 1, 2), "w1 -= w2"),
    (raw(0x27, 3, imm=-7), "r3 *= -7"),
    (raw(0x37, 1, imm=5), "r1 /= 5"),
    (raw(0x4F, 1, 2), "r1 |= r2"),
    (raw(0x54, 1, imm=255), "w1 &= 255"),
    (raw(0x67, 2, imm=32), "r2 <<= 32"),
    (raw(0x77, 2, imm=32), "r2 >>= 32"),
    (raw(0x87, 4), "r4 = -r4"),
    (raw(0x84, 4), "w4 = -w4"),
    (raw(0x97, 1, imm=10), "r1 %= 10"),
    (raw(0xAF, 1, 2), "r1 ^= r2"),
    (raw(0xB7, 0, imm=-1), "r0 = -1"),
    (raw(0xBF, 6, 1), "r6 = r1"),
    (raw(0xBC, 6, 1), "w6 = w1"),
    (raw(0xC7, 1, imm=3), "r1 s>>= 3"),
    (raw(0xCC, 1, 2), "w1 s>>= w2"),
    # ISA v4 ALU: sdiv/smod, movsx, bswap
    (raw(0x3F, 1, 2, off=1), "r1 s/= r2"),
    (raw(0x37, 1, off=1, imm=-3), "r1 s/= -3"),
    (raw(0x9F, 1, 2, off=1), "r1 s%= r2"),
    (raw(0x9C, 1, 2, off=1), "w1 s%= w2"),
    (raw(0xBF, 1, 2, off=8), "r1 = (s8)r2"),
    (raw(0xBF, 1, 2, off=16), "r1 = (s16)r2"),
    (raw(0xBF, 1, 2, off=32), "r1 = (s32)r2"),
    (raw(0xBC, 1, 2, off=8), "w1 = (s8)w2"),
    (raw(0xD7, 1, imm=16), "r1 = bswap16 r1"),
    (raw(0xD7, 1, imm=64), "r1 = bswap64 r1"),
    (raw(0xDC, 0, imm=16), "r0 = be16 r0"),
    (raw(0xD4, 0, imm=32), "r0 = le32 r0"),
    # JMP / JMP32
    (raw(0x05, off=1), "goto pc+1"),
    (raw(0x05, off=-3), "goto pc-3"),
    (raw(0x06, imm=70000), "gotol pc+70000"),
    (raw(0x25, 1, off=3, imm=5), "if r1 > 0x5 goto pc+3"),
    (raw(0xCE, 1, 2, off=-2), "if w1 s< w2 goto pc-2"),
    (raw(0x15, 0, off=2), "if r0 == 0x0 goto pc+2"),
    (raw(0x5D, 3, 4, off=7), "if r3 != r4 goto pc+7"),
    (raw(0x45, 1, off=1, imm=8), "if r1 & 0x8 goto pc+1"),
    (raw(0xA6, 1, off=1, imm=-1), "if w1 < 0xffffffff goto pc+1"),
    (raw(0xD5, 1, off=1, imm=2), "if r1 s<= 0x2 goto pc+1"),
    (raw(0x75, 1, off=1, imm=2), "if r1 s>= 0x2 goto pc+1"),
    (raw(0x85, imm=1), "call bpf_map_lookup_elem#1"),
    (raw(0x85, imm=9999), "call unknown#9999"),
    (raw(0x85, src=1, imm=5), "call pc+5"),
    (raw(0x85, src=2, imm=1234), "call kfunc#1234"),
    (raw(0x95), "exit"),
    # LDX / ST / STX, including sign-extending loads
    (raw(0x61, 1, 2, off=4), "r1 = *(u32 *)(r2 +4)"),
    (raw(0x79, 0, 10, off=-8), "r0 = *(u64 *)(r10 -8)"),
    (raw(0x69, 1, 2), "r1 = *(u16 *)(r2 +0)"),
    (raw(0x71, 1, 2, off=14), "r1 = *(u8 *)(r2 +14)"),
    (raw(0x91, 1, 2), "r1 = *(s8 *)(r2 +0)"),
    (raw(0x89, 1, 2, off=2), "r1 = *(s16 *)(r2 +2)"),
    (raw(0x81, 1, 2, off=-4), "r1 = *(s32 *)(r2 -4)"),
    (raw(0x7B, 10, 1, off=-8), "*(u64 *)(r10 -8) = r1"),
    (raw(0x63, 10, 1, off=-4), "*(u32 *)(r10 -4) = r1"),
    (raw(0x62, 10, off=-4, imm=7), "*(u32 *)(r10 -4) = 7"),
    (raw(0x72, 1, off=1, imm=-1), "*(u8 *)(r1 +1) = -1"),
    # atomics
    (raw(0xDB, 1, 2, imm=0x00), "lock *(u64 *)(r1 +0) += r2"),
    (raw(0xC3, 1, 2, off=8, imm=0x40), "lock *(u32 *)(r1 +8) |= r2"),
    (raw(0xDB, 1, 2, imm=0x50), "lock *(u64 *)(r1 +0) &= r2"),
    (raw(0xDB, 1, 2, imm=0xA0), "lock *(u64 *)(r1 +0) ^= r2"),
    (raw(0xDB, 1, 2, imm=0x01), "r2 = atomic64_fetch_add((u64 *)(r1 +0), r2)"),
    (raw(0xC3, 1, 2, imm=0xA1), "r2 = atomic_fetch_xor((u32 *)(r1 +0), r2)"),
    (raw(0xDB, 1, 2, imm=0xE1), "r2 = atomic64_xchg((u64 *)(r1 +0), r2)"),
    (raw(0xDB, 1, 2, imm=0xF1), "r0 = atomic64_cmpxchg((u64 *)(r1 +0), r0, r2)"),
    (raw(0xD3, 1, 2, imm=0x100), "r2 = load_acquire((u8 *)(r1 +0))"),
    (raw(0xDB, 1, 2, imm=0x110), "store_release((u64 *)(r1 +0), r2)"),
    # legacy packet loads
    (raw(0x30, imm=12), "r0 = *(u8 *)skb[12]"),
    (raw(0x28, imm=12), "r0 = *(u16 *)skb[12]"),
    (raw(0x40, src=6, imm=4), "r0 = *(u32 *)skb[r6 + 4]"),
    # invalid encodings
    (raw(0xFF), "(ff) invalid"),
    (raw(0xE7, 1), "(e7) invalid"),
    (raw(0x8C, 1, 2), "(8c) invalid"),
    (raw(0x0D, off=1), "(0d) invalid"),
    (raw(0x96), "(96) invalid"),
    (raw(0xBF, 1, 2, off=4), "(bf) invalid"),
    # the verifier's per-CPU address move (inlined bpf_get_smp_processor_id, 6.10+)
    (raw(0xBF, 0, 0, off=-1), "r0 = &(void __percpu *)(r0)"),
    (raw(0xBC, 0, 0, off=-1), "(bc) invalid"),
    (raw(0x07, 1, off=1, imm=1), "(07) invalid"),
    (raw(0xD7, 1, imm=8), "(d7) invalid"),
    (raw(0x98, 1), "(98) invalid"),
    (raw(0xDB, 1, 2, imm=0x20), "(db) invalid"),
    (raw(0xD3, 1, 2, imm=0x01), "(d3) invalid"),
]


@pytest.mark.parametrize(("data", "expected"), CASES, ids=[c[1] for c in CASES])
def test_format_hand_assembled(data: bytes, expected: str) -> None:
    assert text(data) == expected


def ldimm64(dst: int, src: int, lo: int, hi: int) -> bytes:
    return raw(0x18, dst, src, imm=lo) + raw(0, imm=hi)


@pytest.mark.parametrize(("src", "expected"), [
    (0, "r1 = 0x1122334455667788 ll"),
    (1, "r1 = map[id:1432778632]"),
    (2, "r1 = map[id:1432778632][0]+287454020"),
    (5, "r1 = map[idx:1432778632]"),
    (6, "r1 = map[idx:1432778632][0]+287454020"),
    (3, "r1 = ksym[btf_id:1432778632]"),
    (4, "r1 = func[pc+1432778632]"),
    (7, "(18) invalid"),
])
def test_ldimm64_forms(src: int, expected: str) -> None:
    assert text(ldimm64(1, src, 0x55667788, 0x11223344)) == expected


def test_ldimm64_map_namer_and_value() -> None:
    (insn,) = decode(ldimm64(2, 2, 5, 4))
    assert insn.size == 2 and insn.imm64 == (4 << 32) | 5 and insn.is_ldimm64
    assert format_insn(insn, map_name=lambda i: "flows") == "r2 = map[flows][0]+4"
    assert format_insn(insn, map_name=lambda i: None) == "r2 = map[id:5][0]+4"
    (neg,) = decode(ldimm64(0, 0, -1, -1))
    assert neg.imm64 == 0xFFFFFFFFFFFFFFFF and neg.imm == -1


def test_decode_indexes_slots_and_properties() -> None:
    data = raw(0xB7, 0) + ldimm64(1, 0, 1, 0) + raw(0x25, 1, off=2, imm=5) + \
        raw(0x85, src=1, imm=-4) + raw(0x06, imm=-5) + raw(0x61, 1, 2) + raw(0x95)
    insns = decode(data, start_index=10)
    assert [i.index for i in insns] == [10, 11, 13, 14, 15, 16, 17]
    mov, ld, jgt, call, gotol, ldx, ex = insns
    assert ld.size == 2 and list(ld.slots) == [11, 12]
    assert jgt.is_jump and jgt.jump_target == 16 and not jgt.is_call
    assert call.is_call and call.is_pseudo_call and not call.is_helper_call
    assert call.call_target == 11 and call.jump_target is None
    assert gotol.is_jump and gotol.jump_target == 11
    assert ldx.mem_size == 4 and ld.mem_size == 8 and mov.mem_size is None
    assert ex.is_exit and not ex.is_jump
    assert b"".join(encode(i) for i in insns) == data


def test_pc_relative_off_prints_absolute_targets() -> None:
    (jmp,) = decode(raw(0x25, 1, off=3, imm=5), start_index=7)
    assert format_insn(jmp, pc_relative=False) == "if r1 > 0x5 goto 11"
    (call,) = decode(raw(0x85, src=1, imm=-3), start_index=7)
    assert format_insn(call, pc_relative=False) == "call 5"


def test_helper_namer_override() -> None:
    (insn,) = decode(raw(0x85, imm=1))
    assert format_insn(insn, helper_name=lambda n: f"h{n}") == "call h1#1"
    assert insn.is_helper_call


@pytest.mark.parametrize("data", [b"\0" * 7, b"\0" * 12, raw(0xB7) + raw(0x18)])
def test_decode_errors(data: bytes) -> None:
    with pytest.raises(ObjectError):
        decode(data)


@given(st.lists(st.binary(min_size=8, max_size=8), max_size=6))
def test_fuzz_decode_format(words: list[bytes]) -> None:
    data = b"".join(words)
    try:
        insns = decode(data)
    except ObjectError:
        assert words and words[-1][0] == 0x18
        return
    expected = bytearray(data)
    for insn in insns:
        assert format_insn(insn)
        assert format_insn(insn, pc_relative=False, map_name=lambda i: "m")
        if insn.size == 2:  # encode writes zeros where the 2nd slot has no fields
            second = (insn.index + 1) * 8
            expected[second : second + 4] = bytes(4)
    assert b"".join(encode(i) for i in insns) == bytes(expected)


# ---- llvm-objdump as independent truth ------------------------------------------------

_OBJDUMP_LINE = re.compile(r"^\s*(\d+):\s+((?:[0-9a-f]{2} ){7}[0-9a-f]{2})(?: (?:[0-9a-f]{2} ){7}"
                           r"[0-9a-f]{2})?\s+(.*)$")


def objdump(path: Path) -> dict[str, dict[int, str]]:
    """{section: {slot index: text}} from llvm-objdump-19 -d."""
    out = subprocess.run(["llvm-objdump-19", "-d", "--no-show-raw-insn", str(path)],
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, dict[int, str]] = {}
    section = ""
    for line in out.splitlines():
        m = re.match(r"Disassembly of section (\S+):", line)
        if m:
            section = m.group(1)
            result[section] = {}
            continue
        m = re.match(r"^\s*(\d+):\s+(.*)$", line)
        if m and section:
            result[section][int(m.group(1))] = m.group(2).strip()
    return result


def operands(text: str) -> tuple[list[str], list[int], list[str], str]:
    """(registers, numbers, access types, operator) of an instruction's text."""
    text = re.sub(r" <[\w.+-]+>$", "", text).replace("pc+", "+").replace("pc-", "-")
    text = re.sub(r"(\(r\d+ [-+]) (?=\d)", r"\1", text)  # objdump: "(r10 - 0x8)"
    regs = re.findall(r"(?<![\w])[rw]\d+\b", text)
    nums = [int(n, 0) for n in re.findall(r"(?<![\w])[-+]?(?:0x[0-9a-f]+|\d+)(?![\w])", text)]
    types = re.findall(r"\b[us]\d+\b(?= \*)|\(s\d+\)", text)
    no_mem = re.sub(r"\(r\d+ [-+][0-9a-fx]+\)", "(M)", text)
    op = re.search(r"\s(s?(?:<<|>>|[-+*/%&|^<>=!])?=|s?[<>]|&)\s", no_mem)
    return regs, nums, types, op.group(1) if op else ""


def section_insns(path: Path) -> dict[str, list[Insn]]:
    with path.open("rb") as f:
        elf = ELFFile(f)
        return {s.name: decode(s.data()) for s in elf.iter_sections()
                if s["sh_flags"] & 4 and s["sh_size"]}


@pytest.mark.parametrize("name", ["multi", "v4"])
def test_against_llvm_objdump(objs: dict[str, Path], name: str) -> None:
    truth = objdump(objs[name])
    ours = section_insns(objs[name])
    assert set(ours) == set(truth)
    compared = 0
    for section, insns in ours.items():
        assert [i.index for i in insns] == sorted(truth[section])
        for insn in insns:
            theirs = truth[section][insn.index]
            if theirs == "<unknown>":  # llvm-objdump-19 cannot print 32-bit atomics
                continue
            mine = format_insn(insn)
            if insn.is_helper_call:
                assert theirs == f"call {insn.imm:#x}", (section, insn)
                continue
            ours_ops, theirs_ops = operands(mine), operands(theirs)
            if "xchg_64" in theirs:  # llvm writes "xchg_64(r1 + 0x0, r2)": no access type
                theirs_ops = (theirs_ops[0], theirs_ops[1], ours_ops[2], theirs_ops[3])
            assert ours_ops == theirs_ops, (section, insn.index, mine, theirs)
            compared += 1
    assert compared > 20


def test_v4_object_has_v4_opcodes(objs: dict[str, Path]) -> None:
    insns = [i for lst in section_insns(objs["v4"]).values() for i in lst]
    seen = {(i.code, i.off if i.code in (0x3F, 0x9F, 0x3C, 0x9C, 0xBF, 0xBC) else 0)
            for i in insns}
    expected = {(0x3F, 1), (0x9F, 1), (0x3C, 1), (0x9C, 1), (0xBF, 8), (0xBF, 16),
                (0xBF, 32), (0xBC, 8), (0xBC, 16), (0x81, 0), (0x89, 0), (0x91, 0),
                (0xD7, 0), (0x06, 0)}
    assert expected <= seen
    texts = {format_insn(i) for i in insns}
    assert {"gotol pc+1", "r1 s/= r2", "w1 = (s8)w2"} <= texts
    assert any(t.startswith("r0 = atomic_cmpxchg((u32 *)") for t in texts)
    assert any(re.fullmatch(r"r\d = bswap16 r\d", t) for t in texts)
    assert any(re.fullmatch(r"r\d = \*\(s8 \*\)\(r\d \+\d+\)", t) for t in texts)
