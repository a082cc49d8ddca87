"""The MCP stepping session: one guest and one debugger kept between tool calls.

It is set up exactly as ``qstep debug`` sets up (same options, same loading) and
runs the debugger's own commands; results are the commands' JSON data.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from qstep.commands.debugging import debugger_for
from qstep.debugger.commands import CommandSet
from qstep.errors import UsageError


class SteppingSession:
    """At most one debugged program at a time."""

    def __init__(self) -> None:
        self.stack = ExitStack()
        self.commands: CommandSet | None = None

    def start(self, obj: Path, packet: str, prog: str | None, maps: str | None,
              kernel: str | None) -> dict[str, Any]:
        from qstep.cli import build_parser  # the debug command's own options

        self.stop()
        argv = ["debug", str(obj), "--packet", packet, *(["--prog", prog] if prog else []),
                *(["--maps", maps] if maps else []), *(["--kernel", kernel] if kernel else []),
                "--json"]
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            raise UsageError(f"bad debug options: {' '.join(argv[1:])}") from None
        dbg, view = self.stack.enter_context(debugger_for(args))
        self.commands = CommandSet(dbg, view)
        self.commands.execute(f"tbreak #{dbg.prog.functions[0].start_insn}")
        return {"program": dbg.prog.name, **self.commands.execute("run").data}

    def execute(self, command: str) -> dict[str, Any]:
        if self.commands is None:
            raise UsageError("no stepping session: call debug_start first")
        out = self.commands.execute(command)
        return {"text": out.text, "data": out.data}

    def stop(self) -> dict[str, Any]:
        was = self.commands is not None
        self.commands = None
        self.stack.close()
        return {"stopped": was}
