"""A level-2 verifier log as the paths the verifier explored, with states per instruction.

The verifier walks the program depth first. Each processed instruction is a line
``N: (code) text  ; R2_w=... R3=...`` whose tail lists the registers the instruction
changed (their state after it). ``N: R1=... R10=fp0`` lines list the registers touched
since the last such line (before N); full states come as ``from X to Y: ...`` (a branch
pushed at X, now explored from Y) and after calls (``callee:``, ``to caller at N:``).
``N: safe`` ends a path that an earlier, more general state at N covers (pruning);
``exit`` ends one too. Every processed instruction becomes a `Visit` with the full
register state before it, so ``processed N insns`` equals the number of visits.
Kernels 7.x first print their own analysis passes (liveness, subprogram order) as
listings; the walk starts at the first ``0: `` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qstep.errors import UsageError
from qstep.verifier.states import RegState, parse_reg_state, split_top

_INSN = re.compile(r"^(\d+): \(([0-9a-f]{2})\) (.*?)(?:\s+; (.*))?$")
_FULL = re.compile(r"^(\d+): ((?:frame\d+: )?R\d.*|frame\d+:.*)$")
_FROM = re.compile(r"^from (\d+) to (\d+): (.*)$")
_SAFE = re.compile(r"^(\d+): safe$")
_PROCESSED = re.compile(r"^processed (\d+) insns")
_REG = re.compile(r"^R(\d+)(?:_[rwD]+)?$")
CALL_CODE, EXIT_CODE = "85", "95"
# An instruction that writes a register: "r2 = ...", "w3 += 1", "r0 = atomic_..."
_WRITES = re.compile(r"^[rw](\d+) (?:[-+*/%&|^]|<<|s?>>)?= ")
_Push = tuple[int, int, int, bool]  # (insn, path, visit index, an iterator's next call)
# An open-coded iterator's next kfunc: the verifier goes on with the drained state
# (r0 = 0) and pushes the active one, continued later "from N to N+1".
_ITER_NEXT = re.compile(r"call bpf_iter_\w+_next#")
# Helpers that call back into the program: 7.x pushes the callback's state at the call.
_CALLBACK_CALL = re.compile(r"call (bpf_loop|bpf_for_each_map_elem|bpf_find_vma|"
                            r"bpf_user_ringbuf_drain|bpf_timer_set_callback)#")
# Where a global function's own verification starts, and ends (the main program or
# the next function follows).
_GLOBAL_FUNC = re.compile(r"^(Validating \S+\(\) func#\d+\.\.\.|Func#\d+ is safe for any args"
                          r" that match its prototype)$")


@dataclass
class Visit:
    """One processed instruction on one explored path: the registers before it.

    A pruned visit ends its path: an earlier state at this instruction covers it
    (its registers are empty when the log did not print them)."""

    insn: int
    path: int
    regs: dict[int, RegState]
    pruned: bool = False
    text: str = ""  # the instruction as the log printed it: "(2d) if r3 > r2 goto pc+1"
    seq: int = -1  # its place among all visits, in log order
    index: int = -1  # its place in its path's visits


@dataclass
class Path:
    """One explored path: where it branched off its parent, and its visits in order."""

    number: int
    parent: int | None  # the path it branched off (None: the program's entry)
    branch_index: int  # index in the parent's visits of the jump it branched at
    visits: list[Visit] = field(default_factory=list)


@dataclass
class VerifierLog:
    """Every visit, grouped by instruction; the explored paths; the log's own count."""

    visits: list[Visit] = field(default_factory=list)
    by_insn: dict[int, list[Visit]] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)
    processed: int | None = None  # "processed N insns"
    _branches: dict[tuple[int, int], list[Path]] = field(default_factory=dict, repr=False)
    _indexed: int = field(default=0, repr=False)

    def branches(self, path: int, index: int) -> list[Path]:
        """The paths that branched off ``path`` at its visit ``index``."""
        if self._indexed != len(self.paths):  # built once the log is parsed
            self._indexed, self._branches = len(self.paths), {}
            for p in self.paths:
                if p.parent is not None:
                    self._branches.setdefault((p.parent, p.branch_index), []).append(p)
        return self._branches.get((path, index), [])

    def states_at(self, insn: int) -> list[dict[int, RegState]]:
        return [v.regs for v in self.by_insn.get(insn, [])]


def parse_regs(text: str) -> dict[int, RegState]:
    """``frame1: R1=ctx() R2_w=fp-40 fp-8=mmmm`` → registers by number (stack ignored)."""
    regs: dict[int, RegState] = {}
    for token in split_top(text, " "):
        name, eq, value = token.partition("=")
        found = _REG.match(name)
        if eq and found:
            regs[int(found.group(1))] = parse_reg_state(value)
    return regs


