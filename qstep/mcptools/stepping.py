"""The MCP stepping session: one debugger kept between tool calls, on a kept guest.

It is set up exactly as ``qstep debug`` sets up (same options, same loading), on the
server's guest for its kernel, which it holds until ``stop``; it runs the debugger's
own commands, and results are the commands' JSON data.
"""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager, ExitStack
from typing import Any

from qstep.commands.debugging import debugger_for
from qstep.debugger.commands import CommandSet
from qstep.errors import MachineError, UsageError
from qstep.mcptools.guests import GuestPool, to_stderr
from qstep.session import Session


class SteppingSession:
    """At most one debugged program at a time."""

    def __init__(self, pool: GuestPool) -> None:
        self.pool = pool
        self.stack = ExitStack()
        self.commands: CommandSet | None = None

    def held_guest(self, args: argparse.Namespace) -> AbstractContextManager[Session]:
        return self.pool.scope(args, "the stepping session")

    def start(self, args: argparse.Namespace) -> dict[str, Any]:
        """``args``: parsed ``qstep debug`` options. Stops at the program's entry."""
        self.stop()
        try:
            dbg, view = self.stack.enter_context(debugger_for(args, sessions=self.held_guest))
            self.commands = CommandSet(dbg, view)
            self.commands.execute(f"tbreak #{dbg.prog.functions[0].start_insn}")
            return {"program": dbg.prog.name, **self.commands.execute("run").data}
        except BaseException:
            self.stop()
            raise

    def execute(self, command: str) -> dict[str, Any]:
        if self.commands is None:
            raise UsageError("no stepping session: call debug_start first")
        try:
            out = self.commands.execute(command)
        except MachineError:
            self.stop()  # the guest is gone; the next call boots a new one
            raise
        return {"text": out.text, "data": out.data}

    def stop(self) -> dict[str, Any]:
        was = self.commands is not None
        self.commands = None
        stack, self.stack = self.stack, ExitStack()
        try:
            stack.close()
        except Exception as err:  # the guest failed under the debugger: it was discarded
            to_stderr(f"the stepping session ended with an error: {err}")
        return {"stopped": was}
