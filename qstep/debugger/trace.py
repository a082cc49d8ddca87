"""Trace mode: run the program once, one BPF instruction at a time, recording each.

A record names the instruction that executed, its source line, and the BPF
registers after it. Pointers are shown relative to what they point into
(`qstep.debugger.provenance`: ``ctx``, ``pkt+14``, ``map:stats[5]+8``, ``fp-0x28``),
so the same input gives the same trace, byte for byte, across boots.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qstep.debugger.defined import DefinedRegs
from qstep.debugger.engine import Debugger, Event
from qstep.debugger.provenance import Provenance
from qstep.debugger.tailcall import LEFT, TailCalled
from qstep.loaded import InsnSite, LoadedProgram

Shown = int | str


@dataclass(frozen=True)
class TraceRecord:
    """One executed instruction and the defined registers after it.

    ``regs_after`` holds raw values (None: undefined; the whole tuple None: the
    program returned); ``shown`` the same registers as written for people and
    comparisons (pointers relative to their base).
    """

    step: int
    site: InsnSite
    regs_after: tuple[int | None, ...] | None
    retval: int | None = None
    shown: tuple[Shown | None, ...] | None = None
    left: str = ""  # how the program left its code instead of returning (a tail call)

    def as_json(self, raw: bool = False) -> dict[str, Any]:
        """JSON form: registers as ``shown``, or their raw values with ``raw``."""
        s = self.site
        data: dict[str, Any] = {
            "step": self.step, "insn": s.index, "function": s.function.name,
            "offset": s.index - s.function.start_insn,
            "file": s.source.file.rsplit("/", 1)[-1] if s.source else None,
            "line": s.source.line if s.source else None,
        }
        values = self.regs_after if raw or self.shown is None else self.shown
        if values is not None:
            data["regs"] = {f"r{n}": v for n, v in enumerate(values) if v is not None}
        if self.retval is not None:
            data["retval"] = self.retval
        if self.left:
            data["left"] = self.left
        return data


def trace_run(dbg: Debugger, max_steps: int = 1_000_000) -> Iterator[TraceRecord | Event]:
    """Stop at the entry, then step every instruction; the final item is the exit event."""
    main = dbg.prog.functions[0]
    dbg.add_breakpoint(f"#{main.start_insn}", temporary=True)
    event = dbg.run()
    defined = DefinedRegs()
    before = dbg.regs().values if event.kind == "stopped" else ()
    provenance = Provenance(dbg.prog, before, dbg.read_memory) if before else None
    step = 0
    while event.kind == "stopped" and step < max_steps and provenance is not None:
        site = event.site
        assert site is not None
        step += 1
        try:
            event = dbg.stepi()
        except TailCalled:
            event = dbg.cont()  # the rest of the run is the tail-called program's
            yield TraceRecord(step, site, None, event.retval, left=LEFT)
            break
        if event.kind == "exited":
            yield TraceRecord(step, site, None, event.retval)
            break
        args = callback_args(dbg.prog, site, event.site)
        live = defined.after(site.insn, args)
        values = dbg.regs().values
        provenance.step(site, before, values, args is not None)
        before = values
        regs = tuple(v if n in live else None for n, v in enumerate(values))
        yield TraceRecord(step, site, regs, shown=shown_regs(regs, provenance))
    yield event


def callback_args(prog: LoadedProgram, site: InsnSite,
                  following: InsnSite | None) -> frozenset[int] | None:
    """When ``following`` is a function entry that ``site`` (a helper call, or a
    callback's exit) reaches through a helper calling back into the program: the
    callback's argument registers (its BTF prototype's parameters), else None."""
    ins = site.insn
    if following is None or not (ins.is_exit or (ins.is_call and not ins.is_pseudo_call)):
        return None
    func = next((f for f in prog.functions if f.start_insn == following.index), None)
    if func is None:
        return None
    btf_func = prog.btf.find_by_name(func.name, "FUNC")
    if btf_func is None:
        return frozenset(range(1, 6))
    return frozenset(range(1, 1 + len(prog.btf.type_by_id(btf_func.ref).params)))


def shown_regs(regs: tuple[int | None, ...], provenance: Provenance) -> tuple[Shown | None, ...]:
    """Defined registers as shown: relative to their base, else stack-relative, else raw."""
    fp = provenance.base_of(10)
    frame_base = fp.addr if fp is not None else None
    out: list[Shown | None] = []
    for n, v in enumerate(regs):
        if v is None:
            out.append(None)
            continue
        described = provenance.describe(n, v)
        out.append(stack_relative(described, frame_base) if isinstance(described, int)
                   else described)
    return tuple(out)


STACK_SPAN = 16 * 512  # deepest BPF call chain's stack, generously


def stack_relative(value: int, frame_base: int | None) -> int | str:
    """``value`` unchanged, or as ``fp±offset`` when it points into the BPF stack."""
    if frame_base is None or not frame_base - STACK_SPAN <= value <= frame_base + 8:
        return value
    delta = value - frame_base
    return f"fp-{-delta:#x}" if delta < 0 else f"fp+{delta:#x}"


def format_record(rec: TraceRecord, raw: bool = False) -> str:
    """One line: step, instruction, function:offset, source line, registers after."""
    s = rec.site
    where = f"{s.function.name}:{s.index - s.function.start_insn}"
    line = s.source.short() if s.source else "?"
    if rec.regs_after is None:
        end = rec.left or "exit"
        return f"{rec.step:6} {s.index:5} {where:<24} {line:<16} {end}, retval {rec.retval}"
    values = rec.regs_after if raw or rec.shown is None else rec.shown
    regs = " ".join(f"r{n}={v:#x}" if isinstance(v, int) else f"r{n}={v}"
                    for n, v in enumerate(values) if v is not None)
    return f"{rec.step:6} {s.index:5} {where:<24} {line:<16} {regs}"
