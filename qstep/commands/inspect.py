"""``qstep inspect PROG.o SPEC...``: conditional print probes evaluated in the guest."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qstep.bpf.elf import BpfObject
from qstep.bpf.progtypes import retval_name
from qstep.commands.common import (
    SessionScope,
    add_input_options,
    add_program_options,
    add_vm_options,
    check_function_name,
    check_inputs,
    make_session,
    program_in_session,
    program_source,
    read_setup,
)
from qstep.commands.debugging import check_batch, run_batch
from qstep.commands.options import add_commands_option, add_json_option, add_repeat_option
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import Debugger, Event
from qstep.debugger.regs import BpfRegs
from qstep.debugger.repl import interactive_loop
from qstep.dwarf.corerelo import model_for
from qstep.dwarf.format import format_value as format_c_value
from qstep.dwarf.scope import InsnScope
from qstep.dwarf.types import CType
from qstep.dwarf.values import Value
from qstep.errors import UsageError
from qstep.expr.ast import Expr, Member, Name, Str
from qstep.expr.evaluate import format_value
from qstep.loaded import InsnSite, LoadedProgram
from qstep.probe.inspector import Hit, Inspector, Probe, StopHandler, literal_hint
from qstep.probe.records import MapValue
from qstep.probe.spec import Watch, parse_specs
from qstep.render import format_map_value
from qstep.session import FromObject
from qstep.userinput import read_packet


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("inspect", help="conditional breakpoints with print actions, run in "
                       "the guest: 'LOC [skip N] print ITEMS [if COND]'")
    add_program_options(p, value=False)
    p.add_argument("specs", nargs="+", metavar="SPEC",
                   help="e.g. 'process_packet:12 print $r1, mem($r2, 4) if $r3 == 1'")
    add_input_options(p, several_packets=True)
    add_repeat_option(p, "all their hits are kept (runs go in batches the ring buffer "
                      "holds)")
    p.add_argument("--sample", action="store_true",
                   help="run all repeats at once and let the ring buffer drop what does "
                   "not fit (faster; drops are counted and shown)")
    p.add_argument("--from-recording", action="store_true",
                   help="evaluate every spec from a recording of each run (QEMU 10's "
                   "recorder) instead of in-guest probes; without it, so are all of them when "
                   "there are more locations than the 4 hardware breakpoints")
    add_json_option(p, "JSON lines, one per hit, then a summary")
    add_commands_option(p, " when a 'stop' probe stops the program",
                        "without -ex a terminal gets the interactive debugger")
    add_vm_options(p)
    p.set_defaults(func=main)


@dataclass
class InspectOutcome:
    """What ``inspect`` shows: the probes' hits and counters, each run's retval."""

    inspector: Inspector
    prog: LoadedProgram
    retvals: list[int]

    def as_json(self) -> list[dict[str, Any]]:
        """``qstep inspect --json``'s lines: one per hit, then the summary (docs/json.md)."""
        return [*(hit_json(hit, self.prog) for hit in self.inspector.hits),
                summary_json(self.inspector, self.prog, self.retvals)]


def main(args: argparse.Namespace) -> int:
    out = inspect_program(args)
    emit(out, args.json)
    return 0


def inspect_program(args: argparse.Namespace, sessions: SessionScope = make_session,
                    stop: StopHandler | None = None) -> InspectOutcome:
    """Check the specs and inputs, then in a guest from ``sessions``: load, attach the
    probes, run each packet, detach. ``stop`` handles a 'stop' probe (default: show the
    state and hand the program to the debugger, as the command line does)."""
    source = program_source(args, args.specs)
    if not args.specs:
        raise UsageError("inspect: give at least one SPEC after the program")
    specs = parse_specs(args.specs)
    if isinstance(source, FromObject):  # before the guest boots
        for number, spec in enumerate(specs, start=1):
            if spec.loc.kind != "file_line":
                try:
                    check_function_name(spec.loc.name, source.obj)
                except UsageError as err:
                    raise UsageError(f"inspect: spec {number}: {err}") from None
    check_batch(args.commands, source)
    packets = [read_packet(p) for p in args.packet]
    setup = read_setup(args)
    check_inputs(source, list(zip(args.packet, packets, strict=True)), setup.entries)
    with sessions(args) as session, \
            program_in_session(session, source, setup, quiet=args.json) as prog:
        scope = (c_scope(source.obj, prog, lambda: session.kernel_btf)
                 if isinstance(source, FromObject) else None)
        inspector = Inspector(session, prog, specs, scope,
                              recording="all" if args.from_recording else "auto")
        inspector.on_stop = stop or (lambda dbg, probe, before: on_stop(dbg, probe, before,
                                                                        args))
        for probe in inspector.probes:
            if probe.note and not args.json:
                print(f"note: probe {probe.number}: {probe.note}")
        inspector.attach()
        try:
            retvals = inspector.run(packets, args.repeat, sample=args.sample)
        finally:
            inspector.detach()
    return InspectOutcome(inspector, prog, retvals)


