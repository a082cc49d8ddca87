"""qstep.bpf.elf and qstep.bpf.dwarf_lines, checked against llvm-objdump and llvm-dwarfdump."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import clang_bpf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qstep.bpf.elf import BpfObject
from qstep.errors import ObjectError

SRC = Path(__file__).parent / "bpf_src"


def compile_bpf(out_dir: Path, name: str, *flags: str, src: Path | None = None) -> Path:
    """Compile tests/unit/bpf_src/NAME.c (or `src`) into out_dir."""
    return clang_bpf(src or SRC / f"{name}.c", out_dir / f"{name}.o", *flags)


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("elf")
    (d / "dwarf4").mkdir()
    return {"multi": compile_bpf(d, "multi"), "kinds": compile_bpf(d, "kinds"),
            "v4": compile_bpf(d, "v4", "-mcpu=v4"),
            "multi_dwarf4": compile_bpf(d / "dwarf4", "multi", "-gdwarf-4")}


@pytest.fixture(scope="module")
def multi(objs: dict[str, Path]) -> BpfObject:
    return BpfObject.open(objs["multi"])


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


# ---- programs, maps -------------------------------------------------------------------------

def test_programs_and_subprograms(multi: BpfObject) -> None:
    progs = [(p.name, p.section, p.offset, p.insn_count, p.is_subprog) for p in multi.programs]
    assert progs == [("xdp_count", "xdp", 0, 49, False), ("tc_count", "tc", 0, 28, False)]
    subs = [(p.name, p.offset, p.insn_count, p.is_subprog) for p in multi.subprograms]
    assert subs == [("global_scale", 0, 6, True), ("add_bytes", 6, 18, True)]
    add = multi.subprograms[1]
    assert add.insns[0].index == 6 and add.insns[-1].is_exit
    assert sum(i.size for i in add.insns) == add.insn_count
    assert multi.function_at(".text", 10) is add
    assert multi.data == multi.path.read_bytes()


def test_symbols_match_objdump(objs: dict[str, Path], multi: BpfObject) -> None:
    funcs = {}
    for line in run("llvm-objdump-19", "-t", str(objs["multi"])).splitlines():
        m = re.match(r"([0-9a-f]{16}) [lg] +F (\S+)\s+([0-9a-f]{16}) (\S+)", line)
        if m:
            funcs[m.group(4)] = (m.group(2), int(m.group(1), 16) // 8, int(m.group(3), 16) // 8)
    ours = {p.name: (p.section, p.offset, p.insn_count) for p in multi.functions}
    assert ours == funcs


def test_find_program(multi: BpfObject) -> None:
    assert multi.find_program("tc_count").section == "tc"
    assert multi.find_program("xdp").name == "xdp_count"
    with pytest.raises(ObjectError, match=r"no program 'nope'; available: xdp_count \(xdp\), "
                                          r"tc_count \(tc\)"):
        multi.find_program("nope")
    with pytest.raises(ObjectError, match="no program 'add_bytes'"):
        multi.find_program("add_bytes")


def test_btf_maps(multi: BpfObject) -> None:
    flows = multi.find_map("flows")
    assert (flows.type_name, flows.key_size, flows.value_size, flows.max_entries) == \
        ("hash", 16, 40, 1024)
    assert flows.key_type_id is not None and flows.value_type_id is not None
    assert multi.btf.type_name(flows.key_type_id) == "struct flow_key"
    assert multi.btf.type_name(flows.value_type_id) == "struct flow_val"
    counters = multi.find_map("counters")
    assert (counters.type_name, counters.key_size, counters.value_size, counters.max_entries,
            counters.offset) == ("array", 4, 8, 4, 32)
    assert counters.key_type_id is None
    with pytest.raises(ObjectError, match="no map 'x'; available: flows, counters, .bss"):
        multi.find_map("x")


def test_global_data_maps(multi: BpfObject) -> None:
    data_maps = {m.name: m for m in multi.maps if m.is_global_data}
    assert set(data_maps) == {".bss", ".data", ".rodata", ".rodata.str1.1"}
    bss = data_maps[".bss"]
    assert (bss.type_name, bss.key_size, bss.value_size, bss.max_entries) == ("array", 4, 8, 1)
    assert bss.value_type_id is not None
    assert multi.btf.size_of(bss.value_type_id) == 8  # DATASEC size filled from the ELF
    assert data_maps[".rodata.str1.1"].value_type_id is None


def test_datasec_offsets_fixed_from_symbols(objs: dict[str, Path]) -> None:
    obj = BpfObject.open(objs["multi"])
    maps = obj.btf.find_by_name(".maps", "DATASEC")
    assert maps is not None
    assert [(obj.btf.type_by_id(v.type_id).name, v.offset) for v in maps.var_secinfos] == \
        [("flows", 0), ("counters", 32)]


# ---- relocations and symbolic listing --------------------------------------------------------

def objdump_relocs(path: Path) -> dict[str, set[tuple[int, str]]]:
    out: dict[str, set[tuple[int, str]]] = {}
    section = ""
    for line in run("llvm-objdump-19", "-r", str(path)).splitlines():
        m = re.match(r"RELOCATION RECORDS FOR \[(\S+)\]:", line)
        if m:
            section = m.group(1)
            out[section] = set()
            continue
        m = re.match(r"([0-9a-f]{16}) R_BPF_\S+\s+(\S+)", line)
        if m:
            out[section].add((int(m.group(1), 16), m.group(2)))
    return out


@pytest.mark.parametrize("name", ["multi", "kinds", "v4"])
def test_relocations_match_objdump(objs: dict[str, Path], name: str) -> None:
    obj = BpfObject.open(objs[name])
    truth = objdump_relocs(objs[name])
    for section, relocs in obj.relocations.items():
        assert {(r.offset, r.symbol) for r in relocs.values()} == truth.get(section, set())
        assert all(r.insn_index == r.offset // 8 for r in relocs.values())


def test_symbolic_listing(multi: BpfObject) -> None:
    xdp = {i.index: multi.format_insn("xdp", i) for i in multi.find_program("xdp").insns}
    assert xdp[9] == "r1 = map[flows]"
    assert xdp[11] == "call bpf_map_lookup_elem#1"
    assert xdp[28] == "r1 = map[.bss][0]+0"
    assert xdp[36] == "call add_bytes"
    assert xdp[42] == "r1 = map[.rodata][0]+0"
    tc = {i.index: multi.format_insn("tc", i) for i in multi.find_program("tc").insns}
    assert tc[5] == "r1 = map[counters]"
    assert tc[12] == "r1 = map[.rodata.str1.1][0]+0"
    assert tc[17] == "call global_scale"
    text = {i.index: multi.format_insn(".text", i) for i in multi.subprograms[1].insns}
    assert text[16] == "call global_scale"
    call = next(i for i in multi.find_program("xdp").insns if i.index == 36)
    assert multi.call_target("xdp", call) == (".text", 6)
    found = multi.ldimm64_map("xdp", next(i for i in multi.programs[0].insns if i.index == 9))
    assert found is not None and found[0].name == "flows" and found[1] == 0


def test_global_data_offsets(objs: dict[str, Path]) -> None:
    obj = BpfObject.open(objs["kinds"])
    prog = obj.find_program("kinds_prog")
    texts = [obj.format_insn(prog.section, i) for i in prog.insns
             if i.is_ldimm64 and i.index in obj.relocations[prog.section]]
    assert texts and all(re.fullmatch(r"r\d = map\[\.data\.shapes\]\[0\]\+\d+", t) for t in texts)


def test_extern_kfunc_call(tmp_path: Path) -> None:
    src = tmp_path / "kf.c"
    src.write_text('extern int bpf_thing(int x) __attribute__((section(".ksyms"), weak));\n'
                   '__attribute__((section("tc"), used)) int p(void *c) '
                   '{ return bpf_thing(3); }\n')
    obj = BpfObject.open(compile_bpf(tmp_path, "kf", src=src))
    call = next(i for i in obj.programs[0].insns if i.is_call)
    assert obj.call_target("tc", call) is None
    assert obj.format_insn("tc", call) == "call bpf_thing"


# ---- errors -----------------------------------------------------------------------------------

def test_open_errors(tmp_path: Path, objs: dict[str, Path]) -> None:
    with pytest.raises(ObjectError, match="no such file"):
        BpfObject.open(tmp_path / "missing.o")
    (tmp_path / "text.o").write_text("hello\n")
    with pytest.raises(ObjectError, match="not an ELF file"):
        BpfObject.open(tmp_path / "text.o")
    (tmp_path / "bad.o").write_bytes(b"\x7fELF" + bytes(10))
    with pytest.raises(ObjectError, match="malformed ELF"):
        BpfObject.open(tmp_path / "bad.o")
    host_c = tmp_path / "host.c"
    host_c.write_text("int f(int x) { return x + 1; }\n")
    host_o = tmp_path / "host.o"
    subprocess.run(["clang-19", "-c", str(host_c), "-o", str(host_o)], check=True)
    with pytest.raises(ObjectError, match=r"ELF machine is EM_X86_64, not BPF \(EM_BPF = 247\)"):
        BpfObject.open(host_o)
    data_c = tmp_path / "data.c"
    data_c.write_text("int counter = 1;\nstatic int helper(int x) { return x; }\n"
                      "int use(int x) { return helper(x) + counter; }\n")
    data_o = compile_bpf(tmp_path, "data", src=data_c)
    with pytest.raises(ObjectError, match="no BPF programs"):
        BpfObject.open(data_o)
    with pytest.raises(ObjectError, match="is a directory|cannot read"):
        BpfObject.open(tmp_path)


def test_ambiguous_section(tmp_path: Path) -> None:
    src = tmp_path / "two.c"
    src.write_text('#define SEC(n) __attribute__((section(n), used))\n'
                   'SEC("xdp") int a(void *ctx) { return 1; }\n'
                   'SEC("xdp") int b(void *ctx) { return 2; }\n')
    obj = BpfObject.open(compile_bpf(tmp_path, "two", src=src))
    assert [(p.name, p.offset) for p in obj.programs] == [("a", 0), ("b", 2)]
    assert obj.find_program("b").insns[0].index == 2
    with pytest.raises(ObjectError, match="several programs; pick one of: a, b"):
        obj.find_program("xdp")


# ---- line tables ------------------------------------------------------------------------------

def dwarfdump_rows(path: Path) -> list[list[tuple[int, int, int, bool]]]:
    """Sequences of (insn index, line, col, is_stmt) rows from llvm-dwarfdump-19."""
    seqs: list[list[tuple[int, int, int, bool]]] = [[]]
    for line in run("llvm-dwarfdump-19", "--debug-line", str(path)).splitlines():
        m = re.match(r"0x([0-9a-f]{16})\s+(\d+)\s+(\d+)\s+\d+\s+\d+\s+\d+\s+\d+\s*(.*)", line)
        if not m:
            continue
        if "end_sequence" in m.group(4):
            seqs.append([])
            continue
        seqs[-1].append((int(m.group(1), 16) // 8, int(m.group(2)), int(m.group(3)),
                         "is_stmt" in m.group(4)))
    return seqs[:-1]


def sequence_sections(path: Path) -> list[str]:
    """Section of each line sequence: symbols of .rel.debug_line ABS64 relocs, in order."""
    out = run("llvm-objdump-19", "-r", "-j", ".rel.debug_line", str(path))
    names = re.findall(r"R_BPF_64_ABS64\s+(\S+)", out)
    symbols = {}
    for line in run("llvm-objdump-19", "-t", str(path)).splitlines():
        m = re.match(r"[0-9a-f]{16} [lg ] +[dFO]? +(\S+)\s+[0-9a-f]{16} (\S+)", line)
        if m:
            symbols[m.group(2)] = m.group(1)
    return [symbols.get(n, n) for n in names]


@pytest.mark.parametrize("name", ["multi", "kinds", "v4", "multi_dwarf4"])
def test_dwarf_lines_match_dwarfdump(objs: dict[str, Path], name: str) -> None:
    obj = BpfObject.open(objs[name])
    expected: dict[str, list[tuple[int, int, int, bool]]] = {}
    for section, rows in zip(sequence_sections(objs[name]), dwarfdump_rows(objs[name]),
                             strict=True):
        expected.setdefault(section, []).extend(rows)
    got = {s: [(r.insn_index, r.line, r.col, r.is_stmt) for r in rows]
           for s, rows in obj.dwarf_lines.items()}
    assert got == expected
    source = name.split("_")[0] + ".c"
    assert all(r.file.endswith(source) for rows in obj.dwarf_lines.values() for r in rows)


def test_text_has_two_sequences(objs: dict[str, Path], multi: BpfObject) -> None:
    text = multi.dwarf_lines[".text"]
    starts = {p.offset for p in multi.subprograms}
    assert starts <= {r.insn_index for r in text}
    assert sequence_sections(objs["multi"]).count(".text") == 2


def test_btf_lines_are_dwarf_rows(multi: BpfObject) -> None:
    """BTF.ext rows are DWARF rows minus line 0, except the function entry row:
    clang-19 puts the declaration line there in BTF and the '{' line in DWARF."""
    for section in ("xdp", "tc", ".text"):
        dwarf = {(r.insn_index, r.line, r.col) for r in multi.dwarf_lines[section] if r.line}
        btf = [(r.insn_off, r.line, r.col) for r in multi.line_table(section)]
        func_starts = {p.offset for p in multi.functions if p.section == section}
        missing = [row for row in btf if row not in dwarf]
        assert all(off in func_starts for off, _, _ in missing), (section, missing)
    assert multi.line_table("nope") == []


def test_no_dwarf(tmp_path: Path) -> None:
    src = tmp_path / "nodbg.c"
    src.write_text('__attribute__((section("xdp"), used)) int p(void *c) { return 2; }\n')
    out = tmp_path / "nodbg.o"
    subprocess.run(["clang-19", "-O2", "-target", "bpf", "-c", str(src), "-o", str(out)],
                   check=True)
    obj = BpfObject.open(out)
    assert obj.dwarf_lines == {} and obj.btf_ext is None and not obj.has_btf
    assert obj.maps == [] and obj.line_table("xdp") == []
    assert obj.format_insn("xdp", obj.programs[0].insns[0]) == "r0 = 2"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1,
                max_size=8))
def test_fuzz_corrupted_object(objs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
                               flips: list[tuple[int, int]]) -> None:
    """A corrupted object opens or raises ObjectError, never anything else."""
    data = bytearray(objs["multi"].read_bytes())
    for pos, value in flips:
        data[pos % len(data)] = value
    path = tmp_path_factory.getbasetemp() / "corrupt.o"
    path.write_bytes(bytes(data))
    try:
        obj = BpfObject.open(path)
        assert isinstance(obj.dwarf_lines, dict)
        for func in obj.functions:
            for insn in func.insns:
                obj.format_insn(func.section, insn)
    except ObjectError:
        pass
