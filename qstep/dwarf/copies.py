"""Which registers and 8-byte stack slots of a BPF function hold equal values before
each instruction, and which still hold the value an argument register had at the
function's entry.

A must-analysis over the function's code: copies ``rX = rY``, spills and fills
through r10 keep a value; anything else that writes a place forgets it; a call
forgets r0-r5 and every stack slot, a store not through r10 every stack slot. At
the entry r1-r5 equal the pseudo places "entry r1".."entry r5", which nothing
writes, so "entry rN" shares a class with every place that still holds it. Where
paths join, only what every path keeps survives. Used for ``DW_OP_entry_value``
(``qstep.debugger.entryvalues``, probes through ``qstep.dwarf.scope``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from qstep.bpf import insn as bi
from qstep.bpf.insn import Insn
from qstep.loaded import JitFunction, LoadedProgram

Place = tuple[str, int]  # ("r", n), ("fp", offset from r10), ("entry", n)
State = frozenset[frozenset[Place]]  # classes of places with equal values (2+ members)
ARGS = range(1, 6)
FP = 10


def _entry_state() -> State:
    return frozenset(frozenset({("entry", n), ("r", n)}) for n in ARGS)


def _kill(state: State, doomed: Callable[[Place], bool]) -> State:
    out = (frozenset(p for p in c if not doomed(p)) for c in state)
    return frozenset(c for c in out if len(c) > 1)


def _copy(state: State, dst: Place, src: Place) -> State:
    state = _kill(state, lambda p: p == dst)
    cls = next((c for c in state if src in c), frozenset({src}))
    return frozenset({c for c in state if c != cls} | {cls | {dst}})


def _meet(a: State, b: State) -> State:
    return frozenset(x & y for x in a for y in b if len(x & y) > 1)


def _slot_overlaps(off: int, size: int) -> Callable[[Place], bool]:
    return lambda p: p[0] == "fp" and p[1] < off + size and off < p[1] + 8


def _is_stack(p: Place) -> bool:
    return p[0] == "fp"


def transfer(insn: Insn, state: State) -> State:
    """The classes after ``insn`` (the code falls through or jumps: the same)."""
    cls, dst = insn.cls, ("r", insn.dst)
    if insn.is_call:
        return _kill(state, lambda p: _is_stack(p) or (p[0] == "r" and p[1] <= 5))
    if cls in (bi.JMP, bi.JMP32):
        return state
    if cls == bi.ALU64 and insn.op == bi.ALU_MOV and insn.uses_reg_src and insn.off == 0:
        return _copy(state, dst, ("r", insn.src))
    if cls == bi.LDX:
        if insn.src == FP and insn.mode == bi.MODE_MEM and insn.code & 0x18 == bi.BPF_DW:
            return _copy(state, dst, ("fp", insn.off))
        return _kill(state, lambda p: p == dst)
    if cls in (bi.ST, bi.STX):
        return _store(insn, state)
    return _kill(state, lambda p: p == dst)  # ALU, ALU64, LD (ld_imm64)


def _store(insn: Insn, state: State) -> State:
    if insn.mode == bi.MODE_ATOMIC:  # may write its registers back, and memory anywhere
        regs = {("r", insn.src), ("r", 0)}
        return _kill(state, lambda p: _is_stack(p) or p in regs)
    if insn.dst != FP:
        return _kill(state, _is_stack)
    size = bi.SIZE_BYTES[insn.code & 0x18]
    state = _kill(state, _slot_overlaps(insn.off, size))
    if insn.cls == bi.STX and size == 8:
        return _copy(state, ("fp", insn.off), ("r", insn.src))
    return state


def _states(prog: LoadedProgram, func: JitFunction) -> dict[int, State]:
    return _fixpoint(tuple(i for i in prog.insns if func.start_insn <= i.index < func.end_insn))


@cache
def _fixpoint(code: tuple[Insn, ...]) -> dict[int, State]:
    """The classes before each instruction of a function (a forward fixpoint)."""
    insns = {i.index: i for i in code}
    start = code[0].index
    before: dict[int, State] = {start: _entry_state()}
    work = [start]
    while work:
        index = work.pop()
        insn = insns[index]
        after = transfer(insn, before[index])
        for nxt in _successors(insn):
            if nxt not in insns:
                continue
            merged = after if nxt not in before else _meet(before[nxt], after)
            if before.get(nxt) != merged:
                before[nxt] = merged
                work.append(nxt)
    return before


def _successors(insn: Insn) -> list[int]:
    if insn.is_exit:
        return []
    out = [] if insn.is_jump and insn.op == bi.JMP_JA and not insn.is_call else [
        insn.index + insn.size]
    if insn.jump_target is not None and not insn.is_call:
        out.append(insn.jump_target)
    return out


def places_like(prog: LoadedProgram, func: JitFunction, index: int, place: Place) -> set[Place]:
    """Places holding the same value as ``place`` before instruction ``index``."""
    state = _states(prog, func).get(index)
    if state is None:
        return set()  # never reached from the entry
    return set(next((c for c in state if place in c), frozenset()))
