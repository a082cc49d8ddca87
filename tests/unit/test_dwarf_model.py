"""qstep.dwarf on clang-19 objects, checked against llvm-dwarfdump-19 (independent truth)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import clang_bpf
from dwarf_fixture import fixed_convention
from dwarfdump import DumpDie, dwarfdump, normalize

from qstep.bpf import insn as bi
from qstep.bpf.elf import BpfObject
from qstep.debugger.unwind import saved_registers
from qstep.dwarf.frame import stack_size_from_insns, stack_size_from_prologue
from qstep.dwarf.location import Location, Op, frame_offset
from qstep.dwarf.model import DwarfModel, Frame
from qstep.dwarf.placement import Placement, variables_text
from qstep.dwarf.types import ptype_text
from qstep.dwarf.values import read_value
from qstep.loaded import InsnSite, JitFunction
from qstep.paths import REPO_ROOT

# (source, extra clang flags): clang-19's default DWARF 5, DWARF 4 (.debug_loc, DW_FORM_addr)
# and -O1 (other register allocation and inlining).
PROGS = [("tests/progs/vars.bpf.c", ()), ("tests/progs/calls.bpf.c", ()),
         ("tests/progs/shapes.bpf.c", ()), ("examples/l4lb/l4lb.bpf.c", ()),
         ("tests/progs/vars.bpf.c", ("-gdwarf-4",)), ("tests/progs/shapes.bpf.c", ("-O1",))]
VAR_TAGS = ("DW_TAG_variable", "DW_TAG_formal_parameter")


def ops_tuples(loc: Location | None) -> list[tuple[object, ...]] | None:
    """qstep's ops in the shape of ``dwarfdump.normalize``."""
    if loc is None:
        return None
    out: list[tuple[object, ...]] = []
    for piece in loc.pieces:
        out.extend(_op_tuple(op) for op in piece.ops)
        if piece.size is not None:
            out.append(("piece", piece.size))
    return out


def _op_tuple(op: Op) -> tuple[object, ...]:
    return (op.name, *op.args)


@pytest.fixture(scope="module", params=PROGS, ids=lambda p: " ".join((p[0], *p[1])))
def prog(request: pytest.FixtureRequest, bpf_obj: Callable[[str], Path],
         tmp_path_factory: pytest.TempPathFactory) -> tuple[BpfObject, DwarfModel, DumpDie]:
    source, flags = request.param
    if flags:
        out = tmp_path_factory.mktemp("dwarf") / Path(source).name.replace(".c", ".o")
        path = clang_bpf(REPO_ROOT / source, out, *flags)
    else:
        path = bpf_obj(source)
    obj = BpfObject.open(path)
    return obj, DwarfModel.from_bytes(obj.data), dwarfdump(path)


def _concrete(root: DumpDie) -> list[DumpDie]:
    return [d for d in root.children if d.tag == "DW_TAG_subprogram"
            and "DW_AT_low_pc" in d.attrs]


def _scopes(die: DumpDie, depth: int = 0) -> list[tuple[DumpDie, int]]:
    """(scope DIE, inline depth) for the subprogram and every nested scope."""
    out = [(die, depth)]
    for c in die.children:
        if c.tag == "DW_TAG_inlined_subroutine":
            out.extend(_scopes(c, depth + 1))
        elif c.tag == "DW_TAG_lexical_block":
            out.extend(_scopes(c, depth))
    return out


