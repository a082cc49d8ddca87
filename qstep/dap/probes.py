"""Conditional breakpoints, hit conditions and logpoints as in-guest probes.

As ``qstep inspect`` does: each such breakpoint becomes a BPF probe program attached
at the JIT address of its instructions (a hardware execute breakpoint in the guest),
which evaluates the condition over registers, memory and C variables (lowered at
that instruction), counts hits and applies the hit condition itself. A false
condition costs one probe run, never a VM stop; a logpoint writes a record that is
read after the packet's run; a breakpoint that stops calls the helper the host has a
breakpoint on, and the debugger then stops before the probed instruction
(``Debugger.stop_before``).

Beyond what probes can do, a breakpoint falls back, as ``inspect`` does, to a host
breakpoint whose condition the host evaluates: more distinct instructions than the
CPU's debug registers, an expression a probe cannot compute, an instruction a host
breakpoint also stops at (the two cannot share one), or several stopping
breakpoints at one instruction. Probes are attached between packet runs (the agent
cannot answer while the program is stopped): a breakpoint set during a run is
evaluated on the host until that run ends. Each breakpoint's ``message`` says which.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qstep.bpf.uapi import MapType
from qstep.commands.inspect import map_value_text, typed_text
from qstep.dap.breakpoints import UserBreakpoint
from qstep.dap.state import DapState
from qstep.debugger.engine import Event
from qstep.debugger.jitframe import layout_of
from qstep.dwarf.scope import InsnScope
from qstep.dwarf.types import CType
from qstep.errors import QstepError, UsageError
from qstep.expr.ast import Expr, Str
from qstep.expr.parser import parse_expression
from qstep.loaded import InsnSite
from qstep.probe.codegen import COND_TRUE, MapRef, ProbeTarget, compile_probe
from qstep.probe.cspec import item_types, lower_spec
from qstep.probe.inspector import (
    HW_SLOTS,
    RINGBUF_BYTES,
    STOP_HELPER,
    Probe,
    ProbeSite,
    assign_modes,
    probe_regs,
    program_maps,
)
from qstep.probe.records import MapValue, decode_record
from qstep.probe.spec import Action, Location, Spec

MAX_PROBE_IDS = 64
COUNTERS = ("reached", "condition_true", "skipped", "written", "dropped", "stops")


def probe_spec(bp: UserBreakpoint, where: str) -> Spec:
    """The inspect spec a DAP breakpoint asks for: stop, or print its log message."""
    condition = parse_expression(bp.condition) if bp.condition else None
    if bp.log is None:
        return Spec(Location("func", where), Action(0, (), True), condition)
    items: list[Expr] = [parse_expression(text) if is_expr else Str(text.encode())
                         for text, is_expr in bp.log.parts]
    return Spec(Location("func", where), Action(0, tuple(items), False), condition)


def value_text(value: int | bytes | MapValue, ctype: CType | None, item: Expr,
               state: DapState) -> str:
    """A logged value as the debugger's ``print`` shows it."""
    if isinstance(value, MapValue):
        assert state.prog is not None
        return map_value_text(value, state.prog)
    if ctype is not None:
        return typed_text(value, ctype, item)
    if isinstance(value, bytes):
        return value.hex(" ")
    signed = value - (1 << 64) if value >> 63 else value
    return f"{value:#x} ({value})" + (f" [{signed}]" if signed != value else "")


@dataclass
class GuestProbe:
    """One breakpoint's probe: the inspect ``Probe`` (its locations) and its state."""

    bp: UserBreakpoint
    probe: Probe
    types: tuple[CType | None, ...] = ()
    handles: list[int] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def stops(self) -> bool:
        return self.bp.log is None


