"""A rejection as a walk through the source: the path the verifier took to the error,
with its decision and the registers it compared at every conditional branch."""

from __future__ import annotations

import re
from collections.abc import Callable

from qstep.verifier.log import Visit, parse_log, path_to

_GOTO = re.compile(r"^\(([0-9a-f]{2})\) if (\w+) \S+ (\w+) goto pc([+-]\d+)")

SourceOf = Callable[[int], str | None]  # insn → "text  @ file:line"


def failing_path(log_text: str, source_of: SourceOf) -> list[str]:
    """Source lines of the path that ended in the rejection, oldest first."""
    log = parse_log(log_text)
    ended = [p for p in log.paths if p.visits]
    if not ended:
        return []
    visits = path_to(log, ended[-1])
    lines: list[str] = []
    last_source: str | None = None
    for n, visit in enumerate(visits):
        source = source_of(visit.insn) or f"insn {visit.insn}"
        if source != last_source:
            lines.append(f"  {source}")
            last_source = source
        following = visits[n + 1].insn if n + 1 < len(visits) else None
        decision = branch_text(visit, following)
        if decision:
            lines.append(f"      insn {visit.insn}: {decision}")
    if visits:
        lines.append(f"      insn {visits[-1].insn}: {visits[-1].text}  <- rejected here")
    return lines


def branch_text(visit: Visit, following: int | None) -> str:
    """``if r3 > r2 goto pc+1``: taken or not, with the two registers' states."""
    found = _GOTO.match(visit.text)
    if found is None or following is None:
        return ""
    target = visit.insn + 1 + int(found.group(4))
    taken = "jumped" if following == target else "fell through"
    states = []
    for operand in (found.group(2), found.group(3)):
        if operand.startswith(("r", "w")) and operand[1:].isdigit():
            state = visit.regs.get(int(operand[1:]))
            states.append(f"{operand}={state.describe() if state else '?'}")
    compared = f" ({', '.join(states)})" if states else ""
    return f"{visit.text.split(') ', 1)[-1]}: {taken}{compared}"
