"""Check a real run against what the verifier proved: runtime values inside its states.

The run is followed along the path the verifier explored that matches it: from the
entry, at every conditional jump the explored branch that the run took. While the run
is on such a path, every scalar register the verifier tracked must hold a value inside
the bounds and known bits it recorded there; a value outside is a soundness
violation. Where the verifier pruned (``N: safe``: an older, more general state at N
covered the path), the run goes on along the older state's explored continuation, with
only what the verifier compared there checked (`qstep.verifier.trust`); the log does
not say which older state at N matched, so every one is followed, and a value is
reported only when it lies outside the states of all of them. What could not be
checked is counted (``unchecked``), never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from qstep.bpf.insn import Insn
from qstep.verifier.log import EXIT_CODE, Path, VerifierLog, Visit
from qstep.verifier.states import RegState
from qstep.verifier.trust import StackTrust, Trust

Regs = Sequence[int | None]  # r0..r10 before an instruction; None: not defined
Shown = Sequence[object]  # the same registers as a trace shows them ("pkt+14", "ctx", 5)
Step = tuple[int, Regs] | tuple[int, Regs, Shown]

# What a traced pointer points into (qstep.debugger.provenance) and the verifier's
# pointer types that may stand for it.
_POINTER_CLASSES = (("pkt_end", {"pkt_end"}), ("pkt_meta", {"pkt_meta"}), ("pkt", {"pkt"}),
                    ("ctx", {"ctx"}), ("fp", {"fp"}))
_MAP_TYPES = ("map_ptr", "map_value", "map_value_or_null")
# The verifier's pointer types whose traced counterpart is known. Others (mem,
# rdonly_mem, mem_or_null, BTF pointers, sockets...) point into memory a trace does
# not classify: never judged.
KNOWN_POINTER_TYPES = frozenset(t for _p, types in _POINTER_CLASSES for t in types) | set(
    _MAP_TYPES)


@dataclass(frozen=True)
class Finding:
    """A runtime value outside what the verifier proved at that instruction."""

    step: int
    insn: int
    reg: int
    value: int
    claim: RegState
    shown: str = ""  # for a pointer: what the run's pointer points into
    pruned_at: int | None = None  # the claim is an older state's, matched at this insn

    def text(self) -> str:
        what = self.shown or str(self.value)
        older = ("" if self.pruned_at is None else
                 f" (on the older path it pruned against at insn {self.pruned_at})")
        return (f"step {self.step}, insn {self.insn}: r{self.reg} = {self.value:#x} "
                f"({what}), the verifier proved {self.claim.describe()}{older}")


@dataclass
class CheckReport:
    """How far the run followed explored paths, what was checked, what was found."""

    steps: int = 0  # runtime instructions followed on explored paths
    registers: int = 0  # scalar register values checked
    pointers: int = 0  # pointers whose type was checked
    paths: list[int] = field(default_factory=list)  # explored paths the run went along
    stopped: str = ""  # why the check ended before the run did ("" = it did not)
    findings: list[Finding] = field(default_factory=list)
    prunes: int = 0  # pruning points the run went through (then followed older paths)
    unchecked: int = 0  # values after a pruning point that the verifier did not compare


@dataclass
class _Follower:
    """One explored path the run may be on, and what its states must contain."""

    path: Path
    index: int  # the next visit's place in the path
    trust: Trust
    pruned_at: int | None = None
    visit: Visit | None = None
    # Where calls of global functions return: the caller's path, next index, trust and
    # pruning point.
    returns: tuple[tuple[Path, int, Trust, int | None], ...] = ()


@dataclass
class _Seen:
    """One follower's judgement of one step."""

    findings: list[Finding] = field(default_factory=list)
    checked: dict[int, str] = field(default_factory=dict)  # reg → "scalar"/"pointer"
    checkable: int = 0


MAX_FOLLOWERS = 1024  # older states followed at once (a rolled loop of 64 rounds: ~400)
_JUMP = re.compile(r"^\((?:[0-9a-f][56de])\) (?:if |goto)")
_CALLBACK_HELPER = re.compile(r"^\(85\) call (bpf_loop|bpf_for_each_map_elem|bpf_find_vma|"
                              r"bpf_user_ringbuf_drain)#")
_PSEUDO_CALL = re.compile(r"^\(85\) call pc([+-]\d+)$")
_LEFT = "the run left the paths the verifier logged"
_PRUNED = "the verifier pruned this path: an earlier state there covers it"
_UNSHOWN = "the verifier pruned this path against a state its log does not show"


