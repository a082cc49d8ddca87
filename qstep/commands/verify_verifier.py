"""``qstep verify-verifier``: every runtime value checked against the verifier's proof."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator
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
from qstep.debugger.engine import RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.errors import UsageError
from qstep.images.kernels import kernel_names
from qstep.loaded import LoadedProgram
from qstep.session import Session
from qstep.userinput import read_packet
from qstep.verifier.check import CheckReport, Regs, Shown, check_run
from qstep.verifier.log import VerifierLog, parse_log


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
                    log = parse_log(prog.verifier_log)
                    if not log.visits:
                        raise UsageError(f"{kernel}: the verifier's log has no instruction "
                                         "states this qstep can read")
                    fill_maps(session, prog, entries)
                    with session.debugger(prog, RunRequest(data)) as dbg:
                        steps = list(runtime_steps(trace_run(dbg)))
                    report = check_run(log, steps, {i.index: i for i in prog.insns})
                executed |= {step[0] for step in steps}
                results.append(result_json(kernel, origin, report))
                if not args.json:
                    print("\n".join(result_text(results[-1])), flush=True)
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


def runtime_steps(items: Iterator[object]) -> Iterator[tuple[int, Regs, Shown]]:
    """(insn, registers before it, as the trace shows them) from a trace; before the
    first instruction only r1 (the context) and r10 (the frame pointer) hold values."""
    before: Regs = (None,) * 11
    shown: Shown = (None, "ctx") + (None,) * 8 + ("fp",)
    for item in items:
        if not isinstance(item, TraceRecord):
            continue
        yield item.site.index, before, shown
        if item.regs_after is not None:
            before = item.regs_after
            shown = item.shown if item.shown is not None else (None,) * 11


def result_json(kernel: str, origin: str, report: CheckReport) -> dict[str, Any]:
    return {"kernel": kernel, "packet": origin, "steps": report.steps,
            "registers": report.registers, "pointers": report.pointers,
            "unchecked": report.unchecked, "prunes": report.prunes, "paths": report.paths,
            "stopped": report.stopped,
            "findings": [{"step": f.step, "insn": f.insn, "reg": f"r{f.reg}",
                          "value": f.value, "verifier": f.claim.describe()}
                         for f in report.findings]}


def result_text(result: dict[str, Any]) -> list[str]:
    head = (f"{result['kernel']} {result['packet']}: {result['steps']} instructions, "
            f"{result['registers']} scalar values and {result['pointers']} pointer types "
            f"checked on the verifier's path "
            f"{'-'.join(map(str, result['paths']))}")
    lines = [head]
    if result["stopped"]:
        lines.append(f"  check ended {result['stopped']}")
    if not result["findings"]:
        lines.append("  0 soundness violations: every value lies inside the verifier's bounds")
    for f in result["findings"]:
        lines.append(f"  VIOLATION step {f['step']}, insn {f['insn']}: {f['reg']} = "
                     f"{f['value']:#x}, the verifier proved {f['verifier']}")
    return lines
