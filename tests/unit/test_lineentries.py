"""Which instructions start a source line (``file.c:line`` locations), on hand-made programs."""

from __future__ import annotations

import pytest

from qstep.bpf.asm import alu64, assemble, exit_, jmp, ldimm64
from qstep.bpf.btf import Btf
from qstep.bpf.insn import Insn
from qstep.debugger.lineentries import line_locations
from qstep.debugger.locations import resolve
from qstep.errors import UsageError
from qstep.loaded import InsnSite, JitFunction, LoadedProgram, SourceLoc

ADD, MOV, JA, JEQ = 0x00, 0xB0, 0x00, 0x10


def program(code: list[tuple[Insn, int]], removed: frozenset[int] = frozenset(),
            split: int | None = None) -> LoadedProgram:
    """``code``: (instruction, source line); ``split``: index where a second function starts."""
    insns = assemble([i for i, _ in code])
    end = insns[-1].index + insns[-1].size
    bounds = [(0, split or end, "main")] + ([(split, end, "sub")] if split else [])
    funcs = [JitFunction(n, name, lo, hi, 0x1000 * (n + 1), 0x800, 0)
             for n, (lo, hi, name) in enumerate(bounds)]
    sites = {}
    for ins, (_, line) in zip(insns, code, strict=True):
        func = next(f for f in funcs if f.start_insn <= ins.index < f.end_insn)
        start = None if ins.index in removed else func.addr + 16 * ins.index
        sites[ins.index] = InsnSite(ins, func, SourceLoc("/src/p.bpf.c", line, 1, ""),
                                    ins.index, start, None if start is None else start + 16)
    return LoadedProgram(1, 1, 6, "main", "t", Btf([], b"\0"), insns, [], b"", funcs, sites, {})


def locations(prog: LoadedProgram, line: int) -> list[int]:
    return [s.index for s in resolve(prog, f"p.bpf.c:{line}").sites]


def test_each_copy_of_an_unrolled_line_is_a_location() -> None:
    # line 20 (load) and line 10 (the hot line, two insns) alternate, as in dupline.bpf.c
    code = [(alu64(MOV, 2, imm=1), 20), (alu64(ADD, 2, imm=3), 10), (alu64(ADD, 2, imm=4), 10),
            (alu64(MOV, 3, imm=2), 20), (alu64(ADD, 2, 3), 10), (alu64(ADD, 2, imm=5), 10),
            (exit_(), 30)]
    assert locations(program(code), 10) == [1, 4]
    assert locations(program(code), 20) == [0, 3]


def test_jump_into_the_middle_of_a_line_is_a_location_and_one_from_it_is_not() -> None:
    code = [(jmp(JEQ, 1, imm=0, off=2), 10),      # 0: line 10 jumps to 3 (line 10 again)
            (alu64(MOV, 0, imm=1), 11),           # 1
            (jmp(JA, off=2), 11),                 # 2: line 11 jumps into the middle of 12
            (alu64(MOV, 0, imm=2), 10),           # 3: entered only from line 10 (no fall
            (alu64(MOV, 0, imm=3), 12),           # 4:  through from 2, a jump)
            (alu64(MOV, 0, imm=4), 12),           # 5: target of 2 (line 11)
            (exit_(), 13)]
    prog = program(code)
    assert locations(prog, 10) == [0]
    assert locations(prog, 12) == [4, 5]


def test_function_entries_removed_code_and_ldimm64() -> None:
    code = [(ldimm64(1, 1 << 40), 10),     # 0-1
            (jmp(JA, off=1), 11),          # 2: over the dead instruction
            (alu64(MOV, 0, imm=0), 12),    # 3: removed by the verifier
            (alu64(MOV, 0, imm=1), 10),    # 4: entered by the jump (3 never falls through)
            (exit_(), 10),                 # 5
            (alu64(MOV, 0, imm=2), 11),    # 6: 'sub' starts here
            (exit_(), 10)]                 # 7
    prog = program(code, removed=frozenset({3}), split=6)
    assert locations(prog, 10) == [0, 4, 7]
    assert locations(prog, 11) == [2, 6]
    assert [s.function.name for s in resolve(prog, "p.bpf.c:11").sites] == ["main", "sub"]
    with pytest.raises(UsageError, match="removed by the verifier"):
        resolve(prog, "p.bpf.c:12")


def test_line_locations_ignores_other_lines() -> None:
    code = [(alu64(MOV, 0, imm=0), 10), (exit_(), 11)]
    prog = program(code)
    assert line_locations(prog, [prog.sites[1]]) == (prog.sites[1],)
