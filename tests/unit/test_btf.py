"""qstep.bpf.btf: .BTF and .BTF.ext parsing, checked against bpftool and the C source."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import clang_bpf, require_tool
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from qstep.bpf import btf as b
from qstep.bpf.btf import Btf, BtfExt, decode_func_info, decode_line_info
from qstep.errors import ObjectError

SRC = Path(__file__).parent / "bpf_src"
SIZED = {"INT", "STRUCT", "UNION", "ENUM", "ENUM64", "FLOAT"}


def compile_bpf(out_dir: Path, name: str, *flags: str) -> Path:
    """Compile tests/unit/bpf_src/NAME.c into out_dir."""
    return clang_bpf(SRC / f"{name}.c", out_dir / f"{name}.o", *flags)


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("btf")
    return {name: compile_bpf(d, name) for name in ("multi", "kinds")}


def sections(path: Path) -> tuple[bytes, bytes]:
    with path.open("rb") as f:
        elf = ELFFile(f)
        btf, ext = elf.get_section_by_name(".BTF"), elf.get_section_by_name(".BTF.ext")
        assert btf is not None and ext is not None
        return btf.data(), ext.data()


# ---- bpftool as independent truth ---------------------------------------------------------

def bpftool_dump(path: Path) -> dict[int, tuple[str, str, dict[str, str], list[str]]]:
    """{id: (kind, name, attrs, member lines)} from `bpftool btf dump file`."""
    require_tool("bpftool")
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(path)], check=True,
                         capture_output=True, text=True).stdout
    types: dict[int, tuple[str, str, dict[str, str], list[str]]] = {}
    current: list[str] = []
    for line in out.splitlines():
        m = re.match(r"\[(\d+)\] (\w+) '([^']*)'(.*)", line)
        if m:
            attrs = dict(re.findall(r"(\w+)=(\S+?),?(?=\s|$)", m.group(4)))
            current = []
            types[int(m.group(1))] = (m.group(2), m.group(3), attrs, current)
        else:
            current.append(line.strip())
    return types


@pytest.mark.parametrize("name", ["multi", "kinds"])
def test_types_match_bpftool(objs: dict[str, Path], name: str) -> None:
    btf_data, _ = sections(objs[name])
    btf = Btf.parse(btf_data)
    truth = bpftool_dump(objs[name])
    assert len(btf.types) - 1 == len(truth)
    for tid, (kind, tname, attrs, members) in truth.items():
        t = btf.type_by_id(tid)
        assert (t.kind_name, t.name or "(anon)") == (kind, tname), tid
        if kind in SIZED:
            assert t.size == int(attrs["size"]), tid
            assert btf.size_of(tid) == t.size
        for key in ("type_id", "ret_type_id"):
            if key in attrs and kind != "ARRAY":
                assert t.ref == int(attrs[key]), tid
        if kind == "ARRAY":
            assert t.array is not None
            assert (t.array.type_id, t.array.nelems) == (int(attrs["type_id"]),
                                                         int(attrs["nr_elems"]))
        if kind == "INT":
            assert t.int_bits == int(attrs["nr_bits"])
        if kind in ("STRUCT", "UNION"):
            got = [f"'{m.name or '(anon)'}' type_id={m.type_id} bits_offset={m.bit_offset}"
                   + (f" bitfield_size={m.bitfield_size}" if m.bitfield_size else "")
                   for m in t.members]
            assert got == members, tid
        if kind in ("ENUM", "ENUM64"):
            want = [re.sub(r"U?LL$", "", line) for line in members]
            assert [f"'{v.name}' val={v.value}" for v in t.enum_values] == want
        if kind == "FUNC_PROTO":
            assert [f"'{p.name or '(anon)'}' type_id={p.type_id}" for p in t.params] == members
        if kind == "DECL_TAG":
            assert t.component_idx == int(attrs["component_idx"])


def test_queries_on_kinds(objs: dict[str, Path]) -> None:
    btf = Btf.parse(sections(objs["kinds"])[0])
    shape = btf.find_by_name("shape", "STRUCT")
    assert shape is not None and btf.size_of(shape.id) == 88
    names = {m.name: btf.type_name(m.type_id) for m in btf.members(shape.id)}
    assert names == {
        "ratio": "float", "area": "double", "size": "enum big", "color": "enum color",
        "": "union (anon)", "parts": "struct (anon)", "grid": "int[2][3]",
        "cb": "int (*)(int, long)", "uptr": "int *", "name": "const char *",
    }
    big = btf.find_by_name("big", b.KIND_ENUM64)
    assert big is not None and [v.value for v in big.enum_values] == [1, 1 << 32]
    color = btf.find_by_name("color")
    assert color is not None and color.is_signed
    assert [v.value for v in color.enum_values] == [0, 5, -2]
    assert btf.find_by_name("shape", "UNION") is None
    tag = btf.find_by_name("shape_tag", "DECL_TAG")
    assert tag is not None and tag.ref == shape.id and tag.component_idx == -1
    shapes = btf.find_by_name("shapes", "VAR")
    assert shapes is not None and btf.type_name(shapes.ref) == "struct shape[2]"
    assert btf.size_of(shapes.id) == 176


def test_resolve_and_typedef_chain(objs: dict[str, Path]) -> None:
    btf = Btf.parse(sections(objs["multi"])[0])
    key = btf.find_by_name("flow_key", "STRUCT")
    assert key is not None
    members = {m.name: m for m in btf.members(key.id)}
    sport = members["sport"]
    assert btf.type_name(sport.type_id) == "__be16"
    assert btf.typedef_names(sport.type_id) == ["__be16", "__u16"]
    assert btf.resolve(sport.type_id).name == "unsigned short"
    assert (members["kind"].bit_offset, members["kind"].bitfield_size) == (107, 5)
    cfg = btf.find_by_name("cfg_mode", "VAR")
    assert cfg is not None and btf.type_name(cfg.ref) == "const volatile __u32"
    assert btf.resolve(cfg.ref).name == "unsigned int" and btf.size_of(cfg.ref) == 4


# ---- hand-built BTF --------------------------------------------------------------------------

class Builder:
    """Assembles a .BTF blob type by type."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()

    def s(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def t(self, name: str, kind: int, vlen: int, size_or_type: int, *extra: int,
          kflag: bool = False, fmt: str = "") -> None:
        info = (kind << 24) | vlen | (1 << 31 if kflag else 0)
        self.types += struct.pack("<III", self.s(name), info, size_or_type)
        self.types += struct.pack("<" + (fmt or "I" * len(extra)), *extra)

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types),
                          len(self.strings))
        return hdr + bytes(self.types) + bytes(self.strings)


