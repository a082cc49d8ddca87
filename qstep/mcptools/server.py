"""``qstep mcp``: qstep's verbs as Model Context Protocol tools (the MCP Python SDK).

Every tool runs the command's own code (``run_program``, ``inspect_program``,
``trace_main``, ``disasm_program``, the debugger) with its options parsed by the
command line's parser, so it answers exactly as ``qstep CMD --json`` does; but on
the server's guests: one per kernel, booted on first use and kept for every later
call (``status`` shows them), shut down when the server ends (the client
disconnects, or SIGTERM/SIGINT). A bad call is a tool error of one line and leaves
the guest as it was; a guest that died is booted again at the next call.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from qstep.cli import Parser, build_parser
from qstep.commands.debugging import trace_main
from qstep.commands.disasm import disasm_program
from qstep.commands.inspect import inspect_program, stop_json
from qstep.commands.lines import Lines
from qstep.commands.run import run_program
from qstep.errors import QstepError, UsageError
from qstep.mcptools.guests import to_stderr
from qstep.mcptools.worker import GuestWorker

T = TypeVar("T")

server: MCPServer = MCPServer("qstep", instructions=(
    "qstep runs eBPF programs on a real Linux kernel under QEMU. Objects are BPF ELF "
    "files compiled with clang -g -target bpf; packets are files of hex or hex strings. "
    "One guest per kernel is booted on first use and kept for later calls."))
WORKER = GuestWorker()


class ToolParser(Parser):
    """The command line's parser, its errors raised (not printed and exited)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse(argv: list[str]) -> argparse.Namespace:
    """Options for a command, as ``qstep ARGV --json`` would take them."""
    return build_parser(ToolParser).parse_args([*argv, "--json"])


def program_args(obj: str, prog: str | None, kernel: str | None) -> list[str]:
    """PROG, --prog, --kernel as the command line takes them."""
    return [obj, *(["--prog", prog] if prog else []), *(["--kernel", kernel] if kernel else [])]


def input_args(packets: list[str], maps: str | None, map_entries: list[str] | None) -> list[str]:
    """--packet, --maps, --map as the command line takes them ('NAME KEY=VALUE' entries;
    values that start with '-' are never read as options)."""
    out = [f"--packet={p}" for p in packets]
    out += ["--maps", maps] if maps else []
    for entry in map_entries or []:
        name, _, value = entry.strip().partition(" ")
        out += ["--map", name, f" {value.strip()}"]  # a leading space: never an option
    return out


async def _on_guest(ctx: Context | None, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` on the guest thread; a qstep error becomes a one-line tool error."""
    try:
        return await WORKER.call(ctx, fn, *args)
    except QstepError as err:
        raise ToolError(str(err).splitlines()[0] if str(err) else type(err).__name__) from err
    except Exception as err:
        raise ToolError(f"internal error (a qstep bug): {type(err).__name__}: "
                        f"{(str(err).splitlines() or [''])[0]}") from err


@server.tool()
async def disasm(ctx: Context, object: str, prog: str | None = None,
                 kernel: str | None = None) -> dict[str, Any]:
    """Load a BPF object in the guest and list its instructions: BPF, source line, x86
    (as ``qstep disasm --json``)."""
    args = parse(["disasm", *program_args(object, prog, kernel)])
    out = await _on_guest(ctx, disasm_program, args, WORKER.pool.scope)
    return out.as_json()


@server.tool()
async def run(ctx: Context, object: str, packets: list[str], prog: str | None = None,
              maps: str | None = None, map_entries: list[str] | None = None,
              repeat: int = 1, kernel: str | None = None) -> dict[str, Any]:
    """Run the program on each packet (BPF_PROG_TEST_RUN): retvals, packets out, maps
    (as ``qstep run --json``). ``maps``: a file of 'NAME KEY=VALUE' lines;
    ``map_entries``: such lines inline; ``repeat``: runs per packet (mean duration)."""
    args = parse(["run", *program_args(object, prog, kernel),
                  *input_args(packets, maps, map_entries), f"--repeat={repeat}"])
    return (await _on_guest(ctx, run_program, args, WORKER.pool.scope)).as_json()


@server.tool()
async def inspect(ctx: Context, object: str, specs: list[str], packets: list[str],
                  prog: str | None = None, maps: str | None = None, repeat: int = 1,
                  kernel: str | None = None) -> dict[str, Any]:
    """In-guest probes: each spec is 'LOC print ITEMS [if COND]' (see qstep inspect);
    records as ``qstep inspect --json``'s lines. ``repeat``: runs per packet."""
    args = parse(["inspect", *program_args(object, prog, kernel), *specs,
                  *input_args(packets, maps, None), f"--repeat={repeat}"])
    stops: list[dict[str, Any]] = []
    out = await _on_guest(ctx, inspect_program, args, WORKER.pool.scope,
                          lambda dbg, probe, before: stops.append(
                              stop_json(dbg, probe, before)))
    return {"records": [*stops, *out.as_json()]}


@server.tool()
async def trace(ctx: Context, object: str, packet: str, prog: str | None = None,
                maps: str | None = None, kernel: str | None = None) -> dict[str, Any]:
    """Every BPF instruction of one run: index, source line, registers after it
    (records as ``qstep trace --json``'s lines)."""
    args = parse(["trace", *program_args(object, prog, kernel),
                  *input_args([packet], maps, None)])
    lines = Lines(keep=True)
    await _on_guest(ctx, trace_main, args, WORKER.pool.scope, lines)
    return {"records": lines.kept}


@server.tool()
async def status() -> dict[str, Any]:
    """The guests this server keeps (kernel, QEMU pid, calls, who holds it) and how
    many it has booted; answered at once, also while a call runs."""
    return WORKER.pool.status()


@server.tool()
async def debug_start(ctx: Context, object: str, packet: str, prog: str | None = None,
                      maps: str | None = None, kernel: str | None = None) -> dict[str, Any]:
    """Start a stepping session on the kernel's guest: load, stop at the program's entry.
    The guest is held by the session until debug_stop."""
    args = parse(["debug", *program_args(object, prog, kernel),
                  *input_args([packet], maps, None)])
    return await _on_guest(ctx, WORKER.stepping.start, args)


@server.tool()
async def debug_command(command: str) -> dict[str, Any]:
    """One debugger command in the stepping session: break LOC, continue, step, next,
    stepi, finish, print EXPR, info locals, backtrace, x/4gx ADDR... (gdb names)."""
    return await _on_guest(None, WORKER.stepping.execute, command)


@server.tool()
async def debug_stop() -> dict[str, Any]:
    """End the stepping session (its guest stays for later calls)."""
    return await _on_guest(None, WORKER.stepping.stop)


def _leave(status: int) -> NoReturn:
    """End the process now that the guests are down: flush, skip the interpreter's
    teardown (over a second of CPU for the SDK's modules, past the client's grace)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGINT: shut the guests down, then leave at once (the transport's reader
    thread waits on stdin and would hold a normal exit). During the shutdown that a
    disconnect began, the signal waits for it to end."""
    if WORKER.closing:
        return
    to_stderr(f"{signal.Signals(signum).name}: shutting down")
    WORKER.close()
    _leave(128 + signum)


def serve() -> NoReturn:
    """Serve MCP on stdin/stdout until the client disconnects or a signal comes; then
    shut the guests down and end the process."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _terminate)
    try:
        server.run("stdio")
        to_stderr("the client left: shutting down")
    finally:
        WORKER.close()
    _leave(0)
