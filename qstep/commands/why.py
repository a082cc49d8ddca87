"""``qstep why``: the write history of some bytes before a point of one recorded run."""

from __future__ import annotations

import argparse
import json

from qstep.commands.common import (
    add_input_options,
    add_program_options,
    add_vm_options,
    make_session,
)
from qstep.commands.debugging import debugger_for
from qstep.commands.options import add_json_option, add_record_limit_option
from qstep.commands.recorded_trace import record
from qstep.debugger.commands import CommandSet
from qstep.debugger.reverse import ReversibleDebugger
from qstep.debugger.reverse_why import why_here
from qstep.errors import UsageError
from qstep.expr.parser import parse_expression
from qstep.expr.typed import uses_c
from qstep.recorder.plugin import require_recorder
from qstep.recorder.why import WhyAnswer, split_question, why
from qstep.recorder.why_report import answer_json, answer_text


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("why", help="who wrote these bytes before LOC (from a recording)")
    add_program_options(p, value=False)
    p.add_argument("question", metavar="QUESTION",
                   help="'EXPR at LOC': a C object (tkey.remote_ipv6, as 'watch' takes it), "
                   "'mem(ADDR, SIZE)' or ADDR (8 bytes), evaluated when LOC was first "
                   "reached ($r0..$r10 as they were then)")
    add_input_options(p, several_packets=False)
    add_record_limit_option(p)
    add_json_option(p, "one object")
    add_vm_options(p)
    p.set_defaults(func=why_main)


def why_main(args: argparse.Namespace) -> int:
    require_recorder()
    target, loc = split_question(args.question)
    if names_c_objects(target):
        answer = why_in_debugger(args, target, loc)
    else:
        with make_session(args) as session:
            rec = record(args, session)[1]
        answer = why(rec, args.question)
    print(json.dumps(answer_json(answer)) if args.json else "\n".join(answer_text(answer)))
    return 0


def names_c_objects(target: str) -> bool:
    """Whether the question's target needs the object's DWARF (C names, casts, ...)."""
    try:
        return uses_c(parse_expression(target))
    except UsageError:  # e.g. a cast to a type only DWARF knows
        return True


def why_in_debugger(args: argparse.Namespace, target: str, loc: str) -> WhyAnswer:
    """A C object's history: run to LOC's first stop with the run recorded, evaluate
    the object there with DWARF, and go through the recording's stores."""
    args.backend, args.reverse = None, True
    with debugger_for(args) as (dbg, view):
        if view is None:
            raise UsageError(f"{target}: C objects need the object's DWARF; ask about "
                             "'mem(ADDR, SIZE) at LOC'")
        assert isinstance(dbg, ReversibleDebugger)
        commands = CommandSet(dbg, view)
        commands.execute(f"tbreak {loc}")
        if commands.execute("run").data.get("event") != "stopped":
            raise UsageError(f"{loc} was not reached in this run")
        return why_here(dbg, commands.source, target)


