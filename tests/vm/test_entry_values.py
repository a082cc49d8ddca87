"""Values at a function's entry and callers' callee-saved registers, on a real clang
program: tests/progs/entryval.bpf.c on 6.1 and 6.12.

clang-19 emits no ``DW_OP_entry_value`` for BPF, so its resolution is checked by
evaluating ``DW_OP_entry_value(DW_OP_regN)`` in the real frames of a stop: the
places that keep the entry value are found in the real code (a copy in the callee,
or the caller's callee-saved copy, restored from the JIT's saves where the callee
pushed it), and the values are those the packet bytes imply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import Debugger, RunRequest
from qstep.debugger.source import SourceView
from qstep.debugger.unwind import saved_registers
from qstep.dwarf.location import Location, Op, Piece, Unavailable, evaluate_piece
from qstep.dwarf.scope import InsnScope
from qstep.dwarf.types import CType
from qstep.errors import UsageError
from qstep.expr.ast import Expr, Name, Reg
from qstep.expr.lower import VarRef, lower
from qstep.paths import REPO_ROOT
from qstep.session import Session

pytestmark = pytest.mark.vm
SOURCE_PATH = "tests/progs/entryval.bpf.c"
SOURCE = (REPO_ROOT / SOURCE_PATH).read_text().splitlines()
AFTER_LOOKUP = next(n for n, t in enumerate(SOURCE, start=1) if "AFTER_LOOKUP" in t)
P, Q, R, T = 7, 11, 13, 2
KEEP, SUM = T * 5, P + Q
PACKET = bytes([P, Q, R, T]) + bytes(60)


def mix(a: int, b: int, c: int) -> int:
    """mix() of the program (the map's values start at 0: the lookup adds nothing)."""
    x = a * 3 + c
    return (x ^ (b << 4)) + b


def entry_value(n: int) -> tuple[Op, ...]:
    return (Op("entry_value", ((Op("reg", (n,)),),)), Op("stack_value"))


@pytest.fixture
def stopped(guest: Session, bpf_obj: Callable[[str], Path]
            ) -> Iterator[tuple[Debugger, SourceView]]:
    """Stopped in the first call of mix, after its lookup."""
    obj = BpfObject.open(bpf_obj(SOURCE_PATH))
    prog = guest.load(obj, "entryval")
    try:
        with guest.debugger(prog, RunRequest(PACKET)) as dbg:
            dbg.add_breakpoint(f"entryval.bpf.c:{AFTER_LOOKUP}")
            event = dbg.run()
            assert event.kind == "stopped" and event.site is not None
            assert event.site.function.name == "mix"
            yield dbg, SourceView(obj, dbg)
    finally:
        guest.unload(prog)


def entry_values(view: SourceView) -> list[int | str]:
    """r1-r3 at mix's entry, or the reason each is unavailable."""
    state = view.state(view.frames()[0])
    out: list[int | str] = []
    for n in (1, 2, 3):
        try:
            out.append(evaluate_piece(entry_value(n), state).value)
        except Unavailable as why:
            out.append(str(why))
    return out


def test_entry_values_from_the_callees_copy_and_from_the_callers(
        stopped: tuple[Debugger, SourceView]) -> None:
    dbg, view = stopped
    pushed = saved_registers(dbg.prog, view.frames()[0].call.function)
    assert {6, 7} <= set(pushed)  # mix saves r6, r7: the caller's r7 (p) comes from a slot
    first = entry_values(view)
    assert first[:2] == [P, Q]
    assert re.fullmatch(r"r3 at the function's entry: entryval passed it in r3 \(insn \d+\) "
                        r"and kept it nowhere the call preserves", str(first[2]))
    assert dbg.regs()[1] != P  # the lookup clobbered r1 (r3 may still hold 13 by chance:
    # the inlined array lookup leaves it alone, but BPF promises nothing after a call)
    with pytest.raises(Unavailable, match="r1 at the entry of entryval is kept in no register"):
        evaluate_piece(entry_value(1), view.state(view.frames()[1]))  # the kernel's ctx
    assert dbg.cont().kind == "stopped"  # the second call: mix(q, keep, sum)
    assert entry_values(view) == [Q, KEEP, SUM]


def test_up_then_info_locals_shows_the_callers_saved_registers(
        stopped: tuple[Debugger, SourceView]) -> None:
    """At the second call the caller keeps keep in r6 (which mix pushes: read from the
    JIT's save slot), sum in r8 (untouched) and res (the first call's result) on its
    stack."""
    dbg, view = stopped
    assert dbg.cont().kind == "stopped"
    commands = CommandSet(dbg, view)
    assert commands.execute("up").text.startswith("#1  entryval")
    shown = dict(re.findall(r"^(\w+) = (.*)$", commands.execute("info locals").text, re.M))
    assert (shown["keep"], shown["sum"], shown["res"]) == (str(KEEP), str(SUM),
                                                          str(mix(P, Q, R)))
    assert dbg.regs()[6] != KEEP  # mix's own r6 differs: the value really came from the save
    assert commands.execute("print keep + sum").text == str(KEEP + SUM)
    assert dbg.cont().kind == "exited"


def test_info_args_shows_what_the_caller_passed_where_a_parameter_is_gone(
        stopped: tuple[Debugger, SourceView]) -> None:
    """DWARF drops a and c after the lookup (their registers are reused); gdb's
    ``a@entry`` lines show the values passed, where something still holds them."""
    dbg, view = stopped
    commands = CommandSet(dbg, view)
    assert commands.execute("info args").text.splitlines() == [
        "a = <optimized out>", f"a@entry = {P}", f"b = {Q}", "c = <optimized out>"]
    assert dbg.cont().kind == "stopped"  # mix(q, keep, sum)
    assert commands.execute("info args").text.splitlines() == [
        "a = <optimized out>", f"a@entry = {Q}", f"b = {KEEP}", "c = <optimized out>",
        f"c@entry = {SUM}"]


class WithEntryVar:
    """The probe's C names at an instruction, plus one variable located by
    ``DW_OP_entry_value(DW_OP_regN), DW_OP_stack_value`` (clang-19 emits none)."""

    def __init__(self, scope: InsnScope, n: int) -> None:
        self.scope, self.n, self.stack_size = scope, n, scope.stack_size

    def variable(self, name: str) -> VarRef | None:
        if name != "passed":
            return self.scope.variable(name)
        ctype = self.scope.find_type("__u64")
        assert ctype is not None
        return VarRef(name, ctype, Location((Piece(None, entry_value(self.n)),)))

    def global_address(self, name: str) -> tuple[int, CType] | None:
        return self.scope.global_address(name)

    def find_type(self, name: str) -> CType | None:
        return self.scope.find_type(name)

    def map_value_type(self, name: str) -> CType | None:
        return self.scope.map_value_type(name)

    def entry_place(self, n: int) -> Expr | None:
        return self.scope.entry_place(n)


def test_probes_read_an_entry_value_where_the_function_keeps_it(
        stopped: tuple[Debugger, SourceView]) -> None:
    dbg, view = stopped
    site = dbg.site()
    assert site is not None
    scope = InsnScope(view.obj, view.model, dbg.prog, site)
    lowered = lower(Name("passed"), WithEntryVar(scope, 2))  # b: mix's copy in a register
    assert isinstance(lowered, Reg) and dbg.regs()[lowered.n] == Q
    with pytest.raises(UsageError, match=r"passed needs r1 at its function's entry "
                                         r"\(DW_OP_entry_value\), which no register or stack "
                                         r"slot keeps here \(column 1\)"):
        lower(Name("passed"), WithEntryVar(scope, 1))  # only the caller kept a
