"""The ``qstep`` command line."""

from __future__ import annotations

import argparse
import os
import sys

from qstep import __version__
from qstep.commands import (
    bisect,
    debugging,
    disasm,
    images,
    inspect,
    run,
    scenario_test,
    verify_jit,
    why,
)
from qstep.errors import QstepError, VerifierError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qstep", description="Debug eBPF programs on a real "
                                     "kernel under QEMU.")
    parser.add_argument("--version", action="version", version=f"qstep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (images, run, disasm, debugging, inspect, scenario_test, bisect,
                   verify_jit, why):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except VerifierError as err:
        print(f"qstep: {err}", file=sys.stderr)
        return err.exit_code
    except QstepError as err:
        print(f"qstep: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("qstep: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head(1) and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
