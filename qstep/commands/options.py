"""Options several commands share, each declared once: one spelling, help and check.

The program, guest-setup, input and load options are in ``common``; these are the
smaller ones (output format, repeats, the debug connection, kernels, accelerator).
"""

from __future__ import annotations

import argparse
import re

from qstep.recorder.control import DEFAULT_LIMIT

ACCELS = ("tcg", "kvm")
BACKENDS = ("rsp", "gdb")
KERNEL_HELP = "kernel: 6.1 (default), 6.12, 7.2, 7.3, a package name or a path to a bzImage"
KERNELS_HELP = ("kernels: K[,K...] (each a version such as 6.12, a package name or a "
                "bzImage path) or 'all'")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (counts, limits, repeats)."""
    if not re.fullmatch(r"\s*[0-9]+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not '{text}'")
    return int(text)


def add_json_option(parser: argparse.ArgumentParser, shape: str) -> None:
    """--json: machine-readable output on stdout; ``shape`` says what is printed."""
    parser.add_argument("--json", action="store_true",
                        help=f"machine-readable output on stdout: {shape} (see docs/json.md); "
                        "notes and errors go to stderr")


def add_repeat_option(parser: argparse.ArgumentParser, detail: str) -> None:
    """--repeat N: how many runs per packet."""
    parser.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                        help=f"run each packet N times (default 1); {detail}")


def add_commands_option(parser: argparse.ArgumentParser, when: str, then: str) -> None:
    """-ex CMD: debugger commands given on the command line."""
    parser.add_argument("-ex", dest="commands", action="append", default=[], metavar="CMD",
                        help=f"run this debugger command{when} (repeatable, in order); "
                        f"{then}")


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """--backend: how the host talks to QEMU's gdbstub."""
    parser.add_argument("--backend", choices=BACKENDS, default="rsp",
                        help="debug connection: the raw GDB remote protocol (rsp, default, "
                        "faster) or gdb/MI (gdb)")


def add_record_limit_option(parser: argparse.ArgumentParser) -> None:
    """--record-limit: the largest recording the recorder plugin writes."""
    parser.add_argument("--record-limit", type=positive_int, default=DEFAULT_LIMIT,
                        metavar="BYTES", help=f"largest recording in bytes (default "
                        f"{DEFAULT_LIMIT >> 20} MiB)")


def add_accel_option(parser: argparse.ArgumentParser) -> None:
    """--accel: QEMU's accelerator."""
    parser.add_argument("--accel", choices=ACCELS, default="tcg",
                        help="QEMU accelerator (default tcg)")


def add_kernels_option(parser: argparse.ArgumentParser, default: str,
                       *aliases: str) -> None:
    """--kernel K[,K...]|all for the commands that run on several kernels
    (``args.kernel``, None when not given); ``default`` says what applies then."""
    required = not default
    parser.add_argument("--kernel", *aliases, dest="kernel", required=required,
                        metavar="K[,K...]",
                        help=KERNELS_HELP + (f" (default: {default})" if default else ""))
