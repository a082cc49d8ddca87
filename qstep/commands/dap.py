"""``qstep dap``: the Debug Adapter Protocol server editors start."""

from __future__ import annotations

import argparse
import os
import sys

from qstep.dap.server import serve_port, serve_stdio


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dap", help="Debug Adapter Protocol server (VS Code, nvim-dap, dape)")
    p.add_argument("--port", type=port_number, default=None, metavar="N",
                   help="listen on 127.0.0.1:N instead of stdio (0: any free port, printed)")
    p.set_defaults(func=dap_main)


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, not '{text}'")
    return int(text)


def dap_main(args: argparse.Namespace) -> int:
    if args.port is None:
        serve_stdio()
    else:
        serve_port(args.port, lambda text: print(text, flush=True))
    # The guest is down. The reader thread may still block on its stream (a client
    # that sent disconnect keeps its end open): leave without waiting for it, as the
    # interpreter aborts when it finalizes a stream a daemon thread holds.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