def c_scope(obj: BpfObject, prog: LoadedProgram,
            kernel_btf: Callable[[], bytes | None] = lambda: None
            ) -> Callable[[InsnSite], InsnScope]:
    """C names at an instruction, from the object's DWARF (for specs over C variables;
    CO-RE-relocated types laid out by ``kernel_btf()``, the guest kernel's BTF)."""
    model = model_for(obj, kernel_btf)
    return lambda site: InsnScope(obj, model, prog, site)


def on_stop(dbg: Debugger, probe: Probe, before: BpfRegs,
            args: argparse.Namespace) -> Event | None:
    """A 'stop' probe fired: show the state, then hand the program to the debugger."""
    commands = CommandSet(dbg)
    regs = " ".join(f"r{n}={v:#x}" for n, v in enumerate(before.values))
    here = commands.event_output(dbg.last_event) if dbg.last_event else None
    site = dbg.site() or probe.site
    if args.json:
        print(json.dumps(stop_json(dbg, probe, before)), flush=True)
    else:
        print(f"probe {probe.number} stopped the program at {where(site)}\n"
              f"  registers before it (from the probe): {regs}\n"
              f"  now: {here.text if here else '?'}", flush=True)
    if args.commands:
        run_batch(commands, args.commands, args.json)
    elif sys.stdin.isatty():
        interactive_loop(commands, args.json)
    if not dbg.running_program:
        return dbg.last_event
    return None


def stop_json(dbg: Debugger, probe: Probe, before: BpfRegs) -> dict[str, Any]:
    """``inspect --json``'s line for a 'stop' probe that stopped the program."""
    here = CommandSet(dbg).event_output(dbg.last_event) if dbg.last_event else None
    return {"stop": probe.number, "insn": (dbg.site() or probe.site).index,
            "regs_before": before.as_dict(), "now": here.data if here else None}


def emit(out: InspectOutcome, as_json: bool) -> None:
    if as_json:
        print("\n".join(json.dumps(line) for line in out.as_json()))
        return
    inspector, prog, retvals = out.inspector, out.prog, out.retvals
    for hit in inspector.hits:
        print(hit_text(hit, prog))
    for run, retval in enumerate(retvals, start=1):
        name = retval_name(prog.prog_type, retval)
        print(f"run {run}: retval {retval}" + (f" ({name})" if name else ""))
        output = inspector.outputs[run - 1] if run <= len(inspector.outputs) else None
        for line in output.text() if output else []:
            print(f"  {line}")
    print("\n".join(summary_text(inspector)))


def where(s: InsnSite) -> str:
    src = f", {s.source.short()}" if s.source else ""
    return f"{s.function.name}:{s.index - s.function.start_insn} (insn {s.index}{src})"


def value_text(hit: Hit, index: int, prog: LoadedProgram) -> str:
    spec = hit.probe.written or hit.probe.spec  # C items are shown as written
    item = spec.action.prints[index]
    value = hit.values[index]
    if isinstance(item, Str):
        return item.value.decode(errors="replace")
    label = item.to_text()
    if index in hit.unrecorded:
        return f"{label} = <not in the recording>"
    if index in hit.failed:
        return f"{label} = <unreadable>"
    if isinstance(value, MapValue):
        return f"{label} = {map_value_text(value, prog)}"
    ctype = hit.probe.item_types[index] if index < len(hit.probe.item_types) else None
    if ctype is not None:
        return f"{label} = {typed_text(value, ctype, item)}"
    return f"{label} = {format_value(value, literal_hint(spec, item))}"


def typed_text(value: int | bytes, ctype: CType, item: Expr) -> str:
    """A C item's value as the debugger prints it (enums by name, IPs, structs)."""
    size = ctype.byte_size
    data = value if isinstance(value, bytes) else (value & ((1 << (8 * size)) - 1)).to_bytes(
        size, "little")
    name = item.name if isinstance(item, Member | Name) else ""
    return format_c_value(Value(ctype, data, (True,) * len(data)), name)


def map_value_text(value: MapValue, prog: LoadedProgram) -> str:
    info = prog.maps.get(value.name)
    type_id = info.btf_value_type_id if info else 0

    def one(data: bytes) -> str:
        return format_map_value(data, type_id, prog.btf)
    if not value.whole:
        return one(value.entries[0]) if value.found and value.entries else "<not found>"
    shown = [f"[{i}] {one(v)}" for i, v in enumerate(value.entries) if any(v)]
    hidden = len(value.entries) - len(shown)
    if hidden:
        shown.append(f"({hidden} all-zero entries)")
    return "{" + ", ".join(shown) + "}"