def check_run(log: VerifierLog, run: Iterable[Step],
              program: Mapping[int, Insn] | None = None) -> CheckReport:
    """``run``: (original instruction index, registers before it[, as a trace shows them])
    in execution order. Scalars are checked against the proven bounds; pointers whose
    target the trace knows, against the verifier's pointer type. With ``program`` (the
    instructions by index) the check goes on past pruning points along the older paths
    (see `qstep.verifier.trust`); without it, it ends at the first one."""
    report = CheckReport()
    entry = next((p for p in log.paths if p.parent is None and p.visits
                  and p.visits[0].insn == 0), None)  # global functions have their own
    if entry is None:
        report.stopped = "the verifier log has no instructions"
        return report
    followers = [_Follower(entry, 0, Trust())]
    report.paths.append(entry.number)
    for step, (insn, regs, *rest) in enumerate(run, start=1):
        followers, why = _advance(log, followers, insn, report, program is not None)
        if not followers:
            report.stopped = f"at step {step} (insn {insn}) {why}"
            return report
        followers = _judge(report, step, followers, regs, rest[0] if rest else (),
                           program.get(insn) if program is not None else None)
        if followers[0].path.number != report.paths[-1]:
            report.paths.append(followers[0].path.number)
        report.steps = step
    return report


def _advance(log: VerifierLog, followers: list[_Follower], insn: int, report: CheckReport,
             go_on: bool) -> tuple[list[_Follower], str]:
    """Each follower at the run's instruction; a pruned one replaced by the older
    states it may have been matched against."""
    moved: dict[tuple[object, ...], _Follower] = {}
    why = _LEFT
    pruned = False
    for step in (s for f in followers for s in _next_places(log, f, insn)):
        visit = step.visit
        assert visit is not None
        if not visit.pruned:
            moved.setdefault((step.path.number, step.index, step.pruned_at, step.trust.key(),
                              len(step.returns)), step)
            continue
        pruned = True
        older = [v for v in log.by_insn.get(insn, []) if not v.pruned and v.seq < visit.seq]
        why = _PRUNED if not go_on else _UNSHOWN if not older else why
        for old in older if go_on else []:
            key = (old.path, old.index, insn, "older", len(step.returns))
            if key not in moved:  # one follower per older state (many pruned here)
                moved[key] = _Follower(log.paths[old.path], old.index,
                                       Trust.after_pruning(old.regs), insn, old, step.returns)
    report.prunes += pruned and bool(moved)
    if not moved and why == _LEFT:
        why = _left_why(followers)
    if len(moved) > MAX_FOLLOWERS:
        return [], f"the run may be on any of {len(moved)} older states: not followed"
    return list(moved.values()), why


def _left_why(followers: list[_Follower]) -> str:
    """Why the run left the logged paths; after pruning, the verifier's own reason."""
    points = sorted({f.pruned_at for f in followers if f.pruned_at is not None})
    if not points or any(f.pruned_at is None for f in followers):
        return _LEFT
    return (f"the run went where the older paths it followed after pruning at insn "
            f"{', '.join(map(str, points))} never went: that depends on values the "
            "verifier did not compare there")


def _next_places(log: VerifierLog, follower: _Follower, insn: int) -> list[_Follower]:
    """Where ``follower`` may be at ``insn``: along its path or a branch of it, into a
    global function the verifier checked on its own, or back from one to its caller."""
    places = [(v, p, i, follower.returns) for v, p, i in
              _follow(log, follower.path, follower.index, insn)]
    last = follower.visit.text if follower.visit is not None else ""
    called = _PSEUDO_CALL.match(last) if not places else None
    entry = next((p for p in log.paths if p.parent is None and p.visits
                  and p.visits[0].insn == insn), None) if called else None
    if called and entry is not None and (
            follower.visit is not None
            and follower.visit.insn + 1 + int(called.group(1)) == insn):
        # Verified for any arguments its prototype allows, which the verifier checked
        # at the call: what the caller trusted among them is trusted there.
        callee = Trust(regs={r for r in range(1, 6) if follower.trust.trusted(r)} | {10})
        return [_Follower(entry, 0, callee, None, entry.visits[0],
                          follower.returns + ((follower.path, follower.index, follower.trust,
                                               follower.pruned_at),))]
    if not places and last.startswith(f"({EXIT_CODE})") and follower.returns:
        path, index, caller, pruned_at = follower.returns[-1]
        places = [(v, p, i, follower.returns[:-1]) for v, p, i in _follow(log, path, index, insn)]
        return [_Follower(p, i, caller.copy().returned_from_global(), pruned_at, v, r)
                for v, p, i, r in places]
    if not places and last.startswith(f"({EXIT_CODE})"):
        again = _callback_entry(follower.path, follower.index, insn)
        if again is not None:  # the helper calls the callback once more
            return [_Follower(follower.path, again.index, _fresh(), follower.pruned_at,
                              again, follower.returns)]
        return _callback_round(log, follower, insn)
    copy = len(places) > 1  # an iterator's two states at one instruction: own trusts
    return [_Follower(p, i, follower.trust.copy() if copy else follower.trust,
                      follower.pruned_at, v, r) for v, p, i, r in places]


def _fresh() -> Trust:
    """Only the frame pointer: where the registers' values came from is not followed."""
    return Trust(regs={10}, stack=StackTrust(good=set()))


