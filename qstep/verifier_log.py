"""Annotate a verifier log with the program's real source lines.

qstep loads programs with a synthetic line_info (one record per instruction), so
the source comments the kernel prints (``; ...``) would be wrong. They are
dropped, and each instruction line gets the source line from the object's own
line info instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

INSN_LINE = re.compile(r"^(\d+): \(")

SourceOf = Callable[[int], str | None]


def annotate(log: str, source_of: SourceOf) -> str:
    """Return the log with kernel source comments replaced by real ones."""
    out: list[str] = []
    last: str | None = None
    for line in log.splitlines():
        if line.startswith("; "):
            continue
        match = INSN_LINE.match(line)
        if match:
            text = source_of(int(match.group(1)))
            if text is not None and text != last:
                out.append(f"; {text}")
                last = text
        out.append(line)
    return "\n".join(out)


def last_error_lines(log: str, count: int = 3) -> list[str]:
    """The verifier's own complaint: the last non-empty, non-statistics lines."""
    lines = [ln for ln in log.splitlines() if ln.strip()
             and not ln.startswith(("processed ", "verification time", "stack depth"))]
    return lines[-count:]