def parse_log(text: str) -> VerifierLog:
    """Reconstruct the explored paths and the register state before every instruction."""
    log = VerifierLog(paths=[Path(0, None, -1)])
    current: dict[int, RegState] = {}
    jumps: list[_Push] = []  # conditional jumps (and iterator next calls), newest last
    last_exit: int | None = None  # a subprogram's exit: "from EXIT to CALLER" continues
    started = False  # 7.x prints its analysis passes' listings before the walk
    for raw in text.splitlines():
        line = raw.strip()
        if _GLOBAL_FUNC.match(line):  # a global function, verified on its own: a new root
            if log.paths[-1].visits:  # (6.1 checks them before the main program)
                log.paths.append(Path(len(log.paths), None, -1))
            started, current, jumps, last_exit = True, {}, [], None
            continue
        if not started:
            started = raw.startswith("0: ")
            if not started:
                continue
        if (found := _PROCESSED.match(line)) is not None:
            log.processed = int(found.group(1))
        elif (found := _FROM.match(line)) is not None and last_exit == int(found.group(1)):
            current = parse_regs(found.group(3))  # back in the caller, same path
            last_exit = None
            if found.group(3) == "safe":  # ...and pruned right there
                _add(log, Visit(int(found.group(2)), len(log.paths) - 1, {}, pruned=True))
        elif (found := _FROM.match(line)) is not None:
            parent = _pop_branch(log, jumps, int(found.group(1)), int(found.group(2)))
            log.paths.append(Path(len(log.paths), parent[0], parent[1]) if parent
                             else Path(len(log.paths), None, -1))
            safe = found.group(3) == "safe"
            current = {} if safe else parse_regs(found.group(3))
            if safe:
                _add(log, Visit(int(found.group(2)), len(log.paths) - 1, {}, pruned=True))
        elif (found := _SAFE.match(line)) is not None:
            _add(log, Visit(int(found.group(1)), len(log.paths) - 1, dict(current), pruned=True))
        elif (found := _INSN.match(line)) is not None:
            visit = _add(log, Visit(int(found.group(1)), len(log.paths) - 1, dict(current),
                                    text=f"({found.group(2)}) {found.group(3)}"))
            last_exit = visit.insn if found.group(2) == EXIT_CODE else None
            iterator = (_ITER_NEXT.match(found.group(3)) or _CALLBACK_CALL.match(
                found.group(3))) is not None
            if is_conditional_jump(found.group(2)) or iterator:
                jumps.append((visit.insn, visit.path, visit.index, iterator))
            _after(current, found.group(2), found.group(3), parse_regs(found.group(4) or ""))
        elif (found := _FULL.match(line)) is not None:
            current.update(parse_regs(found.group(2)))  # the registers it scratched
        elif line.startswith("frame") or (line.startswith("R") and "=" in line):
            current = parse_regs(line)  # the state after "callee:" / "to caller at N:"
    return log


def parse_known(text: str) -> VerifierLog:
    """`parse_log`, refusing a log whose format this parser does not fully read: no
    instruction states, or not one state per instruction the log says it processed."""
    log = parse_log(text)
    first = next((line for line in text.splitlines() if line.strip()), "")[:80]
    if not log.visits:
        raise UsageError("the verifier's log has no instruction states this qstep can read "
                         f"(an unknown log format?); its first line: {first!r}")
    if log.processed is not None and log.processed != len(log.visits):
        raise UsageError(f"the verifier's log says it processed {log.processed} "
                         f"instructions, but {len(log.visits)} read as such: its format is "
                         "not one this qstep knows, so its states are not shown")
    return log


def _after(current: dict[int, RegState], code: str, text: str,
           tail: dict[int, RegState]) -> None:
    """The registers after an instruction: those its tail lists; a register it wrote
    that the tail leaves out has no known state (7.x prints only live registers)."""
    written = _WRITES.match(text)
    if code == CALL_CODE:
        for reg in range(6):  # helpers clobber r1-r5 and set r0
            current.pop(reg, None)
    elif written is not None:
        current.pop(int(written.group(1)), None)
    current.update(tail)


def path_to(log: VerifierLog, path: Path) -> list[Visit]:
    """Every visit from the program's entry to the end of ``path``."""
    visits = list(path.visits)
    while path.parent is not None:
        parent = log.paths[path.parent]
        visits = parent.visits[:path.branch_index + 1] + visits
        path = parent
    return visits


def is_conditional_jump(code: str) -> bool:
    """JMP/JMP32 classes, except ja (0x05), call (0x85) and exit (0x95)."""
    value = int(code, 16)
    return value & 0x07 in (0x05, 0x06) and value & 0xF0 not in (0x00, 0x80, 0x90)


def _pop_branch(log: VerifierLog, jumps: list[_Push], insn: int, target: int
                ) -> tuple[int, int] | None:
    """The pushed branch ``insn`` → ``target``: the newest jump at ``insn`` whose path
    did not itself go on to ``target`` (a jump whose outcome the verifier knew pushed
    nothing). Others stay: their branches come later."""
    for k in range(len(jumps) - 1, -1, -1):
        at, path, index, iterator = jumps[k]
        visits = log.paths[path].visits
        if at != insn or (not iterator and index + 1 < len(visits)
                          and visits[index + 1].insn == target):
            continue
        del jumps[k]
        return path, index
    return None


def _add(log: VerifierLog, visit: Visit) -> Visit:
    visit.seq, visit.index = len(log.visits), len(log.paths[visit.path].visits)
    log.visits.append(visit)
    log.by_insn.setdefault(visit.insn, []).append(visit)
    log.paths[visit.path].visits.append(visit)
    return visit
