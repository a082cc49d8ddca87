"""Where a function's entry r1-r5 still are (``qstep.debugger.entryvalues``), on hand-made
code: copies, spills and fills, what calls and stores forget, joins of paths."""

from __future__ import annotations

from qstep.bpf.asm import alu64, assemble, call, exit_, jmp, ldx, st, stx
from qstep.bpf.btf import Btf
from qstep.bpf.insn import Insn
from qstep.dwarf.copies import places_like
from qstep.loaded import JitFunction, LoadedProgram

MOV, ADD, JEQ, JA = 0xB0, 0x00, 0x10, 0x00
DW, W = 8, 4


def places(code: list[Insn], index: int, n: int = 1) -> set[tuple[str, int]]:
    """Places holding entry rN before instruction ``index`` (the entry marker left out)."""
    insns = assemble(code)
    func = JitFunction(0, "f", 0, len(insns), 0x1000, 0x100, 0)
    prog = LoadedProgram(1, 1, 6, "f", "t", Btf([], b"\0"), insns, [], b"", [func], {}, {})
    return places_like(prog, func, index, ("entry", n)) - {("entry", n)}


def test_copies_and_spills_keep_it_until_overwritten() -> None:
    code = [alu64(MOV, 6, 1),            # 0: r6 = r1
            stx(DW, 10, 6, -16),          # 1: *(u64 *)(r10 - 16) = r6
            alu64(MOV, 1, imm=0),         # 2: r1 = 0
            ldx(DW, 7, 10, -16),          # 3: r7 = *(u64 *)(r10 - 16)
            alu64(ADD, 6, imm=1),         # 4: r6 += 1
            exit_()]                      # 5
    assert places(code, 0) == {("r", 1)}
    assert places(code, 2) == {("r", 1), ("r", 6), ("fp", -16)}
    assert places(code, 4) == {("r", 6), ("r", 7), ("fp", -16)}
    assert places(code, 5) == {("r", 7), ("fp", -16)}


def test_a_call_forgets_r1_to_r5_and_the_stack_a_store_elsewhere_the_stack() -> None:
    code = [alu64(MOV, 6, 2), alu64(MOV, 3, 2), stx(DW, 10, 2, -8),   # 0-2
            call(1),                                                  # 3
            stx(DW, 10, 6, -8),                                       # 4: spilled again
            stx(W, 7, 6, 0),                                          # 5: a store via r7
            st(W, 10, -4, 0),                                         # 6
            exit_()]
    assert places(code, 3, 2) == {("r", 2), ("r", 3), ("r", 6), ("fp", -8)}
    assert places(code, 4, 2) == {("r", 6)}
    assert places(code, 5, 2) == {("r", 6), ("fp", -8)}
    assert places(code, 6, 2) == {("r", 6)}
    assert places(code, 7, 2) == {("r", 6)}


def test_a_join_keeps_only_what_every_path_keeps() -> None:
    code = [alu64(MOV, 6, 1),                 # 0
            jmp(JEQ, 2, imm=0, off=2),        # 1: to 4
            alu64(MOV, 7, 1),                 # 2
            jmp(JA, off=1),                   # 3: to 5
            alu64(MOV, 6, imm=5),             # 4: r6 overwritten on this path
            exit_()]                          # 5
    assert places(code, 5) == {("r", 1)}
    assert places(code, 4) == {("r", 1), ("r", 6)}
    narrow = [alu64(MOV, 6, 1), ldx(W, 6, 10, -8), exit_()]  # a 32-bit fill is no copy
    assert places(narrow, 2) == {("r", 1)}
