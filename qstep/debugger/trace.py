"""Trace mode: run the program once, one BPF instruction at a time, recording each.

A record names the instruction that executed, its source line, and the BPF
registers after it. The same input gives the same trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qstep.debugger.defined import DefinedRegs
from qstep.debugger.engine import Debugger, Event
from qstep.loaded import InsnSite


@dataclass(frozen=True)
class TraceRecord:
    step: int
    site: InsnSite
    regs_after: tuple[int | None, ...] | None  # None: program returned; None entry: undefined
    retval: int | None = None

    def as_json(self, frame_base: int | None = None) -> dict[str, Any]:
        """JSON form; with ``frame_base`` (r10 at the program's entry), values that
        point into the BPF stack are written ``fp-0x28``, relative to it, because
        the kernel stack's absolute address differs between otherwise identical runs.
        """
        s = self.site
        data: dict[str, Any] = {
            "step": self.step, "insn": s.index, "function": s.function.name,
            "offset": s.index - s.function.start_insn,
            "file": s.source.file.rsplit("/", 1)[-1] if s.source else None,
            "line": s.source.line if s.source else None,
        }
        if self.regs_after is not None:
            data["regs"] = {f"r{n}": stack_relative(v, frame_base)
                            for n, v in enumerate(self.regs_after) if v is not None}
        if self.retval is not None:
            data["retval"] = self.retval
        return data


def trace_run(dbg: Debugger, max_steps: int = 1_000_000) -> Iterator[TraceRecord | Event]:
    """Stop at the entry, then step every instruction; the final item is the exit event."""
    main = dbg.prog.functions[0]
    dbg.add_breakpoint(f"#{main.start_insn}", temporary=True)
    event = dbg.run()
    defined = DefinedRegs()
    step = 0
    while event.kind == "stopped" and step < max_steps:
        site = event.site
        assert site is not None
        event = dbg.stepi()
        step += 1
        if event.kind == "exited":
            yield TraceRecord(step, site, None, event.retval)
            break
        live = defined.after(site.insn)
        values = dbg.regs().values
        yield TraceRecord(step, site, tuple(v if n in live else None
                                            for n, v in enumerate(values)))
    yield event


STACK_SPAN = 16 * 512  # deepest BPF call chain's stack, generously


def stack_relative(value: int, frame_base: int | None) -> int | str:
    """``value`` unchanged, or as ``fp±offset`` when it points into the BPF stack."""
    if frame_base is None or not frame_base - STACK_SPAN <= value <= frame_base + 8:
        return value
    delta = value - frame_base
    return f"fp-{-delta:#x}" if delta < 0 else f"fp+{delta:#x}"


def format_record(rec: TraceRecord) -> str:
    s = rec.site
    where = f"{s.function.name}:{s.index - s.function.start_insn}"
    line = s.source.short() if s.source else "?"
    if rec.regs_after is None:
        return f"{rec.step:6} {s.index:5} {where:<24} {line:<16} exit, retval {rec.retval}"
    regs = " ".join(f"r{n}={v:#x}" for n, v in enumerate(rec.regs_after) if v is not None)
    return f"{rec.step:6} {s.index:5} {where:<24} {line:<16} {regs}"