def access_text(hit: Hit) -> str:
    """For a watch hit: which instruction touched the data, and old/new bytes."""
    site = hit.access
    insn = "outside the program" if site is None else (
        f"insn {site.index} {site.function.name}:{site.index - site.function.start_insn}"
        + (f" ({site.source.short()})" if site.source else ""))
    old = int.from_bytes(hit.old, "little")
    new = int.from_bytes(hit.new, "little")
    return f"accessed by {insn}: {old:#x} ({old}) -> {new:#x} ({new})"


def hit_text(hit: Hit, prog: LoadedProgram) -> str:
    items = [value_text(hit, i, prog) for i in range(len(hit.values))]
    if hit.old or hit.new:
        items.insert(0, access_text(hit))
    return (f"probe {hit.probe.number} at {where(hit.site)} hit {hit.hit}: "
            + ", ".join(items))


def hit_json(hit: Hit, prog: LoadedProgram) -> dict[str, Any]:
    values: list[Any] = []
    for i, v in enumerate(hit.values):
        if isinstance(v, MapValue):
            values.append({"map": v.name, "found": v.found,
                           "entries": [e.hex() for e in v.entries],
                           "text": map_value_text(v, prog)})
        elif isinstance(v, bytes):
            values.append({"bytes": v.hex(), "text": value_text(hit, i, prog)})
        else:
            values.append({"int": v, "text": value_text(hit, i, prog)})
        if i in hit.unrecorded:
            values[-1]["unrecorded"] = True  # the recording does not hold it: no value
    data: dict[str, Any] = {"probe": hit.probe.number, "hit": hit.hit, "run": hit.run,
                            "insn": hit.site.index, "values": values}
    if hit.old or hit.new:
        data["access"] = {"insn": hit.access.index if hit.access else None,
                          "line": hit.access.source.line if hit.access and hit.access.source
                          else None, "old": hit.old.hex(), "new": hit.new.hex()}
    return data


def summary_rows(inspector: Inspector) -> list[tuple[str, ...]]:
    counted = any(p.executed is not None for p in inspector.probes)
    rows: list[tuple[str, ...]] = [("probe", "location", "mode", "reached", "cond-true",
                                    "skipped", "printed", "dropped")
                                   + (("executed",) if counted else ())]
    for p in inspector.probes:
        c = p.counters
        where = p.spec.loc.to_text() + (f" ({len(p.locations)} locations)"
                                         if len(p.locations) > 1 else "")
        rows.append((str(p.number), where, p.attached, str(c.reached),
                     str(c.true), str(c.skipped), str(c.printed), str(c.dropped))
                    + ((str(p.executed) if p.executed is not None else "-",) if counted
                       else ()))
    return rows


def summary_text(inspector: Inspector) -> list[str]:
    rows = summary_rows(inspector)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    dropped = sum(p.counters.dropped for p in inspector.probes) + inspector.lost
    if dropped:
        lines.append(f"WARNING: {dropped} probe record(s) dropped (ring buffer full or lost)")
    for p in inspector.probes:
        if p.undecided:
            lines.append(f"WARNING: probe {p.number}: {p.undecided} hit(s) not evaluated: the "
                         f"condition needs what the recording does not hold ({p.undecided_why})")
        if p.missed:
            lines.append(f"WARNING: probe {p.number}: the emulator ran its instruction "
                         f"{p.executed} times, the hardware breakpoint reported "
                         f"{p.counters.reached}"
                         f": {p.missed} hit(s) missed{missed_cause(p)}")
            if not (isinstance(p.spec.condition, Watch) or p.spec.action.stop):
                lines.append("  inspect --from-recording evaluates every execution in the "
                             "emulator, with no breakpoint to miss (slower: ~10x)")
    return lines


def missed_cause(probe: Probe) -> str:
    """Why a probe's hits were missed, as far as the emulator saw."""
    if probe.interrupted is None:
        return " (a TCG breakpoint quirk)"
    if probe.interrupted == probe.missed:
        return (" (each right after an interrupt that QEMU returned with the resume "
                "flag set, a QEMU >= 9.1 TCG bug; see qstep/recorder/hits.py)")
    return (f" ({probe.interrupted} right after an interrupt that QEMU returned with the "
            "resume flag set; the others unexplained)")


def summary_json(inspector: Inspector, prog: LoadedProgram,
                 retvals: list[int]) -> dict[str, Any]:
    return {"summary": [{"probe": p.number, "location": p.spec.loc.to_text(),
                         "insn": p.site.index, "insns": [s.index for s in p.sites],
                         "mode": p.attached, **p.counters.as_dict(),
                         "executed": p.executed, "missed": p.missed,
                         "undecided": p.undecided}
                        for p in inspector.probes],
            "lost": inspector.lost,
            "retvals": retvals,
            "outputs": [o.as_json() for o in inspector.outputs]}
