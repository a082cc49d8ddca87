"""Every BPF instruction ↔ JIT address ↔ source line, checked against independent truth.

Truths used: the object file itself (instruction bytes, BTF.ext and DWARF line
tables), the kernel's kallsyms, and the x86 code (branch and call targets the
JIT encoded, decoded by capstone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import capstone
import pytest
from conftest import matrix_kernels, release_version

from qstep.bpf import insn as bi
from qstep.bpf.elf import BpfObject
from qstep.bpf.insn import Insn
from qstep.debugger.jitframe import layout_of
from qstep.listing import build_listing, disassemble_x86, format_listing, patched_text
from qstep.loaded import InsnSite, LoadedProgram
from qstep.session import Session

pytestmark = pytest.mark.vm

PROGRAMS = [
    ("examples/l4lb/l4lb.bpf.c", "l4lb_ingress"),
    ("tests/progs/calls.bpf.c", "calls_main"),
    ("tests/progs/maps.bpf.c", "maps_main"),
    ("tests/progs/alu.bpf.c", "alu_main"),
    ("tests/progs/socket.bpf.c", "socket_len"),
    ("tests/progs/deadcode.bpf.c", "dead_main"),
]
# Every program on 6.1; on the newer kernels (another JIT prologue with endbr64; from
# 6.13 private stacks for tracing programs) the example, the bpf-to-bpf calls, the
# ISA v4 program that 6.1 cannot load, and a tracing program with a large stack.
NEWER = [PROGRAMS[0], PROGRAMS[1], ("tests/progs/alu_v4.bpf.c", "alu_v4_main"),
         ("tests/progs/privstack.bpf.c", "privstack_main")]
KERNEL_PROGRAMS = [(k, *p) for k in matrix_kernels("6.1") for p in PROGRAMS] + [
    (k, *p) for k in matrix_kernels() if k != "6.1" for p in NEWER]


@dataclass
class Loaded:
    obj: BpfObject
    prog: LoadedProgram
    session: Session
    kernel: str


@pytest.fixture(scope="module", params=KERNEL_PROGRAMS,
                ids=[f"{p[0]}-{p[2]}" for p in KERNEL_PROGRAMS])
def loaded(request: pytest.FixtureRequest, bpf_obj: Callable[[str], Path]) -> Iterator[Loaded]:
    kernel, source, name = request.param
    session: Session = request.getfixturevalue("guests")(kernel)
    obj = BpfObject.open(bpf_obj(source))
    prog = session.load(obj, name)
    yield Loaded(obj, prog, session, kernel)
    session.unload(prog)


def elf_offset(loaded: Loaded, site: InsnSite) -> tuple[str, int]:
    """(section, slot) of this instruction in the object file."""
    func = next(f for f in loaded.obj.functions if f.name == site.function.name)
    return func.section, func.offset + site.index - site.function.start_insn


def live_sites(prog: LoadedProgram) -> list[InsnSite]:
    return [s for s in prog.sites.values() if not s.removed]


def x86(prog: LoadedProgram, site: InsnSite) -> list[capstone.CsInsn]:
    assert site.jit_start is not None and site.jit_end is not None
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return list(md.disasm(prog.jit_bytes(site.jit_start, site.jit_end), site.jit_start))


def test_instructions_are_the_objects_own(loaded: Loaded) -> None:
    for site in loaded.prog.sites.values():
        section, slot = elf_offset(loaded, site)
        elf_insn = next(i for i in loaded.obj.section_insns[section] if i.index == slot)
        ours = site.insn
        assert (ours.code, ours.dst, ours.off) == (elf_insn.code, elf_insn.dst, elf_insn.off)
        if not ours.is_ldimm64:  # libbpf rewrites map references (src, imm)
            assert ours.src == elf_insn.src, site.index
        if not (ours.is_ldimm64 or ours.is_pseudo_call):
            assert ours.imm == elf_insn.imm, site.index


def test_function_entries_are_the_kernel_symbols(loaded: Loaded) -> None:
    vm = loaded.session
    prog = loaded.prog
    names = {f.name for f in loaded.obj.functions}
    for func in prog.functions:
        assert func.name in names
        assert prog.sites[func.start_insn].jit_start == func.addr
    main = prog.functions[0]
    assert vm.kallsyms(f"bpf_prog_{prog.tag}_{prog.name}") == main.addr
    assert sum(f.length for f in prog.functions) == len(prog.jited_image)


def test_each_range_is_whole_x86_instructions_inside_its_function(loaded: Loaded) -> None:
    prog = loaded.prog
    for site in live_sites(prog):
        assert site.jit_start is not None and site.jit_end is not None
        assert site.function.addr <= site.jit_start <= site.jit_end
        assert site.jit_end <= site.function.addr + site.function.length
        decoded = x86(prog, site)
        assert sum(i.size for i in decoded) == site.jit_end - site.jit_start, site.index


def _jump_target(ins: capstone.CsInsn) -> int | None:
    if ins.group(capstone.CS_GRP_JUMP) or ins.group(capstone.CS_GRP_CALL):
        op = ins.operands[0] if ins.operands else None
        if op is not None and op.type == capstone.x86.X86_OP_IMM:
            return int(op.imm) & 0xFFFFFFFFFFFFFFFF
    return None


def test_x86_branches_land_on_the_bpf_target_instruction(loaded: Loaded) -> None:
    prog = loaded.prog
    checked = 0
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    for site in live_sites(prog):
        target = site.insn.jump_target
        if target is None or site.jit_start == site.jit_end or patched_text(prog, site):
            continue
        code = prog.jit_bytes(site.jit_start or 0, site.jit_end or 0)
        last = list(md.disasm(code, site.jit_start or 0))[-1]
        assert _jump_target(last) == prog.sites[target].jit_start, site.index
        checked += 1
    jumps = [s for s in prog.sites.values() if s.insn.jump_target is not None]
    assert checked > 0 or not jumps


def test_bpf_to_bpf_calls_call_the_callee(loaded: Loaded) -> None:
    prog = loaded.prog
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    for site in live_sites(prog):
        if not site.insn.is_pseudo_call:
            continue
        callee = next(f for f in prog.functions if f.start_insn == site.insn.call_target)
        code = prog.jit_bytes(site.jit_start or 0, site.jit_end or 0)
        calls = [i for i in md.disasm(code, site.jit_start or 0) if i.mnemonic == "call"]
        assert [_jump_target(c) for c in calls] == [callee.addr], site.index


def test_helper_calls_and_exits_have_their_x86_counterpart(loaded: Loaded) -> None:
    prog = loaded.prog
    for site in live_sites(prog):
        mnemonics = [i.mnemonic for i in x86(prog, site)]
        if site.insn.is_helper_call and not patched_text(prog, site):
            assert "call" in mnemonics, site.index
        if site.insn.is_exit:
            body = [m for m in mnemonics if m != "int3"]  # int3 after ret: SLS hardening
            assert body and body[-1] in ("ret", "jmp"), site.index


def test_source_lines_agree_with_btf_ext_and_dwarf(loaded: Loaded) -> None:
    obj, prog = loaded.obj, loaded.prog
    dwarf = obj.dwarf_lines
    for site in prog.sites.values():
        section, slot = elf_offset(loaded, site)
        records = [r for r in obj.line_table(section) if r.insn_off <= slot]
        func = next(f for f in obj.functions if f.name == site.function.name)
        records = [r for r in records if r.insn_off >= func.offset]
        assert site.source is not None and records, site.index
        assert (site.source.file, site.source.line) == (records[-1].file_name, records[-1].line)
        # At a function's entry BTF.ext names the declaration line, DWARF the body's.
        if records[-1].insn_off == slot and slot != func.offset:
            rows = {r.line for r in dwarf[section] if r.insn_index == slot}
            assert site.source.line in rows, (site.index, rows)


def _stack_base(insn: Insn) -> int | None:
    """The base register of a load/store (MEM mode), else None."""
    if insn.mode != bi.MODE_MEM:
        return None
    return insn.src if insn.cls == bi.LDX else insn.dst if insn.cls in (bi.ST, bi.STX) else None


def test_stack_accesses_use_the_frame_register_the_prologue_sets(loaded: Loaded) -> None:
    """Every r10-based load/store addresses memory through the register the layout names.

    Known by construction: tracing programs with 64+ bytes of stack run on a private
    stack from 6.13 (privstack_main: 96 bytes; its subprogram fold: 32 bytes).
    """
    prog = loaded.prog
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    checked = 0
    for site in live_sites(prog):
        if _stack_base(site.insn) != 10 or patched_text(prog, site):
            continue
        fp = layout_of(prog, site.function).fp_reg
        code = prog.jit_bytes(site.jit_start or 0, site.jit_end or 0)
        bases = [md.reg_name(op.mem.base) for ins in md.disasm(code, site.jit_start or 0)
                 for op in ins.operands if op.type == capstone.x86.X86_OP_MEM]
        assert bases and set(bases) == {fp}, (site.index, bases)
        checked += 1
    private = {f.name for f in prog.functions if layout_of(prog, f).private_stack is not None}
    newer = release_version(loaded.session.release) >= (6, 13)
    assert private == ({"privstack_main"} if prog.name == "privstack_main" and newer else set())
    if prog.name in ("l4lb_ingress", "privstack_main"):  # both keep structs on the stack
        assert checked >= 10


def test_listing_shows_every_instruction_once(loaded: Loaded) -> None:
    prog = loaded.prog
    listing = build_listing(prog)
    shown = [i.index for fl in listing for b in fl.blocks for i in b.insns]
    assert sorted(shown) == sorted(prog.sites)
    text = format_listing(listing)
    for site in prog.sites.values():
        if site.removed:
            assert f"{site.index:4}: " in text
    removed_lines = [ln for ln in text.splitlines() if "removed by the verifier" in ln]
    assert len(removed_lines) == sum(1 for s in prog.sites.values() if s.removed)


def test_disassembly_helper_matches_capstone() -> None:
    lines = disassemble_x86(bytes.fromhex("4889e5c3"), 0x1000)
    assert [(x.addr, x.text) for x in lines] == [(0x1000, "mov rbp, rsp"), (0x1003, "ret")]


def test_dead_code_under_a_frozen_rodata_flag_is_removed(vm: Session,
                                                         bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("tests/progs/deadcode.bpf.c"))
    prog = vm.load(obj, "dead_main")
    try:
        removed = [s for s in prog.sites.values() if s.removed]
        assert {s.source.line for s in removed if s.source} == {27, 28, 29}
        assert any(s.insn.is_helper_call and s.insn.imm == 6 for s in removed)  # trace_printk
        kept_call = [s for s in prog.sites.values() if s.insn.is_helper_call and not s.removed]
        assert len(kept_call) == 1 and patched_text(prog, kept_call[0])  # inlined array lookup
        assert vm.test_run(prog, bytes(64)).retval == 2
    finally:
        vm.unload(prog)
