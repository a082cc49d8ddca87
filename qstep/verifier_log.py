"""Annotate a verifier log with the program's real source lines.

qstep loads programs with a synthetic line_info (one record per instruction), so
the source comments the kernel prints (``; ...``) would be wrong. They are
dropped, and each instruction line gets the source line from the object's own
line info instead.

From 7.3 the log ends in a structured report (``Verification failed: ...``,
``Reason:``, ``At:``, ``Causal path:``, ``Suggestion:``) whose locations
``FUNC @ FILE:LINE:COL`` come from that synthetic line info (line_col is the
instruction index); they are rewritten to the real source, and its empty
"Source context" lines are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

INSN_LINE = re.compile(r"^(\d+): \(")
REPORT_START = "Verification failed:"
REPORT_LOCATION = re.compile(r"^(\s*)(\S+) @ \S+:(\d+):(\d+)$")
EMPTY_CONTEXT = re.compile(r"^\s*(\d+ \| \.\.\.)?$")

SourceOf = Callable[[int], str | None]


def annotate(log: str, source_of: SourceOf) -> str:
    """Return the log with kernel source comments replaced by real ones."""
    lines = log.splitlines()
    split = next((i for i, ln in enumerate(lines) if ln.startswith(REPORT_START)), len(lines))
    return "\n".join(_annotate_insns(lines[:split], source_of)
                     + _annotate_report(lines[split:], source_of))


def _annotate_insns(lines: list[str], source_of: SourceOf) -> list[str]:
    out: list[str] = []
    last: str | None = None
    for line in lines:
        if line.startswith("; "):
            continue
        match = INSN_LINE.match(line)
        if match:
            text = source_of(int(match.group(1)))
            if text is not None and text != last:
                out.append(f"; {text}")
                last = text
        out.append(line)
    return out


def _annotate_report(lines: list[str], source_of: SourceOf) -> list[str]:
    out: list[str] = []
    in_context = False
    for line in lines:
        match = REPORT_LOCATION.match(line)
        if match:
            indent, func, row, col = match.groups()
            index = (int(row) << 10) + int(col)
            out.append(f"{indent}{func} insn {index}: {source_of(index) or '(no source line)'}")
            continue
        if line.strip() in ("Source context:", "Instruction context:"):
            in_context = line.strip() == "Source context:"
        if in_context and EMPTY_CONTEXT.match(line):
            continue
        out.append(line)
    return out


def last_error_lines(log: str, count: int = 3) -> list[str]:
    """The verifier's own complaint: the last non-empty, non-statistics lines.

    The 7.3+ report after the complaint (reason, causal path, suggestion) is not
    part of it.
    """
    lines = [ln for ln in log.splitlines() if ln.strip()]
    lines = lines[:next((i for i, ln in enumerate(lines) if ln.startswith(REPORT_START)),
                        len(lines))]
    lines = [ln for ln in lines
             if not ln.startswith(("processed ", "verification time", "stack depth"))]
    return lines[-count:]