def test_hand_built_all_kinds() -> None:
    bb = Builder()
    bb.t("int", b.KIND_INT, 0, 4, (1 << 24) | 32)                     # 1
    bb.t("", b.KIND_PTR, 0, 1)                                          # 2 int *
    bb.t("", b.KIND_ARRAY, 0, 0, 1, 1, 3)                               # 3 int[3]
    bb.t("pt", b.KIND_STRUCT, 2, 8, bb.s("x"), 1, 0, bb.s("y"), 1, (3 << 24) | 32,
         kflag=True)                                                    # 4
    bb.t("u", b.KIND_UNION, 1, 4, bb.s("a"), 1, 0)                      # 5
    bb.t("e", b.KIND_ENUM, 1, 4, bb.s("A"), 7)                          # 6
    bb.t("fw", b.KIND_FWD, 0, 0, kflag=True)                            # 7 union fw
    bb.t("myint", b.KIND_TYPEDEF, 0, 1)                                 # 8
    bb.t("", b.KIND_VOLATILE, 0, 8)                                     # 9
    bb.t("", b.KIND_CONST, 0, 9)                                        # 10
    bb.t("", b.KIND_RESTRICT, 0, 2)                                     # 11
    bb.t("", b.KIND_FUNC_PROTO, 2, 1, bb.s("p"), 2, 0, 0)               # 12 int (int *, ...)
    bb.t("f", b.KIND_FUNC, 1, 12)                                       # 13
    bb.t("v", b.KIND_VAR, 0, 4, 1)                                      # 14
    bb.t(".data", b.KIND_DATASEC, 1, 8, 14, 0, 8)                       # 15
    bb.t("float", b.KIND_FLOAT, 0, 4)                                   # 16
    bb.t("tag", b.KIND_DECL_TAG, 0, 4, 1, fmt="i")                      # 17
    bb.t("user", b.KIND_TYPE_TAG, 0, 2)                                 # 18
    bb.t("e64", b.KIND_ENUM64, 1, 8, bb.s("BIG"), 0xFFFFFFFF, 0xFFFFFFFF, kflag=True)  # 19
    bb.t("", b.KIND_PTR, 0, 12)                                         # 20 fn pointer
    bb.t("", b.KIND_PTR, 0, 3)                                          # 21 pointer to array
    bb.t("old", b.KIND_INT, 0, 1, (4 << 16) | 3)                        # 22 old bitfield int
    bb.t("ob", b.KIND_STRUCT, 1, 4, bb.s("bits"), 22, 0)                # 23
    btf = Btf.parse(bb.blob())
    kinds = [t.kind_name for t in btf.types[1:]]
    assert kinds == ["INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF",
                     "VOLATILE", "CONST", "RESTRICT", "FUNC_PROTO", "FUNC", "VAR", "DATASEC",
                     "FLOAT", "DECL_TAG", "TYPE_TAG", "ENUM64", "PTR", "PTR", "INT", "STRUCT"]
    assert btf.type_name(10) == "const volatile myint"
    assert btf.resolve(10).name == "int" and btf.size_of(10) == 4
    assert btf.type_name(11) == "int * restrict" and btf.size_of(11) == 8
    assert btf.type_name(12) == "int (int *, ...)"
    assert btf.type_name(20) == "int (*)(int *, ...)"
    assert btf.type_name(21) == "int (*)[3]"
    assert btf.type_name(7) == "union fw" and btf.size_of(7) == 0
    assert btf.size_of(3) == 12 and btf.size_of(14) == 8 and btf.size_of(15) == 8
    assert btf.type_by_id(4).members[1] == b.BtfMember("y", 1, 32, 3)
    assert btf.type_by_id(19).enum_values == [b.BtfEnumValue("BIG", -1)]
    assert btf.type_by_id(17).component_idx == 1
    assert btf.type_by_id(13).linkage == 1
    assert btf.type_by_id(15).var_secinfos == [b.BtfVarSecInfo(14, 0, 8)]
    assert btf.members(23) == [b.BtfMember("bits", 22, 4, 3)]
    assert btf.find_by_name("f", b.KIND_FUNC) is btf.type_by_id(13)
    with pytest.raises(ObjectError):
        btf.members(1)
    with pytest.raises(ObjectError):
        btf.type_by_id(99)


