"""Check a real run against what the verifier proved: runtime values inside its states.

The run is followed along the path the verifier explored that matches it: from the
entry, at every conditional jump the explored branch that the run took. While the run
is on such a path, every scalar register the verifier tracked must hold a value inside
the bounds and known bits it recorded there; a value outside is a soundness
violation. Where the verifier pruned (``N: safe``: an earlier, more general state at N
covered the path), it reasoned by subsumption over live, precise registers only, so
the check stops there and says so, rather than report what is not a verifier bug.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from qstep.verifier.log import Path, VerifierLog, Visit
from qstep.verifier.states import RegState

Regs = Sequence[int | None]  # r0..r10 before an instruction; None: not defined
Shown = Sequence[object]  # the same registers as a trace shows them ("pkt+14", "ctx", 5)
Step = tuple[int, Regs] | tuple[int, Regs, Shown]

# What a traced pointer points into (qstep.debugger.provenance) and the verifier's
# pointer types that may stand for it.
_POINTER_CLASSES = (("pkt_end", {"pkt_end"}), ("pkt_meta", {"pkt_meta"}), ("pkt", {"pkt"}),
                    ("ctx", {"ctx"}), ("fp", {"fp"}))


@dataclass(frozen=True)
class Finding:
    """A runtime value outside what the verifier proved at that instruction."""

    step: int
    insn: int
    reg: int
    value: int
    claim: RegState
    shown: str = ""  # for a pointer: what the run's pointer points into

    def text(self) -> str:
        what = self.shown or str(self.value)
        return (f"step {self.step}, insn {self.insn}: r{self.reg} = {self.value:#x} "
                f"({what}), the verifier proved {self.claim.describe()}")


@dataclass
class CheckReport:
    """How far the run followed an explored path, what was checked, what was found."""

    steps: int = 0  # runtime instructions followed on explored paths
    registers: int = 0  # scalar register values checked
    pointers: int = 0  # pointers whose type was checked
    paths: list[int] = field(default_factory=list)  # explored paths the run went along
    stopped: str = ""  # why the check ended before the run did ("" = it did not)
    findings: list[Finding] = field(default_factory=list)


def check_run(log: VerifierLog, run: Iterable[Step]) -> CheckReport:
    """``run``: (original instruction index, registers before it[, as a trace shows them])
    in execution order. Scalars are checked against the proven bounds; pointers whose
    target the trace knows, against the verifier's pointer type."""
    report = CheckReport()
    if not log.paths or not log.paths[0].visits:
        report.stopped = "the verifier log has no instructions"
        return report
    path, index = log.paths[0], 0
    report.paths.append(0)
    for step, (insn, regs, *rest) in enumerate(run, start=1):
        visit, path, index = _follow(log, path, index, insn)
        if visit is None:
            report.stopped = (f"at step {step} (insn {insn}) the run left the paths the "
                              "verifier logged")
            return report
        if visit.pruned:
            report.stopped = (f"at step {step} (insn {insn}) the verifier pruned this path: "
                              "an earlier state there covers it")
            return report
        if path.number != report.paths[-1]:
            report.paths.append(path.number)
        _check_visit(report, step, visit, regs, rest[0] if rest else ())
        report.steps = step
        index += 1
    return report


def _follow(log: VerifierLog, path: Path, index: int, insn: int
            ) -> tuple[Visit | None, Path, int]:
    """The visit the run is at: next on this path, or the first of a branch taken."""
    if index < len(path.visits) and path.visits[index].insn == insn:
        return path.visits[index], path, index
    for child in log.paths:
        if (child.parent == path.number and child.branch_index == index - 1
                and child.visits and child.visits[0].insn == insn):
            return child.visits[0], child, 0
    return None, path, index


def _check_visit(report: CheckReport, step: int, visit: Visit, regs: Regs,
                 shown: Shown) -> None:
    for reg, claim in visit.regs.items():
        value = regs[reg] if reg < len(regs) else None
        if value is None:
            continue
        if claim.type == "scalar":
            report.registers += 1
            if not claim.contains(value):
                report.findings.append(Finding(step, visit.insn, reg, value, claim))
            continue
        target = shown[reg] if reg < len(shown) else None
        kind = pointer_class(target)
        if kind is None:
            continue  # the trace does not know what this value points into
        report.pointers += 1
        if claim.type not in kind:
            report.findings.append(Finding(step, visit.insn, reg, value, claim, str(target)))


def pointer_class(shown: object) -> set[str] | None:
    """The verifier's pointer types that a traced pointer (``pkt+14``...) may have."""
    if not isinstance(shown, str):
        return None
    if shown.startswith("map:"):
        # a map value after a lookup, or the map itself / a global's value from ld_imm64
        return ({"map_value", "map_value_or_null"} if "[" in shown
                else {"map_ptr", "map_value"})
    for prefix, types in _POINTER_CLASSES:
        if shown == prefix or shown.startswith((prefix + "+", prefix + "-")):
            return types
    return None


def union_at(log: VerifierLog, insn: int, reg: int) -> list[RegState]:
    """Every distinct state the verifier recorded for ``reg`` before ``insn``."""
    seen: dict[str, RegState] = {}
    for visit in log.by_insn.get(insn, []):
        state = visit.regs.get(reg)
        if state is not None:
            seen.setdefault(state.text, state)
    return list(seen.values())