class GuestProbes:
    """The probes of a session's breakpoints: planned, attached, drained."""

    def __init__(self, state: DapState) -> None:
        self.s = state
        self.attached: dict[int, GuestProbe] = {}  # by DAP breakpoint id
        self.methods: dict[int, str] = {}  # DAP breakpoint id -> how it is evaluated
        self.events: MapRef | None = None
        self.counters: MapRef | None = None
        self.dirty = True

    def method(self, bp: UserBreakpoint) -> str:
        """How the breakpoint is evaluated now (the text its ``message`` carries)."""
        if bp.condition is None and bp.hit_condition is None and bp.log is None:
            return "host breakpoint"
        return self.methods.get(bp.id, "host breakpoint: probes are attached between "
                                "packet runs; evaluated on the host until then")

    # -- planning --------------------------------------------------------------
    def sync(self, bps: list[UserBreakpoint], engine_numbers: Callable[[UserBreakpoint],
                                                                        list[int]]) -> None:
        """Between runs: attach probes for the breakpoints that can have one, detach the
        others' and enable the host breakpoints of those that cannot."""
        dbg = self.s.debugger()
        if dbg.running_program or not self.dirty:
            return
        self.dirty = False
        dbg.detach()  # the guest runs (idle), so the agent answers
        plans = self._plan(bps)
        self._setup()
        for bp_id in [i for i, g in self.attached.items() if plans.get(i) is not g]:
            self._detach(self.attached.pop(bp_id))
        for bp in bps:
            plan = plans.get(bp.id)
            if plan is not None and bp.id not in self.attached:
                self._attach(plan)
            guest = bp.id in self.attached
            for number in engine_numbers(bp):
                if number in dbg.breakpoints:
                    dbg.set_enabled(number, not guest)

    def _plan(self, bps: list[UserBreakpoint]) -> dict[int, GuestProbe]:
        """The breakpoints that get a probe; ``methods`` says why the others do not."""
        dbg = self.s.debugger()
        asking = [bp for bp in bps if bp.condition or bp.hit_condition or bp.log]
        asking_numbers = {n for bp in asking for n in bp.numbers}
        host_addrs = {a for b in dbg.breakpoints.values() if b.number not in asking_numbers
                      for a in b.armed()}
        candidates: list[GuestProbe] = []
        refused: dict[int, str] = {}
        for bp in asking:
            try:
                candidates.append(self._compile(bp, host_addrs))
            except QstepError as err:
                refused[bp.id] = re.sub(r"^inspect: spec \d+: ", "", str(err))
        self._one_stop_per_address(candidates, refused)
        fitting = [c for c in candidates if c.bp.id not in refused]
        assign_modes([c.probe for c in fitting])
        plans = {}
        for c in fitting:
            if c.probe.mode == "host":
                refused[c.bp.id] = c.probe.note
                continue
            old = self.attached.get(c.bp.id)
            plans[c.bp.id] = old if old is not None and old.bp is c.bp else c
            if plans[c.bp.id] is c:
                self.methods.pop(c.bp.id, None)  # set when attached
        for bp_id, why in refused.items():
            self.methods[bp_id] = f"host breakpoint: {why}"
        return plans

    def _compile(self, bp: UserBreakpoint, host_addrs: set[int]) -> GuestProbe:
        """The breakpoint's probe, compiled at each of its instructions (errors: why not)."""
        dbg = self.s.debugger()
        sites = [loc.site for n in bp.numbers if n in dbg.breakpoints
                 for loc in dbg.breakpoints[n].locations]
        spec = probe_spec(bp, sites[0].function.name if sites else "?")
        locations = [ProbeSite(site, spec, 0) for site in sites]
        probe = Probe(bp.id, spec, locations)
        shared = [loc for loc in locations if loc.addr in host_addrs]
        if shared:
            raise UsageError(f"a breakpoint without condition stops at instruction "
                             f"{shared[0].site.index} too (one instruction cannot have both)")
        types: tuple[CType | None, ...] = ()
        for loc in locations:
            if layout_of(dbg.prog, loc.site.function).private_stack is not None:
                raise UsageError(f"{loc.site.function.name} runs on a private stack, which "
                                 "in-guest probes do not read yet")
            scope = self._scope(loc.site)
            if scope is not None:
                loc.spec = lower_spec(spec, scope, bp.id)
                types = types or item_types(spec, scope)
            compile_probe(loc.spec, self._target(0, loc, bp))  # can a probe do it?
        return GuestProbe(bp, probe, types)

    def _one_stop_per_address(self, candidates: list[GuestProbe],
                              refused: dict[int, str]) -> None:
        """Several stopping breakpoints at one instruction: the host evaluates them (a
        probe's stop does not say which probe asked for it)."""
        seen: dict[int, int] = {}
        for c in candidates:
            for addr in c.probe.addrs if c.stops else []:
                seen[addr] = seen.get(addr, 0) + 1
        for c in candidates:
            if c.stops and any(seen[a] > 1 for a in c.probe.addrs):
                refused[c.bp.id] = "another conditional breakpoint stops at the same instruction"

    def _scope(self, site: InsnSite) -> InsnScope | None:
        view = self.s.view
        return None if view is None else InsnScope(view.obj, view.model, view.dbg.prog, site)

    def _target(self, probe_id: int, loc: ProbeSite, bp: UserBreakpoint) -> ProbeTarget:
        events = self.events or MapRef("qstep_events", 0, MapType.RINGBUF, 0, 0, RINGBUF_BYTES)
        counters = self.counters or MapRef("qstep_counters", 0, MapType.ARRAY, 4, 8, 512)
        hits = bp.hit_condition
        return ProbeTarget(probe_id, loc.at_entry, events, counters,
                           program_maps(self.s.debugger().prog), record_id=probe_id,
                           hit_filter=(hits.op, hits.count) if hits else None)

    # -- in the guest ----------------------------------------------------------
    def _setup(self) -> None:
        if self.events is not None:
            return
        session = self.s.session
        assert session is not None
        channel = session.probe_setup(RINGBUF_BYTES)
        self.events = MapRef("qstep_events", channel.events_map_id, MapType.RINGBUF,
                             0, 0, RINGBUF_BYTES)
        self.counters = MapRef("qstep_counters", channel.counters_map_id, MapType.ARRAY,
                               4, 8, 512)
        self.s.debugger().kernel_breakpoints.add(session.kallsyms(STOP_HELPER))

    def _free_id(self) -> int:
        used = {g.probe.probe_id for g in self.attached.values()}
        free = next((i for i in range(MAX_PROBE_IDS) if i not in used), None)
        if free is None:
            raise UsageError(f"more than {MAX_PROBE_IDS} breakpoints with probes")
        return free

    def _attach(self, plan: GuestProbe) -> None:
        session = self.s.session
        assert session is not None and self.counters is not None
        try:
            plan.probe.number = self._free_id() + 1  # probe_id = number - 1
            probe_id = plan.probe.probe_id
            for k in range(8):  # hits counted on the host so far carry over
                value = plan.bp.hits if k == COND_TRUE else 0
                session.update_map_id(self.counters.map_id, struct.pack("<I", 8 * probe_id + k),
                                      struct.pack("<Q", value))
            for loc in plan.probe.locations:
                loc.record_id = probe_id
                loc.compiled = compile_probe(loc.spec, self._target(probe_id, loc, plan.bp))
                refs = b"".join(struct.pack("<I", i) for i in loc.compiled.map_refs)
                attached = session.probe_attach(probe_id, loc.addr, loc.compiled.insns, refs)
                plan.handles.append(attached.handle)
                plan.probe.attached = attached.attached
        except QstepError as err:
            self._detach(plan)
            self.methods[plan.bp.id] = f"host breakpoint: the probe could not be attached: {err}"
            return
        self.attached[plan.bp.id] = plan
        sites = ", ".join(f"{loc.addr:#x}" for loc in plan.probe.locations)
        self.methods[plan.bp.id] = (f"in-guest probe ({plan.probe.attached} at {sites}): "
                                    "the guest evaluates it; only a hit that "
                                    f"{'stops' if plan.stops else 'logs'} costs more")

    def _detach(self, plan: GuestProbe) -> None:
        session = self.s.session
        assert session is not None
        for handle in plan.handles:
            session.probe_detach(handle)
        plan.handles.clear()

    # -- at run time -----------------------------------------------------------
    def hand_over(self) -> tuple[Event, list[int]]:
        """The VM stopped in the stop helper: stop before the probed instruction if one of
        our stopping probes asked; else continue. The event and the breakpoint ids."""
        dbg = self.s.debugger()
        regs = probe_regs(dbg)
        found = next((g for g in self.attached.values() if g.stops
                      and regs.rip in g.probe.addrs), None)
        if found is None:
            return dbg.cont(), []
        return dbg.stop_before(regs), [found.bp.id]

    def drain(self) -> None:
        """After a run: print the logpoints' records as output, read the counters."""
        if self.events is None or not self.attached:
            return
        session = self.s.session
        assert session is not None
        by_id = {g.probe.probe_id: g for g in self.attached.values()}
        for blob in session.probe_drain().records:
            found = by_id.get(int.from_bytes(blob[:4], "little"))
            if found is None or found.stops:
                continue
            loc = found.probe.locations[0]
            assert loc.compiled is not None
            hit = decode_record(blob, loc.compiled.layout)
            self.s.output(self._message(found, hit.values, hit.failed) + "\n")
        self._read_counters()

    def _message(self, g: GuestProbe, values: list[int | bytes | MapValue],
                 failed: Callable[[int], bool]) -> str:
        out = []
        items = g.probe.spec.action.prints
        for i, (item, value) in enumerate(zip(items, values, strict=True)):
            if isinstance(item, Str):
                out.append(item.value.decode(errors="replace"))
            elif failed(i):
                out.append("<unreadable>")
            else:
                ctype = g.types[i] if i < len(g.types) else None
                out.append(value_text(value, ctype, item, self.s))
        return "".join(out)

    def _read_counters(self) -> None:
        session = self.s.session
        assert session is not None and self.counters is not None
        table = {int.from_bytes(k, "little"): int.from_bytes(v, "little")
                 for k, v in session.dump_map_id(self.counters.map_id).entries}
        for g in self.attached.values():
            base = 8 * g.probe.probe_id
            g.counters = {name: table.get(base + k, 0) for k, name in enumerate(COUNTERS)}
            g.bp.hits = g.counters["condition_true"]

    def summary(self) -> list[dict[str, Any]]:
        """Each probe's counters (reached, condition_true, skipped, ...)."""
        return [{"breakpoint": i, **g.counters} for i, g in sorted(self.attached.items())]


__all__ = ["HW_SLOTS", "GuestProbes", "probe_spec"]
