"""``why EXPR`` in a reversible session: who wrote these bytes before this point.

EXPR is a C object (``tkey.remote_ipv6``: its address and size from DWARF, as
``watch`` takes them), ``mem(ADDR, SIZE)`` or an address (8 bytes). The answer
lists every recorded store to those bytes from the run's start to the current
position (live, or in the past), oldest first; when none did, that they were never
written on this path.
"""

from __future__ import annotations

import re
from dataclasses import replace

from qstep.debugger.env import StoppedEnv
from qstep.debugger.reverse import ReversibleDebugger
from qstep.debugger.source_commands import SourceCommands
from qstep.dwarf.format import format_value
from qstep.errors import QstepError, UsageError
from qstep.expr import evaluate
from qstep.recorder.why import WhyAnswer, address_and_size, address_value, history

USAGE = "why EXPR: a C object (why tkey.remote_ipv6), mem(ADDR, SIZE) or ADDR"


def why_here(dbg: ReversibleDebugger, source: SourceCommands | None, text: str) -> WhyAnswer:
    """The write history of ``text``'s bytes before the debugger's current position."""
    text = text.strip()
    if not text:
        raise UsageError(USAGE)
    rec, pos = dbg.position()
    value = source.resolve(text) if source is not None else None
    if value is None:  # no C: an address expression over the registers
        expr, size = address_and_size(text)
        addr = address_value(evaluate(expr, StoppedEnv(dbg)))
        return history(rec, pos).answer(rec, pos, addr, size, _read(dbg, addr, size))
    if value.address is None:
        raise UsageError(f"{text} is not in memory here (a register or a constant); why "
                         "follows stores to memory")
    data = value.data if value.available else None
    answer = history(rec, pos).answer(rec, pos, value.address, len(value.data), data)
    names = re.findall(r"[A-Za-z_]\w*", text)  # the last one hints at IPs, MACs
    shown = format_value(value, names[-1] if names else "") if value.available else ""
    return replace(answer, name=text, shown=shown)


def _read(dbg: ReversibleDebugger, addr: int, size: int) -> bytes | None:
    try:
        return dbg.read_memory(addr, size)
    except QstepError:
        return None