def _callback_round(log: VerifierLog, follower: _Follower, insn: int) -> list[_Follower]:
    """7.x goes back from a callback's exit to its helper's call (``from EXIT to
    CALL``) for the next round; the run goes on in the callback or after the call."""
    path, index = follower.path, follower.index
    if index >= len(path.visits):
        return []
    call = path.visits[index]  # a pruned visit has no text: another visit there has
    if not any(_CALLBACK_HELPER.match(v.text) for v in log.by_insn.get(call.insn, [])):
        return []
    starts = ([(path, index)] if not call.pruned else
              [(log.paths[v.path], v.index) for v in log.by_insn.get(call.insn, [])
               if not v.pruned and v.seq < call.seq])
    return [_Follower(p, i, _fresh(), call.insn if call.pruned else follower.pruned_at, v,
                      follower.returns)
            for start, at in starts for v, p, i in _follow(log, start, at + 1, insn)]


def _callback_entry(path: Path, index: int, insn: int) -> Visit | None:
    """The visit on ``path`` before ``index`` where a callback starting at ``insn`` was
    entered from its helper's call (6.1 checks a bpf_loop callback once, for any
    round: each round of the run starts there again)."""
    for k in range(min(index, len(path.visits)) - 1, 0, -1):
        visit = path.visits[k]
        if visit.insn == insn and _CALLBACK_HELPER.match(path.visits[k - 1].text) and not (
                path.visits[k - 1].pruned):
            return visit
    return None


def _follow(log: VerifierLog, path: Path, index: int, insn: int
            ) -> list[tuple[Visit, Path, int]]:
    """The visits the run may be at: next on this path, and the first of each branch
    taken. Both can be at the same instruction: after an iterator's next kfunc the
    verifier goes on with the drained state (r0 = 0) and queues the active one there."""
    found = []
    if index < len(path.visits) and path.visits[index].insn == insn:
        found.append((path.visits[index], path, index))
    elif (index + 1 < len(path.visits) and _JUMP.match(path.visits[index].text)
          and path.visits[index + 1].insn == insn):
        # A jump whose outcome the verifier knew: it removed it (dead-code elimination),
        # so the run goes straight on where the path does.
        found.append((path.visits[index + 1], path, index + 1))
    for child in log.branches(path.number, index - 1):
        if child.visits and child.visits[0].insn == insn:
            found.append((child.visits[0], child, 0))
    return found


def _judge(report: CheckReport, step: int, followers: list[_Follower], regs: Regs,
           shown: Shown, insn: Insn | None) -> list[_Follower]:
    """Check the step on every follower; report what every one of them finds (one of
    them is the path the verifier really took), drop those that alone find something."""
    seen = [_check_follower(f, step, regs, shown, insn) for f in followers]
    if all(s.findings for s in seen):
        report.findings += seen[0].findings
        kept = list(zip(followers, seen, strict=True))
    else:
        kept = [(f, s) for f, s in zip(followers, seen, strict=True) if not s.findings]
    common = set.intersection(*(set(s.checked.items()) for _f, s in kept))
    report.registers += sum(kind == "scalar" for _reg, kind in common)
    report.pointers += sum(kind == "pointer" for _reg, kind in common)
    report.unchecked += kept[0][1].checkable - len(common)
    for follower, _seen in kept:
        follower.index += 1
    return [f for f, _s in kept]


def _check_follower(follower: _Follower, step: int, regs: Regs, shown: Shown,
                    insn: Insn | None) -> _Seen:
    visit, trust = follower.visit, follower.trust
    assert visit is not None
    seen = _Seen()
    pending = trust.read_pending(insn) if insn is not None else []
    read = {reg for reg, _claim in pending}
    for reg, claim in pending + [(r, c) for r, c in visit.regs.items() if r not in read]:
        value = regs[reg] if reg < len(regs) else None
        target = shown[reg] if reg < len(shown) else None
        kind = ("scalar" if claim.type == "scalar" else
                "pointer" if (claim.type in KNOWN_POINTER_TYPES and value is not None
                              and pointer_class(target) is not None) else None)
        if value is None or kind is None:
            continue
        seen.checkable += 1
        if not trust.trusted(reg):
            continue
        seen.checked[reg] = kind
        if not _inside(claim, value, target):
            seen.findings.append(Finding(step, visit.insn, reg, value, claim,
                                         str(target) if kind == "pointer" else "",
                                         follower.pruned_at))
            if insn is not None:
                trust.distrust(reg)
    if insn is not None:
        trust.apply(insn, visit.regs, regs)
    return seen


def _inside(claim: RegState, value: int, shown: object) -> bool:
    if claim.type == "scalar":
        return claim.contains(value)
    kind = pointer_class(shown)
    return kind is None or claim.type in kind


def pointer_class(shown: object) -> set[str] | None:
    """The verifier's pointer types that a traced pointer (``pkt+14``...) may have."""
    if not isinstance(shown, str):
        return None
    if shown.startswith("map:"):
        # a map value after a lookup, the map itself or a global's value from ld_imm64,
        # an inner map from a map of maps: not told apart
        return set(_MAP_TYPES)
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
