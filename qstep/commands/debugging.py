"""``qstep debug`` (interactive or batch) and ``qstep trace`` (every instruction)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from qstep.commands.common import (
    SessionScope,
    add_input_options,
    add_program_options,
    add_vm_options,
    check_function_name,
    check_inputs,
    make_session,
    open_in_session,
    program_in_session,
    program_source,
    read_setup,
)
from qstep.commands.lines import PRINTED, Lines
from qstep.commands.options import (
    add_backend_option,
    add_commands_option,
    add_json_option,
    add_record_limit_option,
    positive_int,
)
from qstep.commands.recorded_trace import emit_exit, emit_verifier_check, recorded_trace_main
from qstep.commands.replay import recorded_commands
from qstep.debugger.commands import TAKES_LOCATION, CommandSet, Output, split_commands
from qstep.debugger.engine import Debugger, Event, RunRequest
from qstep.debugger.repl import Commands, interactive_loop
from qstep.debugger.reverse import ReversibleDebugger
from qstep.debugger.reverse_commands import REVERSE_WORDS, ReverseCommands
from qstep.debugger.source import SourceView
from qstep.debugger.trace import TraceRecord, format_record, trace_run
from qstep.errors import GuestError, QstepError, UsageError
from qstep.recorder.plugin import recorder_unavailable_reason
from qstep.session import SELECTORS, FromObject, ProgramSource
from qstep.userinput import read_packet


def _common(p: argparse.ArgumentParser) -> None:
    add_program_options(p)
    add_input_options(p, several_packets=False)
    add_backend_option(p)
    add_json_option(p, "JSON lines, one object per line")
    add_record_limit_option(p)
    add_vm_options(p)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("debug", help="debug a program interactively (gdb-like commands)")
    _common(p)
    add_commands_option(p, "", "implies batch mode: qstep quits after the last one")
    p.add_argument("-x", "--batch", dest="batch_file", type=Path, metavar="FILE",
                   help="run the commands in this file; implies batch mode")
    p.add_argument("--start", action=argparse.BooleanOptionalAction, default=None,
                   help="stop at the program entry first (default: interactive only)")
    p.add_argument("--record", action="store_true",
                   help="record the run first, then debug the recording: forward and "
                   "backward (reverse-stepi, reverse-continue, watch, ...)")
    p.add_argument("--reverse", action="store_true",
                   help="record each run as it goes (QEMU 10 recorder plugin), so at any "
                   "stop reverse-stepi, reverse-next, reverse-continue, ... go back")
    p.set_defaults(func=debug_main)
    t = sub.add_parser("trace", help="run once, recording every BPF instruction")
    _common(t)
    t.add_argument("--max-steps", type=positive_int, default=1_000_000, metavar="N",
                   help="show at most N instructions (default 1000000)")
    t.add_argument("--raw", action="store_true",
                   help="raw register values (default: pointers relative to "
                   "ctx, pkt, map values and fp, so runs compare byte for byte)")
    t.add_argument("--stepping", action="store_true",
                   help="step through QEMU's gdbstub instead of recording (slower)")
    t.add_argument("--mem", action="store_true",
                   help="also each instruction's memory loads and stores (recording only)")
    t.add_argument("--check-verifier", action="store_true",
                   help="load with the verifier's detailed log and check every traced "
                   "instruction's registers against what it proved there (exit 1 on a "
                   "soundness violation)")
    t.set_defaults(func=trace_main)


@contextmanager
def debugger_for(args: argparse.Namespace, source: ProgramSource | None = None,
                 sessions: SessionScope = make_session
                 ) -> Iterator[tuple[Debugger, SourceView | None]]:
    """Take a guest from ``sessions`` (boot one), open the program, fill maps, attach
    the target; tear all of it down afterwards.

    The source view (C variables) needs the object's DWARF: None for a program
    loaded outside qstep.
    """
    packet = read_packet(args.packet)
    setup = read_setup(args)
    source = source or program_source(args)
    check_inputs(source, [(args.packet, packet)], setup.entries)
    # A guest booted here goes down right after: a run in progress need not finish first
    # (quit or Ctrl-C in a long run leaves at once), nor the program be unloaded.
    own = sessions is make_session
    with sessions(args) as session:
        opened = (nullcontext(open_in_session(session, source, setup, quiet=args.json))
                  if own else program_in_session(session, source, setup, quiet=args.json))
        with opened as prog, session.debugger(
                prog, RunRequest(packet), args.backend, reverse=getattr(args, "reverse", False),
                record_limit=getattr(args, "record_limit", None), detach=not own) as dbg:
            yield dbg, SourceView(source.obj, dbg) if isinstance(source, FromObject) else None


def emit(out: Output, as_json: bool) -> None:
    if as_json:
        if out.data:
            print(json.dumps(out.data), flush=True)
    elif out.text:
        print(out.text, flush=True)


def debug_main(args: argparse.Namespace) -> int:
    batch = list(args.commands)
    if args.batch_file:
        if not args.batch_file.is_file():
            raise UsageError(f"-x {args.batch_file}: no such command file")
        batch += split_commands(args.batch_file.read_text())
    interactive = not batch
    if args.record:
        replay = recorded_commands(args)
        emit(replay.start(), args.json)
        if interactive:
            interactive_loop(replay, args.json)
            return 0
        return run_batch(replay, batch, args.json)
    source = program_source(args)
    check_batch(batch, source)
    if args.verifier_log and str(args.object) in SELECTORS:
        print(f"qstep: note: {no_verifier_log(args, '--verifier-log')}", file=sys.stderr)
    if args.reverse and recorder_unavailable_reason():
        print(f"qstep: note: no reverse execution: {recorder_unavailable_reason()}",
              file=sys.stderr)
    start = args.start if args.start is not None else interactive
    with debugger_for(args, source) as (dbg, view):
        live = CommandSet(dbg, view)
        commands = ReverseCommands(live, dbg) if isinstance(dbg, ReversibleDebugger) else live
        if start:
            main = dbg.prog.functions[0]
            emit(commands.execute(f"tbreak #{main.start_insn}"), args.json)
            emit(commands.execute("run"), args.json)
        if interactive:
            interactive_loop(commands, args.json)
            return 0
        return run_batch(commands, batch, args.json)


def check_batch(lines: list[str], source: ProgramSource) -> None:
    """Find what the command lines and the object alone show before the guest boots:
    unknown commands, bad counts, locations naming functions the object lacks."""
    for line in lines:
        if line.split()[:1] and line.split()[0] in REVERSE_WORDS:
            continue
        parsed = CommandSet.check_syntax(line)
        if parsed and parsed[0] in TAKES_LOCATION and isinstance(source, FromObject):
            check_function_name(parsed[1], source.obj)


def run_batch(commands: Commands, lines: list[str], as_json: bool) -> int:
    """Run commands in order, as gdb does: a failing command prints its error and the
    rest still run (a dead guest ends the batch); status 1 if any command failed."""
    status = 0
    for line in lines:
        if not as_json:
            print(f"(qstep) {line}", flush=True)
        try:
            out = commands.execute(line)
        except QstepError as err:
            print(json.dumps({"error": str(err), "command": line}) if as_json
                  else f"error: {err}", file=sys.stderr if not as_json else sys.stdout)
            if isinstance(err, GuestError):
                return 1
            status = 1
            continue
        emit(out, as_json)
        if out.quit:
            break
    return status


def trace_main(args: argparse.Namespace, sessions: SessionScope = make_session,
               out: Lines = PRINTED) -> int:
    """``qstep trace``: recorded (QEMU 10's recorder) or stepped; the lines go to ``out``."""
    if args.check_verifier:
        check_verifier_source(args)
        args.verifier_log = True
    # What the host can check, before any guest boots (both ways below read them again).
    check_inputs(program_source(args), [(args.packet, read_packet(args.packet))],
                 read_setup(args).entries)
    if args.mem and args.stepping:
        raise UsageError("--mem comes from the recording: drop --stepping to see loads and "
                         "stores")
    if not args.stepping:
        reason = recorder_unavailable_reason() or (
            "recording needs a program qstep loads itself" if str(args.object) in SELECTORS
            else "")
        if not reason:
            return recorded_trace_main(args, sessions, out)
        if args.mem:
            raise UsageError(f"--mem needs the recorder: {reason}")
        print(f"qstep: note: {reason}; tracing by stepping", file=sys.stderr)
    items: list[object] = []
    with debugger_for(args, sessions=sessions) as (dbg, _view):
        for item in trace_run(dbg, args.max_steps):
            items.append(item)
            if isinstance(item, TraceRecord):
                if args.json:
                    out.data(item.as_json(args.raw))
                else:
                    out.text(format_record(item, args.raw))
            elif isinstance(item, Event) and item.kind == "exited":
                emit_exit(item.retval, item.output, args.json, out)
        if args.check_verifier:
            return emit_verifier_check(dbg.prog, items, "stepping", args.json, out)
    return 0


def check_verifier_source(args: argparse.Namespace) -> None:
    """--check-verifier needs a program qstep loads itself: say so before booting."""
    if str(args.object) in SELECTORS:
        raise UsageError(no_verifier_log(args, "--check-verifier"))


def no_verifier_log(args: argparse.Namespace, option: str) -> str:
    """Why a program in the guest has no verifier log, and the reload that gets one."""
    objects = [spec.rpartition(":")[0] for spec in args.guest_file
               if spec.rpartition(":")[0].endswith(".o")]
    how = f"qstep {args.command} {objects[0] if objects else 'OBJECT.o'} --prog NAME {option}"
    return (f"{option}: '{args.object}' names a program loaded outside qstep, and the "
            "kernel keeps no verifier log after a load; to get it, let qstep load the "
            f"object again itself, which keeps the log: {how} ...")
