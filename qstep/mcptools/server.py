"""``qstep mcp``: qstep's verbs as Model Context Protocol tools (the MCP Python SDK).

One-shot verbs (``disasm``, ``run``, ``inspect``, ``trace``) run the ``qstep`` command
with ``--json`` in a child process and return its JSON, so they answer exactly as
the command line does; progress is reported as the child's output arrives. The
stepping session keeps one guest and one debugger alive between calls
(``debug_start`` ... ``debug_stop``) and runs the debugger's own commands.
"""

from __future__ import annotations

import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

from qstep.mcptools.stepping import SteppingSession

server: MCPServer = MCPServer("qstep", instructions=(
    "qstep runs eBPF programs on a real Linux kernel under QEMU. Objects are BPF ELF "
    "files compiled with clang -g -target bpf; packets are files of hex or hex strings."))
# Guest work for the stepping session runs on this one long-lived thread: QEMU dies
# with the thread that started it, so the thread must outlive the session.
GUEST_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qstep-guest")
STEPPING = SteppingSession()


def _program_args(obj: str, prog: str | None, kernel: str | None) -> list[str]:
    return [obj, *(["--prog", prog] if prog else []), *(["--kernel", kernel] if kernel else [])]


def _input_args(packets: list[str], maps: str | None, map_entries: list[str] | None) -> list[str]:
    out = [a for p in packets for a in ("--packet", p)]
    out += ["--maps", maps] if maps else []
    for entry in map_entries or []:
        name, _, value = entry.strip().partition(" ")
        out += ["--map", name, value.strip()]
    return out


async def _qstep(ctx: Context, argv: list[str], steps: int) -> Any:
    """Run ``qstep ARGV --json``; its JSON output (an object, or a list of JSON lines)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qstep.cli", *argv, "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await ctx.report_progress(0, steps, "booting the guest")
    assert proc.stdout is not None
    lines: list[bytes] = []
    while line := await proc.stdout.readline():
        lines.append(line)
        await ctx.report_progress(min(len(lines), steps - 1), steps, "running")
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    status = await proc.wait()
    await ctx.report_progress(steps, steps, "done")
    text = b"".join(lines).decode()
    if status != 0:
        raise ValueError(stderr.strip().splitlines()[-1] if stderr.strip() else
                         f"qstep exited with status {status}")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


@server.tool()
async def disasm(ctx: Context, object: str, prog: str | None = None,
                 kernel: str | None = None) -> dict[str, Any]:
    """Load a BPF object in the guest and list its instructions: BPF, source line, x86."""
    return {"listing": await _qstep(ctx, ["disasm", *_program_args(object, prog, kernel)], 3)}


@server.tool()
async def run(ctx: Context, object: str, packets: list[str], prog: str | None = None,
              maps: str | None = None, map_entries: list[str] | None = None,
              kernel: str | None = None) -> dict[str, Any]:
    """Run the program on each packet (BPF_PROG_TEST_RUN): retvals, packets out, maps.

    ``maps``: a file of 'NAME KEY=VALUE' lines; ``map_entries``: such lines inline.
    """
    argv = ["run", *_program_args(object, prog, kernel), *_input_args(packets, maps,
                                                                      map_entries)]
    result: dict[str, Any] = await _qstep(ctx, argv, 3)
    return result


@server.tool()
async def inspect(ctx: Context, object: str, specs: list[str], packets: list[str],
                  prog: str | None = None, maps: str | None = None,
                  kernel: str | None = None) -> dict[str, Any]:
    """In-guest probes: each spec is 'LOC print ITEMS [if COND]' (see qstep inspect)."""
    argv = ["inspect", *_program_args(object, prog, kernel), *specs,
            *_input_args(packets, maps, None)]
    lines = await _qstep(ctx, argv, 3)
    return {"records": lines if isinstance(lines, list) else [lines]}


@server.tool()
async def trace(ctx: Context, object: str, packet: str, prog: str | None = None,
                maps: str | None = None, kernel: str | None = None) -> dict[str, Any]:
    """Every BPF instruction of one run: index, source line, registers after it."""
    argv = ["trace", *_program_args(object, prog, kernel), *_input_args([packet], maps, None)]
    lines = await _qstep(ctx, argv, 3)
    return {"records": lines if isinstance(lines, list) else [lines]}


async def _on_guest(fn: Any, *args: Any) -> Any:
    return await asyncio.wrap_future(GUEST_THREAD.submit(fn, *args))


@server.tool()
async def debug_start(ctx: Context, object: str, packet: str, prog: str | None = None,
                      maps: str | None = None, kernel: str | None = None) -> dict[str, Any]:
    """Start a stepping session: boot, load, stop at the program's entry."""
    await ctx.report_progress(0, 2, "booting the guest")
    result: dict[str, Any] = await _on_guest(STEPPING.start, Path(object), packet, prog,
                                             maps, kernel)
    await ctx.report_progress(2, 2, "stopped at the entry")
    return result


@server.tool()
async def debug_command(command: str) -> dict[str, Any]:
    """One debugger command in the stepping session: break LOC, continue, step, next,
    stepi, finish, print EXPR, info locals, backtrace, x/4gx ADDR... (gdb names)."""
    result: dict[str, Any] = await _on_guest(STEPPING.execute, command)
    return result


@server.tool()
async def debug_stop() -> dict[str, Any]:
    """End the stepping session and shut its guest down."""
    result: dict[str, Any] = await _on_guest(STEPPING.stop)
    return result


def serve() -> None:
    """Serve MCP on stdin/stdout."""
    try:
        server.run("stdio")
    finally:
        GUEST_THREAD.submit(STEPPING.stop).result()
        GUEST_THREAD.shutdown()
