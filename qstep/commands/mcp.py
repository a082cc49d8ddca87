"""``qstep mcp``: a Model Context Protocol server on stdio."""

from __future__ import annotations

import argparse
from typing import NoReturn


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("mcp", help="Model Context Protocol server (tools for coding agents)")
    p.set_defaults(func=mcp_main)


def mcp_main(args: argparse.Namespace) -> NoReturn:
    from qstep.mcptools.server import serve

    serve()