@pytest.mark.parametrize(("blob", "message"), [
    (b"\xeb\x9f\x01\x00" + bytes(20), "bad magic"),  # big-endian BTF
    (b"\x9f", "too small"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 0, 1) + b"\0", "beyond"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1) + bytes(12) + b"\0",
     "unknown kind 0"),
    (struct.pack("<HBBIIIII", 0xEB9F, 2, 0, 24, 0, 0, 0, 1) + b"\0", "version 2"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1)
     + struct.pack("<III", 0, 31 << 24, 0) + b"\0", "unknown kind"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1)
     + struct.pack("<III", 0, (4 << 24) | 1, 0) + b"\0", "truncated"),
])
def test_bad_btf(blob: bytes, message: str) -> None:
    with pytest.raises(ObjectError, match=message):
        Btf.parse(blob)


# ---- .BTF.ext ---------------------------------------------------------------------------------

def test_btf_ext_lines_match_source(objs: dict[str, Path]) -> None:
    btf_data, ext_data = sections(objs["multi"])
    btf = Btf.parse(btf_data)
    ext = BtfExt.parse(ext_data, btf)
    source = (SRC / "multi.c").read_text().splitlines()
    assert set(ext.line_info) == {"xdp", "tc", ".text"}
    for section, rows in ext.line_info.items():
        assert rows and rows == sorted(rows, key=lambda r: r.insn_off)
        for row in rows:
            assert row.file_name.endswith("multi.c")
            assert row.line_text == source[row.line - 1], (section, row)
            assert row.col <= len(row.line_text) + 1
    funcs = {sec: [(f.insn_off, f.name) for f in fi] for sec, fi in ext.func_info.items()}
    assert funcs == {"xdp": [(0, "xdp_count")], "tc": [(0, "tc_count")],
                     ".text": [(0, "global_scale"), (6, "add_bytes")]}


