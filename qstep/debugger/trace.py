"""Trace mode: run the program once, one BPF instruction at a time, recording each.

A record names the instruction that executed, its source line, and the BPF
registers after it. The same input gives the same trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qstep.debugger.engine import Debugger, Event
from qstep.loaded import InsnSite


@dataclass(frozen=True)
class TraceRecord:
    step: int
    site: InsnSite
    regs_after: tuple[int, ...] | None  # None when the program has returned
    retval: int | None = None

    def as_json(self) -> dict[str, Any]:
        s = self.site
        data: dict[str, Any] = {
            "step": self.step, "insn": s.index, "function": s.function.name,
            "offset": s.index - s.function.start_insn,
            "file": s.source.file.rsplit("/", 1)[-1] if s.source else None,
            "line": s.source.line if s.source else None,
        }
        if self.regs_after is not None:
            data["regs"] = {f"r{n}": v for n, v in enumerate(self.regs_after)}
        if self.retval is not None:
            data["retval"] = self.retval
        return data


def trace_run(dbg: Debugger, max_steps: int = 1_000_000) -> Iterator[TraceRecord | Event]:
    """Stop at the entry, then step every instruction; the final item is the exit event."""
    main = dbg.prog.functions[0]
    dbg.add_breakpoint(f"#{main.start_insn}", temporary=True)
    event = dbg.run()
    step = 0
    while event.kind == "stopped" and step < max_steps:
        site = event.site
        assert site is not None
        event = dbg.stepi()
        step += 1
        if event.kind == "exited":
            yield TraceRecord(step, site, None, event.retval)
            break
        yield TraceRecord(step, site, dbg.regs().values)
    yield event


def format_record(rec: TraceRecord) -> str:
    s = rec.site
    where = f"{s.function.name}:{s.index - s.function.start_insn}"
    line = s.source.short() if s.source else "?"
    if rec.regs_after is None:
        return f"{rec.step:6} {s.index:5} {where:<24} {line:<16} exit, retval {rec.retval}"
    regs = " ".join(f"r{n}={v:#x}" for n, v in enumerate(rec.regs_after))
    return f"{rec.step:6} {s.index:5} {where:<24} {line:<16} {regs}"
