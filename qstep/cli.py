"""The ``qstep`` command line.

Errors end here, in one place: a ``QstepError`` prints its one-line message;
Ctrl-C and SIGTERM print ``qstep: interrupted`` / ``qstep: terminated`` (exit
130 / 143) after everything was cleaned up; any other exception is a qstep bug,
reported as one "internal error" line (``--debug`` shows the traceback, ``--log``
records it). This module imports only the standard library at the top, so the
signal handlers are in place before the heavy imports run.
"""

from __future__ import annotations

import signal
import sys

if __name__ == "__main__" or sys.argv[0].endswith("/qstep"):
    # Started as the qstep command: hold Ctrl-C and SIGTERM until main() handles them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import termios  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

from qstep import __version__, interrupts  # noqa: E402


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument --map: expected 2 arguments"):
            message = ("--map takes NAME KEY=VALUE; a KEY=VALUE that starts with '-' "
                       "reads as an option: put a space in front (--map NAME ' -1=1')")
        print(f"qstep: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--log and --debug, accepted before and after the command name."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--log", metavar="FILE", default=default,
                        help="record the agent, QMP and gdbstub traffic with timestamps "
                        "(also: QSTEP_LOG=FILE)")
    parser.add_argument("--debug", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="show the traceback of an internal error and the guest "
                        "console of a VM failure")


def build_parser(parser_class: type[Parser] = Parser) -> argparse.ArgumentParser:
    from qstep.commands import (
        bisect,
        dap,
        debugging,
        disasm,
        images,
        inspect,
        mcp,
        run,
        scenario_test,
        verify_jit,
        verify_verifier,
        why,
    )
    parser = parser_class(prog="qstep", description="Debug eBPF programs on a real "
                    "kernel under QEMU.")
    parser.add_argument("--version", action="version", version=f"qstep {__version__}")
    add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (images, run, disasm, debugging, inspect, scenario_test, bisect,
                   verify_jit, verify_verifier, why, dap, mcp):
        module.add_parser(sub)
    add_to_commands(parser)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parse_args``, with an unknown option reported by the command it was given to
    (its usage is the one that helps)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def innermost(parser: argparse.ArgumentParser,
              args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that ``args`` went to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return innermost(chosen, args)
    return parser


def add_to_commands(parser: argparse.ArgumentParser) -> None:
    """--log and --debug on every command and subcommand (``images fetch`` too)."""
    for action in parser._actions:  # argparse lists its subcommands only there
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                add_global_options(command, top=False)
                add_to_commands(command)


def main(argv: list[str] | None = None) -> int:
    interrupts.install()
    terminal = _terminal_state()
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, interrupts.SIGNALS)  # held since the start
        return _main(argv)
    except (KeyboardInterrupt, interrupts.Terminated) as exc:
        word = "terminated" if isinstance(exc, interrupts.Terminated) else "interrupted"
        after_echo = "\n" if _is_terminal(sys.stderr) else ""  # the terminal showed ^C
        print(f"{after_echo}qstep: {word}", file=sys.stderr)
        return interrupts.exit_code(exc)
    finally:
        _restore_terminal(terminal)


def _main(argv: list[str] | None) -> int:
    from qstep.errors import MachineError, QstepError, VerifierError
    from qstep.log import log_path, record_failure, setup
    with interrupts.deferred():  # a Ctrl-C during the imports is taken after them
        parser = build_parser()
    try:
        args = parse(parser, argv)
    except QstepError as err:  # an option's own check (--prog-type, --attach-type, ...)
        print(f"qstep: error: {err}", file=sys.stderr)
        return err.exit_code
    try:
        setup(log_path(args.log))
        if getattr(args, "print_cmd", False):  # the VM options' --print-cmd, for every command
            from qstep.commands.common import print_cmd
            return print_cmd(args)
        return int(args.func(args))
    except QstepError as err:
        record_failure(err)
        prefix = "qstep: " if isinstance(err, VerifierError) else "qstep: error: "
        print(f"{prefix}{err}", file=sys.stderr)
        if args.debug and isinstance(err, MachineError) and err.console_tail:
            print(f"guest console (last lines):\n{err.console_tail.rstrip()}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # output piped into head(1) and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a qstep bug: one line, the traceback on request
        record_failure(exc)
        if args.debug:
            raise
        logged = log_path(args.log)
        where = f"see the log {logged}" if logged else "or with --log FILE for a bug report"
        what = (str(exc).splitlines() or [""])[0]
        print(f"qstep: internal error (a qstep bug): {type(exc).__name__}: {what}; rerun "
              f"with --debug for the traceback, {where}", file=sys.stderr)
        return 70  # EX_SOFTWARE


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (ValueError, OSError):
        return False


def _terminal_state() -> list[Any] | None:
    try:
        return termios.tcgetattr(sys.stdin.fileno()) if sys.stdin.isatty() else None
    except (termios.error, ValueError, OSError):
        return None


def _restore_terminal(state: list[Any] | None) -> None:
    if state is not None:
        with contextlib.suppress(termios.error, ValueError, OSError):
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, state)


if __name__ == "__main__":
    sys.exit(main())
