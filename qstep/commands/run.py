"""``qstep run``: load a program, fill its maps, run it on a packet, show the outcome."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from typing import Any

from qstep.agent.replies import MapDump, MapInfo
from qstep.bpf.progtypes import retval_name
from qstep.commands.common import (
    SessionScope,
    add_input_options,
    add_program_options,
    add_vm_options,
    check_inputs,
    make_session,
    program_in_session,
    program_source,
    read_setup,
)
from qstep.commands.options import add_json_option, add_repeat_option
from qstep.loaded import LoadedProgram
from qstep.mapdump import (
    QUEUE_TYPES,
    body_text,
    limits_text,
    notes_json,
    with_record_types,
)
from qstep.render import ARRAY_TYPES, format_map_value, map_entries_text
from qstep.runkinds import input_word, outcome_text, run_extras
from qstep.session import RunResult, Session
from qstep.userinput import read_packet


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run a program once (BPF_PROG_TEST_RUN) and show the result")
    add_program_options(p)
    add_input_options(p, several_packets=True)
    add_repeat_option(p, "the duration shown is the mean")
    p.add_argument("--record-type", action="append", default=[], metavar="MAP=TYPE",
                   help="show the records of a ring buffer or perf event array as this BTF "
                   "type, e.g. events='struct event'")
    add_json_option(p, "one object")
    add_vm_options(p)
    p.set_defaults(func=main)


def dump_maps(session: Session, prog: LoadedProgram) -> dict[str, MapDump]:
    """Every map's contents; hash-like maps sorted by key bytes, so runs compare."""
    dumps = {name: session.dump_map_id(prog.maps[name].id) for name in sorted(prog.maps)}
    return {name: replace(d, entries=in_stable_order(prog.maps[name], d.entries))
            for name, d in dumps.items()}


def in_stable_order(info: MapInfo, entries: list[tuple[bytes, bytes]]
                    ) -> list[tuple[bytes, bytes]]:
    """Arrays keep the kernel's index order; other maps (hash order varies) by key."""
    return entries if info.type in ARRAY_TYPES | QUEUE_TYPES else sorted(entries)


@dataclass
class RunOutcome:
    """What ``run`` shows: the runs of each packet and the maps afterwards."""

    session: Session
    prog: LoadedProgram
    packets: list[tuple[str, bytes]]
    results: list[RunResult]
    maps: dict[str, MapDump]

    def as_json(self) -> dict[str, Any]:
        """``qstep run --json``'s object (docs/json.md)."""
        return run_json(self.session, self.prog, self.packets, self.results, self.maps)


def main(args: argparse.Namespace) -> int:
    out = run_program(args)
    if args.json:
        print(json.dumps(out.as_json(), indent=2))
    else:
        print("\n".join(run_text(out.session, out.prog, args.repeat, out.packets,
                                  out.results, out.maps)))
    return 0


def run_program(args: argparse.Namespace, sessions: SessionScope = make_session) -> RunOutcome:
    """Check the inputs, then in a guest from ``sessions``: load, fill maps, run each
    packet, dump the maps."""
    packets = [(arg, read_packet(arg)) for arg in args.packet]
    setup = read_setup(args)
    source = program_source(args)
    check_inputs(source, packets, setup.entries)
    with sessions(args) as session, \
            program_in_session(session, source, setup, quiet=args.json) as prog:
        prog.maps = with_record_types(prog.maps, prog.btf, args.record_type)
        results = [session.test_run(prog, data, repeat=args.repeat) for _, data in packets]
        return RunOutcome(session, prog, packets, results, dump_maps(session, prog))


def run_text(session: Session, prog: LoadedProgram, repeat: int,
             packets: list[tuple[str, bytes]], results: list[RunResult],
             maps: dict[str, MapDump]) -> list[str]:
    lines = [f"program   {prog.name} ({prog.type_name}, id {prog.prog_id}) on {session.release}"]
    for (origin, packet), result in zip(packets, results, strict=True):
        name = retval_name(prog.prog_type, result.retval)
        lines += [
            "",
            f"{input_word(prog.prog_type):9} {len(packet)} bytes from {origin}",
            f"retval    {result.retval}" + (f" ({name})" if name else ""),
            *outcome_text(prog.prog_type, packet, result, repeat),
            *result.output.text(),
        ]
    lines += ["", "maps after the run" + ("s:" if len(results) > 1 else ":")]
    return lines + maps_text(prog, maps)


def maps_text(prog: LoadedProgram, maps: dict[str, MapDump]) -> list[str]:
    """Each map's entries, typed through BTF (as ``run`` prints them)."""
    lines = []
    for map_name, dump in maps.items():
        info = prog.maps[map_name]
        lines.append(f"  {map_name}:")
        body = body_text(info, dump, prog.btf)
        lines.extend(body if body is not None else
                     map_entries_text(info, dump.entries, prog.btf, quiet_empty=dump.unlisted))
        lines.extend(limits_text(info, dump))
    return lines


def run_json(session: Session, prog: LoadedProgram, packets: list[tuple[str, bytes]],
             results: list[RunResult],
             maps: dict[str, MapDump]) -> dict[str, Any]:
    def entry(map_name: str, key: bytes, value: bytes) -> dict[str, str]:
        info = prog.maps[map_name]
        return {"key": format_map_value(key, info.btf_key_type_id, prog.btf),
                "value": format_map_value(value, info.btf_value_type_id, prog.btf),
                "key_hex": key.hex(), "value_hex": value.hex()}
    return {
        "program": prog.name, "type": prog.type_name, "id": prog.prog_id,
        "kernel": session.release,
        "runs": [{"packet": origin, "retval": r.retval,
                  "retval_name": retval_name(prog.prog_type, r.retval),
                  "duration_ns": r.duration_ns, "packet_in": data.hex(),
                  "packet_out": r.data_out.hex(), "output": r.output.as_json(),
                  **run_extras(prog.prog_type, r)}
                 for (origin, data), r in zip(packets, results, strict=True)],
        "maps": {n: [entry(n, k, v) for k, v in d.entries] for n, d in maps.items()},
        "map_notes": {n: notes for n, d in maps.items()
                      if (notes := notes_json(prog.maps[n], d, prog.btf))},
    }