def _insns(die: DumpDie, func_lo: int, func_hi: int) -> list[int]:
    if die.ranges:
        return [i for lo, hi in die.ranges for i in range(lo // 8, hi // 8)]
    if "DW_AT_low_pc" in die.attrs and "DW_AT_high_pc" in die.attrs:
        return list(range(int(die.attrs["DW_AT_low_pc"], 16) // 8,
                          int(die.attrs["DW_AT_high_pc"], 16) // 8))
    return list(range(func_lo, func_hi))


def _frame(frames: list[Frame], depth: int) -> Frame:
    return frames[::-1][depth]


def test_every_location_at_every_instruction_matches_dwarfdump(
        prog: tuple[BpfObject, DwarfModel, DumpDie]) -> None:
    _obj, model, root = prog
    checked = unavailable = 0
    for sub in _concrete(root):
        func = next(f for f in model.functions if f.name == sub.name())
        for scope, depth in _scopes(sub):
            insns = _insns(scope, func.lo, func.hi)
            for var in [c for c in scope.children if c.tag in VAR_TAGS]:
                for insn in insns:
                    expected = _expected(var, insn)
                    frame = _frame(model.frames_at(func.section, insn), depth)
                    got = frame.find(var.name())
                    assert got is not None, (func.name, insn, var.name())
                    assert ops_tuples(got.location_at(insn)) == expected, (
                        func.name, insn, var.name())
                    checked += 1
                    unavailable += expected is None
    assert checked > 100 and 0 < unavailable < checked
    print(f"{checked} (instruction, variable) pairs, {unavailable} optimized out")


def _expected(var: DumpDie, insn: int) -> list[tuple[object, ...]] | None:
    if "DW_AT_const_value" in var.attrs:
        return [("const", int(var.attrs["DW_AT_const_value"], 0)), ("stack_value",)]
    if var.entries:
        for lo, hi, expr in var.entries:
            if lo // 8 <= insn < hi // 8:
                return normalize(expr)
        return None
    loc = var.attrs.get("DW_AT_location")
    return normalize(loc) if loc else None


def test_inlined_frames_match_dwarfdump(prog: tuple[BpfObject, DwarfModel, DumpDie]) -> None:
    _obj, model, root = prog
    for sub in _concrete(root):
        func = next(f for f in model.functions if f.name == sub.name())
        for insn in range(func.lo, func.hi):
            chain = [(sub.name(), False, 0)]
            scope = sub
            while True:
                inner = next((c for c in scope.children
                              if c.tag in ("DW_TAG_inlined_subroutine", "DW_TAG_lexical_block")
                              and insn in _insns(c, -1, -1)), None)
                if inner is None:
                    break
                if inner.tag == "DW_TAG_inlined_subroutine":
                    chain.append((inner.name(), True, int(inner.attrs["DW_AT_call_line"])))
                scope = inner
            got = [(f.function, f.inlined, f.call_line)
                   for f in model.frames_at(func.section, insn)][::-1]
            assert got == chain, (func.name, insn)


def test_vars_has_nested_inlined_frames(bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("tests/progs/vars.bpf.c"))
    model = DwarfModel.from_bytes(obj.data)
    depths = {len(model.frames_at("xdp", i)) for i in range(len(obj.section_insns["xdp"]))}
    assert depths == {1, 2, 3}
    [checksum] = [f for f in model.functions if f.name == "checksum"]
    assert checksum.section == ".text"
    frame = model.frames_at(".text", checksum.lo + 2)[0]
    assert [v.name for v in frame.params] == ["bytes", "n"]
    n = frame.find("n")
    assert n is not None and n.location_at(0) is not None
    assert n.location_at(0).describe() == "=16"  # type: ignore[union-attr]


def _member_rows(die: DumpDie) -> list[tuple[str, int, int]]:
    rows = []
    for m in die.children:
        if m.tag != "DW_TAG_member":
            continue
        if "DW_AT_data_bit_offset" in m.attrs:
            rows.append((m.name(), int(m.attrs["DW_AT_data_bit_offset"], 0),
                         int(m.attrs["DW_AT_bit_size"], 0)))
        else:
            rows.append((m.name(), int(m.attrs["DW_AT_data_member_location"], 0) * 8, 0))
    return rows


def test_struct_members_match_dwarfdump(prog: tuple[BpfObject, DwarfModel, DumpDie]) -> None:
    _obj, model, root = prog
    structs = [d for d in root.walk() if d.tag == "DW_TAG_structure_type" and d.name()]
    assert structs
    for s in structs:
        t = model.find_type(f"struct {s.name()}")
        assert t is not None
        got = [(m.name, m.offset * 8 + m.bit_offset, m.bit_size) for m in t.members]
        assert got == _member_rows(s), s.name()
        assert t.byte_size == int(s.attrs["DW_AT_byte_size"], 0)


def test_ptype_and_type_names(bpf_obj: Callable[[str], Path]) -> None:
    model = DwarfModel.from_bytes(BpfObject.open(bpf_obj("tests/progs/vars.bpf.c")).data)
    meta = model.find_type("struct pkt_meta")
    assert meta is not None
    assert ptype_text(meta) == (
        "struct pkt_meta {\n    __u32 len;\n    __u8 version : 4;\n    __u8 ihl : 4;\n"
        "    __u8 ttl;\n    __u16 csum_ok : 1;\n    __u16 frag : 3;\n"
        "    __u16 reserved : 12;\n}")
    frames = model.frames_at(".text", next(f.lo for f in model.functions
                                            if f.name == "classify"))
    m = frames[0].find("m")
    assert m is not None and m.type.c_name() == "const struct pkt_meta *"
    assert model.globals["weights"].type.c_name() == "__u32[4]"
    assert model.globals["scale"].type.c_name() == "const volatile __u32"
    assert (model.globals["total_seen"].section, model.globals["weights"].section,
            model.globals["scale"].section) == (".bss", ".data", ".rodata")
    assert model.find_type("__be32") is not None
    assert ptype_text(model.find_type("__be32")) == "unsigned int"  # type: ignore[arg-type]


def _touched(insns: list[bi.Insn], stack_size: int) -> set[int]:
    """r10 offsets of every byte the code loads or stores directly, and of every
    address ``r10 + k`` it computes (a stack object passed to a helper or a callee)."""
    out: set[int] = set()
    derived: dict[int, int] = {}
    for ins in insns:
        base = ins.src if ins.cls == bi.LDX else ins.dst
        if ins.cls in (bi.LDX, bi.STX, bi.ST) and base == 10:
            size = bi.SIZE_BYTES[ins.code & 0x18]
            out.update(range(ins.off, ins.off + size))
        elif ins.code == 0xBF and ins.src == 10:  # rX = r10
            derived[ins.dst] = 0
        elif ins.code == 0x07 and ins.dst in derived:  # rX += imm
            derived[ins.dst] += ins.imm
            out.add(derived[ins.dst])
        elif ins.cls in (bi.ALU, bi.ALU64, bi.LD, bi.LDX):
            derived.pop(ins.dst, None)
    return out


def test_stack_size_puts_every_stack_variable_on_bytes_the_code_touches(
        prog: tuple[BpfObject, DwarfModel, DumpDie]) -> None:
    obj, model, _root = prog
    checked = 0
    for func in model.functions:
        insns = [i for i in obj.section_insns[func.section] if func.lo <= i.index < func.hi]
        size = stack_size_from_insns(insns)
        touched = _touched(insns, size)
        for insn in range(func.lo, func.hi):
            for frame in model.frames_at(func.section, insn):
                for var in frame.variables:
                    loc = var.location_at(insn)
                    for off, nbytes in _stack_slots(loc, var.type.byte_size, size):
                        assert touched & set(range(off, off + nbytes)), (func.name, var.name)
                        checked += 1
    if prog[0].path.name != "calls.bpf.o":
        assert checked > 0


def _stack_slots(loc: Location | None, whole: int, size: int) -> list[tuple[int, int]]:
    if loc is None:
        return []
    out = []
    for piece in loc.pieces:
        ops = piece.ops
        if not ops or ops[-1].name == "stack_value":
            continue
        first = ops[0]
        if first.name == "fbreg" or (first.name == "breg" and first.args[0] == 10):
            off = frame_offset(first.args[-1], size)
            assert off is not None
            extra = sum(o.args[0] for o in ops[1:] if o.name == "plus_uconst")
            out.append((off + extra, piece.size or whole))
    return out


def test_stack_size_values() -> None:
    def st(code: int, dst: int, src: int, off: int, imm: int = 0, index: int = 0) -> bi.Insn:
        return bi.Insn(index, code, dst, src, off, imm)
    # *(u32 *)(r10 - 4) = r1: 4 bytes, rounded up to LLVM's 8-byte frame alignment.
    assert stack_size_from_insns([st(0x63, 10, 1, -4)]) == 8
    # r2 = r10; r2 += -16: the object is only reached through a pointer.
    assert stack_size_from_insns([st(0xBF, 2, 10, 0), st(0x07, 2, 0, 0, -16)]) == 16
    assert stack_size_from_insns([st(0xB7, 0, 0, 0, 1)]) == 0
    # x86-64 JIT prologue of 6.1: nop5, xchg ax,ax, push rbp, mov rbp,rsp, sub rsp,0x38
    code = bytes.fromhex("0f1f440000" "6690" "55" "4889e5" "4881ec38000000")
    assert stack_size_from_prologue(code) == 0x38


class _Regs:
    """Registers and memory for comparing evaluated locations (memory is not read)."""

    def __init__(self, stack_size: int) -> None:
        self.stack_size = stack_size

    def reg(self, n: int) -> int:
        return 0x10000 * (n + 1)

    def mem(self, addr: int, size: int) -> bytes:
        return addr.to_bytes(8, "little")[:size].ljust(size, b"\0")

    def entry_reg(self, n: int) -> int | None:
        return None


def test_fixed_offset_convention_fixture_gives_the_same_values(
        bpf_obj: Callable[[str], Path], tmp_path: Path) -> None:
    obj = BpfObject.open(bpf_obj("tests/progs/vars.bpf.c"))
    data, patched = fixed_convention(obj)
    assert patched >= 10
    fixture = tmp_path / "vars_fixed.o"
    fixture.write_bytes(data)
    dump = subprocess.run(["llvm-dwarfdump-19", "--debug-info", str(fixture)], check=True,
                          capture_output=True, text=True).stdout
    assert "DW_OP_fbreg -28" in dump and "DW_OP_breg10 W10-16" in dump
    assert "DW_OP_fbreg +" not in dump and "DW_OP_breg10 W10+" not in dump
    old, new = DwarfModel.from_bytes(obj.data), DwarfModel.from_bytes(data)
    compared = 0
    for func in old.functions:
        insns = [i for i in obj.section_insns[func.section] if func.lo <= i.index < func.hi]
        size = stack_size_from_insns(insns)
        for insn in range(func.lo, func.hi):
            for f_old, f_new in zip(old.frames_at(func.section, insn),
                                    new.frames_at(func.section, insn), strict=True):
                for v_old, v_new in zip(f_old.variables, f_new.variables, strict=True):
                    a = read_value(v_old.location_at(insn), v_old.type, _Regs(size))
                    # The fixed convention needs no stack size: a wrong one changes nothing.
                    b = read_value(v_new.location_at(insn), v_new.type, _Regs(size + 4096))
                    assert (a.data, a.valid, a.address) == (b.data, b.valid, b.address)
                    compared += a.address is not None
    assert compared > 50


def test_variables_text_for_disasm_vars(bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("tests/progs/vars.bpf.c"))
    model = DwarfModel.from_bytes(obj.data)
    main = obj.find_program("vars_main")
    func = JitFunction(0, "vars_main", 0, main.insn_count, 0, 0, 0)

    def text(index: int) -> str:
        insn = next(i for i in main.insns if i.index == index)
        return variables_text(model, Placement(obj), InsnSite(insn, func, None, None, None, None))
    # Insn 56 runs fold_addr's 'y >> 3' (inlined in hash_key): x is in r8 (llvm-dwarfdump:
    # [0x1b8, 0x210) DW_OP_reg8), k is the address r10-16 (fbreg +40 - StackSize 56).
    assert text(56) == ("x@r8 k=r10-16 zero@[r10-28] key@{[r10-16]:12, [r10-4]:1, [r10-3]:3} "
                        "meta@{[r10-24]:4, [r10-20]:1, [r10-19]:1, [r10-18]:2} cnt@r2")
    assert text(0).split()[0] == "ctx@r1"


def test_callee_saved_slots_from_a_jit_prologue() -> None:
    # 6.1 x86-64 JIT: nop5; xchg ax,ax; push rbp; mov rbp,rsp; sub rsp,0x38; push rbx;
    # push r13; then the body (mov rdi, rax).
    code = bytes.fromhex("0f1f440000" "6690" "55" "4889e5" "4881ec38000000" "53" "4155"
                         "4889c7")
    func = JitFunction(0, "f", 0, 4, 0x1000, len(code), 0)
    prog = SimpleNamespace(jit_bytes=lambda start, end: code[start - 0x1000:end - 0x1000])
    # r6 = rbx at rbp-0x38-8, r7 = r13 below it; r8/r9 (r14/r15) are not saved.
    assert saved_registers(prog, func) == {6: -0x40, 7: -0x48}  # type: ignore[arg-type]
