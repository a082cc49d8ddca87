"""Where control enters a source line's code: the locations of ``file.c:line``.

The compiler may copy a line (inlining, loop unrolling, tail duplication) or
interleave its code with other lines'. A location is an instruction of the line
(by the BTF line info, as the listing shows it) at which control can enter the
line's code:

- the first instruction of a function;
- an instruction whose predecessor belongs to another line and falls through
  to it (anything but ``exit`` and an unconditional jump);
- the target of a jump from an instruction of another line.

So every copy gets a location at its first instruction and stops once each time
it runs; a jump from another line into the middle of a copy is a location too
(that path runs the line's code from there on). Jumps and fall-throughs within
the line (a loop on one line) are not entries: a location stops when control
comes to the line, as gdb's ``is_stmt`` entries do. Instructions the verifier
removed never run: they neither enter nor are entered. Each maximal run of
consecutive instructions of the line thus has a location at its first
instruction unless only the line itself leads there.
"""

from __future__ import annotations

from qstep.bpf.insn import Insn
from qstep.loaded import InsnSite, LoadedProgram

JMP_JA = 0x00


def _key(site: InsnSite | None) -> tuple[str, int] | None:
    return (site.source.file, site.source.line) if site and site.source else None


def falls_through(insn: Insn) -> bool:
    """Whether the next instruction can run after ``insn`` (not exit, not ``goto``)."""
    return not insn.is_exit and not (insn.is_jump and insn.op == JMP_JA)


def _live(prog: LoadedProgram, index: int) -> InsnSite | None:
    site = prog.sites.get(index)
    return site if site is not None and not site.removed else None


def entered_from_outside(prog: LoadedProgram) -> set[int]:
    """Indexes of live instructions that control can reach from another line."""
    entries = {f.start_insn for f in prog.functions}
    previous: InsnSite | None = None
    for insn in prog.insns:
        site = _live(prog, insn.index)
        if site is None:
            previous = None
            continue
        if (previous is not None and previous.function == site.function
                and falls_through(previous.insn) and _key(previous) != _key(site)):
            entries.add(insn.index)
        target = _live(prog, insn.jump_target) if insn.jump_target is not None else None
        if target is not None and _key(target) != _key(site):
            entries.add(target.index)
        previous = site
    return entries


def line_locations(prog: LoadedProgram, in_line: list[InsnSite]) -> tuple[InsnSite, ...]:
    """The entries among ``in_line`` (the live instructions of one line), by index."""
    entries = entered_from_outside(prog)
    return tuple(sorted((s for s in in_line if s.index in entries and not s.removed),
                        key=lambda s: s.index))
