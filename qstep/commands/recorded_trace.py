"""``qstep trace`` from a recording: one run under the recorder plugin, no stepping."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from qstep.agent.replies import RunResult
from qstep.commands.common import (
    SessionScope,
    make_session,
    program_in_session,
    program_source,
    read_setup,
)
from qstep.commands.lines import PRINTED, Lines
from qstep.debugger.tailcall import is_tail_call
from qstep.debugger.trace import TraceRecord, format_record, stack_relative
from qstep.loaded import LoadedProgram
from qstep.recorder.log import MemAccess
from qstep.recorder.recording import Recording
from qstep.recorder.run import record_run
from qstep.recorder.trace import trace_records
from qstep.runoutput import RunOutput
from qstep.session import Session
from qstep.userinput import read_packet
from qstep.verifier.report import check_json, check_lines
from qstep.verifier.runcheck import check_records, verifier_log_of


def record(args: argparse.Namespace, session: Session) -> tuple[RunResult, Recording]:
    """Load, fill maps and record one run of the program (unloaded afterwards)."""
    packet = read_packet(args.packet)
    setup, source = read_setup(args), program_source(args)
    with program_in_session(session, source, setup, quiet=args.json) as prog:
        return record_run(session, prog, packet, limit=args.record_limit)


def emit_exit(retval: int | None, output: RunOutput | None, as_json: bool,
              out: Lines = PRINTED) -> None:
    """The end of a trace: the return value and what the run printed."""
    output = output or RunOutput()
    if as_json:
        if not output.is_empty():
            out.data({"output": output.as_json()})
    else:
        out.text("\n".join([f"[program exited: retval {retval}]", *output.text()]))


def recorded_trace_main(args: argparse.Namespace, sessions: SessionScope = make_session,
                        out: Lines = PRINTED) -> int:
    with sessions(args) as session:
        result, rec = record(args, session)
    base = None if args.raw or not rec.steps else rec.steps[0].regs()[10]
    for item in trace_records(rec, args.max_steps):
        accesses = rec.steps[item.step - 1].accesses if args.mem else []
        if args.json:
            data = item.as_json(args.raw)
            if args.mem:
                data["mem"] = [access_json(a, base) for a in accesses]
            out.data(data)
        else:
            out.text(format_record(item, args.raw))
            for a in accesses:
                out.text(f"{'':13}{format_access(a, base)}")
    if (rec.exited or is_tail_call(rec.steps[-1].site if rec.steps else None)) \
            and len(rec.steps) <= args.max_steps:
        emit_exit(rec.retval, result.output, args.json, out)
    if getattr(args, "check_verifier", False):
        return emit_verifier_check(rec.prog, trace_records(rec), "recorder", args.json, out)
    return 0


def emit_verifier_check(prog: LoadedProgram, items: Iterable[object], traced_by: str,
                        as_json: bool, out: Lines = PRINTED) -> int:
    """--check-verifier: every traced instruction against the verifier's states; 1 when
    a value lies outside them."""
    check = check_records(prog, verifier_log_of(prog), items, traced_by)
    data = check_json(check, prog)
    if as_json:
        out.data({"verifier_check": data})
    else:
        out.text("\n".join(check_lines(data)))
    return 1 if data["findings"] else 0


def access_json(a: MemAccess, base: int | None) -> dict[str, Any]:
    return {"op": "store" if a.store else "load", "size": a.size,
            "addr": stack_relative(a.addr, base), "value": a.value}


def format_access(a: MemAccess, base: int | None) -> str:
    addr = stack_relative(a.addr, base)
    where = addr if isinstance(addr, str) else f"{addr:#x}"
    return f"{'store' if a.store else 'load '} {a.size} [{where}] = {a.value:#x}"


__all__ = ["TraceRecord", "recorded_trace_main"]
