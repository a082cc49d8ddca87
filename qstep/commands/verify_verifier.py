"""``qstep verify-verifier``: every runtime value checked against the verifier's proof."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from qstep.commands.common import (
    VERIFIER_LOG_BYTES,
    add_input_options,
    add_load_options,
    add_object_options,
    fill_maps,
    load_options,
    map_entries,
    open_object,
)
from qstep.commands.options import add_accel_option, add_json_option, add_kernels_option
from qstep.images.kernels import kernel_names
from qstep.loaded import LoadedProgram
from qstep.session import Session
from qstep.userinput import read_packet
from qstep.verifier.log import VerifierLog
from qstep.verifier.report import check_json, check_lines
from qstep.verifier.runcheck import trace_and_check, verifier_log_of


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("verify-verifier", help="run the program and check every register "
                       "value against the bounds the verifier proved there (soundness)")
    add_object_options(p)
    add_load_options(p)
    add_input_options(p, several_packets=True, reload=True)
    add_kernels_option(p, "6.1")
    add_accel_option(p)
    add_json_option(p, "a list of one object per kernel and packet")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    packets = [(arg, read_packet(arg)) for arg in args.packet]
    entries = map_entries(args)
    obj, prog_name = open_object(args)
    options = dataclasses.replace(load_options(args), verifier_log_size=VERIFIER_LOG_BYTES)
    results: list[dict[str, Any]] = []
    for kernel in kernel_names(args.kernel or "6.1"):
        executed: set[int] = set()
        with Session(kernel=kernel, accel=args.accel) as session:
            for origin, data in packets:
                with session.loaded(obj, prog_name, options) as prog:
                    log = verifier_log_of(prog)
                    fill_maps(session, prog, entries)
                    check = trace_and_check(session, prog, data)
                executed |= set(check.executed)
                results.append({"kernel": kernel, "packet": origin} | check_json(check, prog))
                if not args.json:
                    print(f"{kernel} {origin}:", "\n".join(check_lines(results[-1])),
                          flush=True)
        unrun = not_run(prog, log, executed)
        results[-1]["explored_not_run"] = unrun
        if not args.json:
            print(f"{kernel}: the verifier proved {len(log.by_insn)} instructions; "
                  f"{len(unrun['insns'])} of them ran for none of these packets"
                  + (f" (lines {', '.join(map(str, unrun['lines']))})" if unrun["lines"]
                     else ""))
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if any(r["findings"] for r in results) else 0


def not_run(prog: LoadedProgram, log: VerifierLog, executed: set[int]) -> dict[str, list[int]]:
    """Instructions the verifier explored that no run executed, and their source lines."""
    insns = sorted(set(log.by_insn) - executed)
    lines = sorted({s.source.line for i in insns
                    if (s := prog.sites.get(i)) is not None and s.source is not None})
    return {"insns": insns, "lines": lines}
