"""stepBack and reverseContinue: going back through the run recorded as it goes.

With ``"record": true`` in the launch configuration the debugger records each run
(``qstep.debugger.reverse``); the adapter then announces ``supportsStepBack`` with a
``capabilities`` event. Replayed stops ignore breakpoint conditions and hit counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qstep.dap.execution import Execution
from qstep.dap.state import DapState, Result
from qstep.debugger.engine import Event
from qstep.debugger.reverse import ReversibleDebugger
from qstep.debugger.reverse_commands import NO_HISTORY
from qstep.errors import UsageError


def announce_step_back(state: DapState) -> None:
    """After launch: tell the client it can step back, or why it cannot."""
    dbg = state.dbg
    if not isinstance(dbg, ReversibleDebugger):
        return
    if dbg.recorder is not None:
        state.send("capabilities", {"capabilities": {"supportsStepBack": True}})
    else:
        state.output(f"no stepping back: {dbg.unavailable}\n")


class ReverseExecution:
    """The reverse execution requests."""

    def __init__(self, state: DapState, execution: Execution) -> None:
        self.s = state
        self.execution = execution

    def _reversible(self) -> ReversibleDebugger:
        dbg = self.s.debugger()
        if not isinstance(dbg, ReversibleDebugger):
            raise UsageError('stepping back needs the recorder: launch with "record": true')
        dbg.require_reverse()
        return dbg

    def _go(self, action: Callable[[], Event]) -> Result:
        def move() -> Event:
            event = action()
            if event.reason == "history-start":
                self.s.output(f"{NO_HISTORY}\n")
            return event
        return {}, lambda: self.execution.go(move, stepping=True)

    def req_stepBack(self, args: dict[str, Any]) -> Result:
        dbg = self._reversible()
        if args.get("granularity") == "instruction":
            return self._go(lambda: dbg.reverse_stepi(True))
        return self._go(lambda: dbg.reverse_step_line(True))

    def req_reverseContinue(self, args: dict[str, Any]) -> Result:
        dbg = self._reversible()
        return self._go(dbg.reverse_continue)
