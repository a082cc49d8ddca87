"""setBreakpoints, setFunctionBreakpoints, setInstructionBreakpoints: DAP breakpoints
as debugger breakpoints, and the filter that applies their conditions at a stop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qstep.dap.breakpoints import HitCondition, LogMessage, UserBreakpoint
from qstep.dap.probes import GuestProbes
from qstep.dap.state import DapState, Result
from qstep.debugger.engine import Breakpoint
from qstep.errors import QstepError


class BreakpointRequests:
    """The breakpoints a client set, by source file and by kind."""

    def __init__(self, state: DapState) -> None:
        self.s = state
        self.source_bps: dict[str, list[UserBreakpoint]] = {}
        self.kind_bps: dict[str, list[UserBreakpoint]] = {}  # function / instruction
        self.by_number: dict[int, UserBreakpoint] = {}
        self.next_bp_id = 1
        self.probes = GuestProbes(state)
        self.reported: dict[int, str] = {}  # DAP id -> the method its message named

    def req_setBreakpoints(self, args: dict[str, Any]) -> Result:
        path = str(args.get("source", {}).get("path") or args.get("source", {}).get("name"))
        self._drop(self.source_bps.pop(path, []))
        made, out = [], []
        for spec in args.get("breakpoints", []):
            location = f"{Path(path).name}:{int(spec['line'])}"
            bp, body = self._make(location, spec)
            made += [bp] if bp else []
            out.append(body | {"source": {"path": path}, "line": spec["line"]})
        self.source_bps[path] = made
        return {"breakpoints": self._methods(made, out)}, None

    def req_setFunctionBreakpoints(self, args: dict[str, Any]) -> Result:
        return self._set_kind("function", [(b["name"], b) for b in args.get("breakpoints", [])])

    def req_setInstructionBreakpoints(self, args: dict[str, Any]) -> Result:
        specs = []
        for b in args.get("breakpoints", []):
            ref, offset = b["instructionReference"], int(b.get("offset", 0))
            specs.append((instruction_location(ref, offset), b))
        return self._set_kind("instruction", specs)

    def _set_kind(self, kind: str, specs: list[tuple[str, dict[str, Any]]]) -> Result:
        self._drop(self.kind_bps.pop(kind, []))
        made, out = [], []
        for location, spec in specs:
            bp, body = self._make(location, spec)
            made += [bp] if bp else []
            out.append(body)
        self.kind_bps[kind] = made
        return {"breakpoints": self._methods(made, out)}, None

    def all(self) -> list[UserBreakpoint]:
        """Every breakpoint the client has set, in the order they were made."""
        bps = [bp for group in (*self.source_bps.values(), *self.kind_bps.values())
               for bp in group]
        return sorted(bps, key=lambda bp: bp.id)

    def _methods(self, made: list[UserBreakpoint], out: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
        """Attach probes where possible (between runs); each body's message names the way
        its breakpoint is evaluated."""
        self.probes.dirty = True
        self.sync(announce=False)
        by_id = {bp.id: bp for bp in made}
        for body in out:
            bp = by_id.get(body["id"])
            if bp is not None:
                body["message"] = self.reported[bp.id] = self.probes.method(bp)
        return out

    def sync(self, announce: bool = True) -> None:
        """Between runs: probes for the breakpoints that can have one; a ``breakpoint``
        event for each whose way of evaluation changed."""
        bps = self.all()
        self.probes.sync(bps, lambda bp: bp.numbers)
        for bp in bps if announce else []:
            method = self.probes.method(bp)
            if self.reported.get(bp.id) != method:
                self.reported[bp.id] = method
                self.s.send("breakpoint", {"reason": "changed", "breakpoint": {
                    "id": bp.id, "verified": True, "message": method}})

    def _make(self, location: str, spec: dict[str, Any]) -> tuple[UserBreakpoint | None,
                                                                  dict[str, Any]]:
        """One DAP breakpoint: verified with its real line, or unverified with the reason."""
        try:
            bp = UserBreakpoint(
                self.next_bp_id, condition=spec.get("condition") or None,
                hit_condition=(HitCondition.parse(spec["hitCondition"])
                               if spec.get("hitCondition") else None),
                log=LogMessage.parse(spec["logMessage"]) if spec.get("logMessage") else None)
            engine = [self.s.debugger().add_breakpoint(location)]  # one, with every location
        except QstepError as err:
            self.next_bp_id += 1
            return None, {"id": self.next_bp_id - 1, "verified": False, "message": str(err),
                          "reason": "failed"}
        self.next_bp_id += 1
        bp.numbers = [e.number for e in engine]
        for number in bp.numbers:
            self.by_number[number] = bp
        return bp, {"id": bp.id, "verified": True, **self.s.where(engine[0].site)}

    def _drop(self, bps: list[UserBreakpoint]) -> None:
        dbg = self.s.dbg
        for bp in bps:
            for number in bp.numbers:
                self.by_number.pop(number, None)
                if dbg is not None and number in dbg.breakpoints:
                    dbg.delete_breakpoint(number)

    def hit_ids(self) -> list[int]:
        """The DAP ids of the breakpoints at the current stop."""
        dbg = self.s.debugger()
        return sorted({self.by_number[b.number].id for b in dbg.breakpoints.values()
                       if b.addr == dbg.pc() and b.number in self.by_number})

    def stops(self, engine: list[Breakpoint]) -> bool:
        """The debugger's breakpoint filter: conditions and hit counts; logpoints print."""
        stops = False
        here = [self.by_number[b.number] for b in engine if b.number in self.by_number]
        for bp in dict.fromkeys(here):
            if not bp.acts(self._truth):
                continue
            if bp.log is not None:
                self.s.output(bp.log.render(self._print) + "\n")
            else:
                stops = True
        return stops or not here

    def _truth(self, expr: str) -> bool:
        data = self.s.command_set().cmd_print(expr).data
        return truthy(data.get("value"))

    def _print(self, expr: str) -> str:
        return self.s.command_set().cmd_print(expr).text


def truthy(value: object) -> bool:
    """A condition's value: numbers, and byte strings (hex) with a non-zero byte."""
    if isinstance(value, str):
        return any(c not in "0 " for c in value)
    return bool(value)


def instruction_location(ref: str, offset: int) -> str:
    """An instruction breakpoint's location: a JIT address, ``#N``, or ``func:offset``."""
    ref = ref.strip()
    if ref.startswith("#"):
        return f"#{int(ref[1:], 0) + offset}"
    if re.fullmatch(r"0x[0-9a-fA-F]+", ref):
        return f"*{int(ref, 16) + offset:#x}"
    func, sep, off = ref.rpartition(":")
    if sep and off.isdigit():
        return f"{func}:{int(off) + offset}"
    return ref
