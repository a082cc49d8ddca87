"""Source coverage of a program from the instructions its runs executed (lcov and text).

A line has code when an instruction the kernel kept carries it; it is hit as often as
the first instruction of any of its runs of instructions executed. A branch is a
conditional jump the kernel kept: its two directions are taken or not, as the next
executed instruction shows. Coverage comes from real runs of the JIT-compiled code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from qstep.loaded import InsnSite, LoadedProgram

BPF_JA, BPF_CALL, BPF_EXIT = 0x00, 0x80, 0x90


@dataclass
class Coverage:
    """Executed instructions and branch directions, accumulated over runs."""

    prog: LoadedProgram
    insn_hits: Counter[int] = field(default_factory=Counter)
    branches: dict[int, Counter[bool]] = field(default_factory=dict)  # insn → taken? counts

    def add_run(self, executed: Iterable[int]) -> None:
        """Account for one run, given the original indexes of its instructions in order."""
        previous: int | None = None
        for index in executed:
            self.insn_hits[index] += 1
            if previous is not None and is_conditional(self.prog.sites[previous]):
                target = self.prog.sites[previous].insn.jump_target
                self.branches.setdefault(previous, Counter())[index == target] += 1
            previous = index


def is_conditional(site: InsnSite) -> bool:
    ins = site.insn
    return ins.is_jump and ins.op not in (BPF_JA, BPF_CALL, BPF_EXIT) and not site.removed


@dataclass(frozen=True)
class LineCoverage:
    file: str
    line: int
    hits: int
    branches: tuple[Branch, ...]


@dataclass(frozen=True)
class Branch:
    """A conditional jump: how often it went to its target and how often it fell through."""

    insn: int
    taken: int
    not_taken: int

    @property
    def reached(self) -> bool:
        return bool(self.taken or self.not_taken)


def line_coverage(cov: Coverage) -> list[LineCoverage]:
    """Per source line: hits and branch directions, sorted by file and line."""
    hits: dict[tuple[str, int], int] = {}
    branches: dict[tuple[str, int], list[Branch]] = {}
    previous_line: tuple[str, int] | None = None
    for index in sorted(cov.prog.sites):
        site = cov.prog.sites[index]
        if site.removed or site.source is None:
            previous_line = None
            continue
        key = (site.source.file, site.source.line)
        if key != previous_line:  # the first instruction of a run of this line
            hits[key] = max(hits.get(key, 0), cov.insn_hits[index])
        previous_line = key
        if is_conditional(site):
            seen = cov.branches.get(index, Counter())
            branches.setdefault(key, []).append(Branch(index, seen[True], seen[False]))
    return [LineCoverage(f, n, hits[(f, n)], tuple(branches.get((f, n), ())))
            for f, n in sorted(hits)]


def function_calls(cov: Coverage) -> dict[str, tuple[str, int, int]]:
    """Each JIT function: (file, line of its first instruction, times it was entered)."""
    out = {}
    for func in cov.prog.functions:
        site = cov.prog.sites.get(func.start_insn)
        if site is not None and site.source is not None:
            out[func.name] = (site.source.file, site.source.line, cov.insn_hits[func.start_insn])
    return out


def lcov(test_name: str, lines: list[LineCoverage], functions: dict[str, tuple[str, int, int]]
         ) -> str:
    """lcov tracefile text; ``functions``: name → (file, first line, calls)."""
    out = [f"TN:{test_name}"]
    for file in sorted({c.file for c in lines}):
        out.append(f"SF:{file}")
        funcs = {n: v for n, v in functions.items() if v[0] == file}
        out += [f"FN:{line},{name}" for name, (_f, line, _c) in sorted(funcs.items())]
        out += [f"FNDA:{calls},{name}" for name, (_f, _l, calls) in sorted(funcs.items())]
        out += [f"FNF:{len(funcs)}", f"FNH:{sum(1 for v in funcs.values() if v[2])}"]
        mine = [c for c in lines if c.file == file]
        for c in mine:
            for b in c.branches:  # block: the jump's insn; branch 0 taken, 1 fell through
                out += [f"BRDA:{c.line},{b.insn},0,{b.taken if b.reached else '-'}",
                        f"BRDA:{c.line},{b.insn},1,{b.not_taken if b.reached else '-'}"]
        out += [f"DA:{c.line},{c.hits}" for c in mine]
        brs = [b for c in mine for b in c.branches]
        out += [f"BRF:{2 * len(brs)}",
                f"BRH:{sum((b.taken > 0) + (b.not_taken > 0) for b in brs)}",
                f"LF:{len(mine)}", f"LH:{sum(1 for c in mine if c.hits)}", "end_of_record"]
    return "\n".join(out) + "\n"


def coverage_text(lines: list[LineCoverage]) -> list[str]:
    """A line per source line: hits, and branches as taken/not taken counts."""
    text = []
    for c in lines:
        mark = "    ####" if c.hits == 0 else f"{c.hits:8}"
        br = "  ".join(f"[insn {b.insn}: taken {b.taken}, fell through {b.not_taken}]"
                       for b in c.branches)
        text.append(f"{mark}  {c.file.rsplit('/', 1)[-1]}:{c.line}" + (f"  {br}" if br else ""))
    covered = sum(1 for c in lines if c.hits)
    brs = [b for c in lines for b in c.branches]
    text.append(f"lines: {covered}/{len(lines)} executed; branch directions: "
                f"{sum((b.taken > 0) + (b.not_taken > 0) for b in brs)}/{2 * len(brs)} taken")
    return text