def test_btf_ext_tolerates_core_relo(objs: dict[str, Path]) -> None:
    btf_data, ext_data = sections(objs["kinds"])
    hdr_len, = struct.unpack_from("<I", ext_data, 4)
    assert hdr_len >= 32 and struct.unpack_from("<I", ext_data, 28)[0] > 0  # has core_relo
    ext = BtfExt.parse(ext_data, Btf.parse(btf_data))
    assert [f.name for f in ext.func_info["kprobe/do_thing"]] == ["kinds_prog"]
    assert ext.line_info["kprobe/do_thing"]


def test_kernel_format_records(objs: dict[str, Path]) -> None:
    btf_data, ext_data = sections(objs["multi"])
    btf = Btf.parse(btf_data)
    ext = BtfExt.parse(ext_data, btf)
    rows = ext.line_info["xdp"]
    strings = btf.strings

    def off(text: str) -> int:
        return strings.index(text.encode() + b"\0")

    for rec_size in (16, 24):
        blob = b"".join(struct.pack("<IIII", r.insn_off, off(r.file_name), off(r.line_text),
                                    (r.line << 10) | r.col).ljust(rec_size, b"\xff")
                        for r in rows)
        decoded = decode_line_info(blob, rec_size, btf)
        assert [(d.insn_off, d.line, d.col, d.line_text) for d in decoded] == \
            [(r.insn_off, r.line, r.col, r.line_text) for r in rows]
    funcs = ext.func_info[".text"]
    blob = b"".join(struct.pack("<II", f.insn_off, f.type_id) for f in funcs)
    assert decode_func_info(blob, 8, btf) == funcs
    with pytest.raises(ObjectError):
        decode_line_info(blob, 8, btf)


def test_bad_btf_ext(objs: dict[str, Path]) -> None:
    btf_data, ext_data = sections(objs["multi"])
    btf = Btf.parse(btf_data)
    with pytest.raises(ObjectError, match="bad magic"):
        BtfExt.parse(b"\0" * 32, btf)
    with pytest.raises(ObjectError, match="truncated"):
        BtfExt.parse(ext_data[:60], btf)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_corrupted_btf(objs: dict[str, Path], flips: list[tuple[int, int]]) -> None:
    """Corrupted BTF parses or raises ObjectError; queries never crash otherwise."""
    data = bytearray(sections(objs["multi"])[0])
    for pos, value in flips:
        data[pos % len(data)] = value
    try:
        btf = Btf.parse(bytes(data))
        for t in btf.types:
            btf.type_name(t.id)
            btf.size_of(t.id)
            if btf.resolve(t.id).kind in (b.KIND_STRUCT, b.KIND_UNION):
                btf.members(t.id)
    except ObjectError:
        pass
