"""``qstep verify-jit``: run a program in lockstep with BPF semantics on real kernels."""

from __future__ import annotations

import argparse
import json
from typing import Any

from qstep.bpf.insn import format_insn
from qstep.commands.common import (
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
from qstep.errors import UsageError
from qstep.images.kernels import kernel_names
from qstep.listing import bpf_text, disassemble_x86, xlated_span
from qstep.loaded import LoadedProgram
from qstep.oracle.lockstep import Divergence, LockstepReport, lockstep
from qstep.oracle.recorded import lockstep_recording, percpu_offset_reader
from qstep.recorder.hits import recorder_available
from qstep.recorder.run import record_run
from qstep.scenario.runner import fill_maps as scenario_maps
from qstep.scenario.runner import loaded, prepare
from qstep.scenario.toml_load import load_scenario
from qstep.session import Session
from qstep.userinput import read_packet


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("verify-jit", help="run the program in lockstep with the reference "
                       "BPF interpreter and report the first instruction where the JIT "
                       "differs from BPF semantics")
    add_object_options(p, "BPF ELF object (clang -target bpf -g), or a scenario file "
                       "(.toml) whose cases are checked instead of --packet")
    add_load_options(p)
    add_input_options(p, several_packets=True, required=False, reload=True)
    add_kernels_option(p, "6.1, or the scenario's")
    add_accel_option(p)
    add_json_option(p, "a list of one object per kernel and packet")
    p.add_argument("--stepped", action="store_true",
                   help="step the run through the gdbstub instead of checking a recording "
                   "of it (the default where QEMU runs the recorder plugin)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.object.suffix == ".toml":
        return verify_scenario(args)
    if not args.packet:
        raise UsageError("verify-jit: give at least one --packet, or a scenario file "
                         "(.toml) as PROG")
    packets = [(arg, read_packet(arg)) for arg in args.packet]
    entries = map_entries(args)
    obj, prog_name = open_object(args)
    results: list[dict[str, Any]] = []
    for kernel in kernel_names(args.kernel or "6.1"):
        with Session(kernel=kernel, accel=args.accel) as session:
            for origin, data in packets:
                with session.loaded(obj, prog_name, load_options(args)) as prog:
                    fill_maps(session, prog, entries)
                    results.append(verify_one(session, prog, kernel, origin, data, args))
    return finish(results, args.json)


def verify_scenario(args: argparse.Namespace) -> int:
    """Every case of a scenario file, on its kernels (or --kernel)."""
    item = prepare(load_scenario(args.object))
    results: list[dict[str, Any]] = []
    kernels = kernel_names(args.kernel) if args.kernel else list(item.scenario.kernels)
    for kernel in kernels:
        with Session(kernel=kernel, accel=args.accel) as session:
            for case in item.scenario.cases:
                with loaded(session, item) as prog:
                    scenario_maps(session, prog, item.scenario, case)
                    results.append(verify_one(session, prog, kernel, case.name, case.packet,
                                              args))
    return finish(results, args.json)


def verify_one(session: Session, prog: LoadedProgram, kernel: str, origin: str,
               packet: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """Check one run: its recording (QEMU 10's recorder) or, ``--stepped``, a stepped run."""
    if not args.stepped and recorder_available(session):
        rec = record_run(session, prog, packet)[1]
        report = lockstep_recording(rec, percpu_offset_reader(session, prog))
        method = "recorded"
    else:
        with session.debugger(prog, RunRequest(packet)) as dbg:
            report = lockstep(dbg)
        method = "stepped"
    result = {**run_result(kernel, origin, prog, report), "method": method}
    if not args.json:
        print("\n".join(run_text(result, prog, report)), flush=True)
    return result


def finish(results: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(results, indent=2))
    return 1 if any(r["divergence"] for r in results) else 0


def run_result(kernel: str, origin: str, prog: LoadedProgram,
               report: LockstepReport) -> dict[str, Any]:
    return {"kernel": kernel, "packet": origin, "program": prog.name,
            "checked": report.checked, "retval": report.retval,
            "divergence": divergence_json(prog, report.divergence),
            "unsupported": report.unsupported}


def divergence_json(prog: LoadedProgram, div: Divergence | None) -> dict[str, Any] | None:
    if div is None:
        return None
    site = div.site
    return {"step": div.step, "insn": site.index, "function": site.function.name,
            "offset": site.index - site.function.start_insn,
            "source": site.source.short() if site.source else None,
            "what": div.what, "bpf": bpf_text(prog, site),
            "xlated": [format_insn(x) for x in xlated_span(prog, site)],
            "x86": x86_of(prog, div), "regs_before": list(div.regs_before),
            "regs_after": list(div.regs_after), "expected_after": list(div.expected),
            "unknown": sorted(div.unknown)}


def x86_of(prog: LoadedProgram, div: Divergence) -> list[str]:
    site = div.site
    if site.jit_start is None or site.jit_end is None:
        return []
    code = prog.jit_bytes(site.jit_start, site.jit_end)
    return [f"{x.addr:#x}: {x.text}" for x in disassemble_x86(code, site.jit_start)]


def run_text(result: dict[str, Any], prog: LoadedProgram, report: LockstepReport) -> list[str]:
    head = f"{result['kernel']} {result['packet']}:"
    div = result["divergence"]
    if div is None and report.unsupported:
        return [f"{head} {report.checked} instructions agree with BPF semantics; the check "
                f"stops at {report.unsupported}"]
    if div is None:
        return [f"{head} {report.checked} instructions agree with BPF semantics "
                f"(retval {report.retval}, {result['method']} run)"]
    def regs(values: list[int]) -> str:
        return " ".join(f"r{n}={v:#x}" for n, v in enumerate(values[:11]))
    return [
        f"{head} DIVERGENCE at step {div['step']}, insn {div['insn']} "
        f"({div['function']}+{div['offset']}, {div['source']})",
        f"  {div['what']}",
        f"  bpf:      {div['bpf']}",
        *(f"  xlated:   {x}" for x in div["xlated"]),
        *(f"  x86:      {x}" for x in div["x86"]),
        f"  before:   {regs(div['regs_before'])}",
        f"  after:    {regs(div['regs_after'])}",
        f"  expected: {regs(div['expected_after'])}"
        + (f"  (unknown: {', '.join(f'r{n}' for n in div['unknown'])})"
           if div["unknown"] else ""),
        f"  {report.checked} instructions agreed before it ({prog.name})",
    ]
