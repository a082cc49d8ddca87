"""DAP requests → ``Session``/``Debugger`` calls. No debugging logic lives here.

One adapter serves one debug session: ``launch`` (or ``attach``) boots the guest
and opens the program; ``configurationDone`` runs the first packet; every packet
is one BPF_PROG_TEST_RUN, and the session ends after the last one.
Handlers return the response body and, optionally, work to do after the response
is sent (execution requests answer first, then report ``stopped``/``exited``).
The requests are served by parts with one job each (breakpoints, execution,
inspection of the stopped state, code and memory) over one shared ``DapState``.
"""

from __future__ import annotations

import sys
from typing import Any

from qstep.commands.common import open_in_session, program_source, read_setup
from qstep.dap.bprequests import BreakpointRequests
from qstep.dap.code import Code
from qstep.dap.databps import DataBreakpoints
from qstep.dap.execution import Execution
from qstep.dap.inspection import Inspection
from qstep.dap.launch import parse_config
from qstep.dap.reverse import ReverseExecution, announce_step_back
from qstep.dap.setvar import SetVariable
from qstep.dap.state import DapState, Result, Send
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import RunRequest
from qstep.debugger.guestmaps import fetch_kernel_btf
from qstep.debugger.source import SourceView
from qstep.errors import QstepError, UsageError, VerifierError
from qstep.session import FromObject, Session
from qstep.userinput import read_packet

CAPABILITIES = {
    "supportsConfigurationDoneRequest": True, "supportsConditionalBreakpoints": True,
    "supportsHitConditionalBreakpoints": True, "supportsLogPoints": True,
    "supportsFunctionBreakpoints": True, "supportsInstructionBreakpoints": True,
    "supportsEvaluateForHovers": True, "supportsDisassembleRequest": True,
    "supportsReadMemoryRequest": True, "supportsLoadedSourcesRequest": True,
    "supportsExceptionInfoRequest": True, "supportsSteppingGranularity": True,
    "supportsTerminateRequest": True, "supportsStepBack": False,
    "supportsDataBreakpoints": True, "supportsSetVariable": True,
}


class Adapter:
    """One debug session: its lifecycle requests, and the parts serving the others."""

    def __init__(self, send: Send) -> None:
        self.state = DapState(send)
        self.breakpoints = BreakpointRequests(self.state)
        self.data = DataBreakpoints(self.state)
        self.execution = Execution(self.state, self.breakpoints, self.data)
        self.inspection = Inspection(self.state)
        self.parts: list[object] = [self, self.breakpoints, self.data, self.execution,
                                    self.inspection, SetVariable(self.state), Code(self.state)]
        self.parts.append(ReverseExecution(self.state, self.execution))

    @property
    def session(self) -> Session | None:
        """The guest session (None before ``launch``)."""
        return self.state.session

    def handle(self, command: str, args: dict[str, Any]) -> Result:
        """Run one request; raise ``QstepError`` for a failed one."""
        for part in self.parts:
            handler = getattr(part, "req_" + command, None)
            if handler is not None:
                result: Result = handler(args)
                return result
        raise UsageError(f"request '{command}' is not supported")

    def close(self) -> None:
        """Stop everything: detach the debugger and shut the guest down."""
        try:
            self.state.stack.close()
        except QstepError as err:  # the guest is shut down all the same
            print(f"qstep: while stopping: {err}", file=sys.stderr)

    # -- lifecycle -----------------------------------------------------------
    def req_initialize(self, args: dict[str, Any]) -> Result:
        return dict(CAPABILITIES), None

    def req_launch(self, args: dict[str, Any]) -> Result:
        return self._start("launch", args)

    def req_attach(self, args: dict[str, Any]) -> Result:
        return self._start("attach", args)

    def _start(self, request: str, args: dict[str, Any]) -> Result:
        s = self.state
        s.config = parse_config(request, args)
        s.packets = [read_packet(p) for p in s.config.packets]
        source = program_source(s.config.args)
        setup = read_setup(s.config.args)
        s.session = s.stack.enter_context(
            Session(kernel=s.config.args.kernel, accel=s.config.args.accel))
        try:
            s.prog = open_in_session(s.session, source, setup, quiet=True)
        except VerifierError as err:
            s.rejected = err
            return {}, lambda: s.send("initialized", {})
        kernel_btf = fetch_kernel_btf(s.session)  # the agent cannot answer once stopped
        s.dbg = s.stack.enter_context(s.session.debugger(s.prog, RunRequest(s.packets[0]),
                                                         reverse=s.config.record))
        announce_step_back(s)
        s.dbg.kernel_btf = kernel_btf
        s.view = SourceView(source.obj, s.dbg) if isinstance(source, FromObject) else None
        s.commands = CommandSet(s.dbg, s.view)
        s.dbg.breakpoint_filter = self.breakpoints.stops
        return {}, lambda: s.send("initialized", {})

    def req_configurationDone(self, args: dict[str, Any]) -> Result:
        if self.state.rejected is not None:
            return {}, self.inspection.report_rejection
        return {}, self.execution.first_run

    def req_disconnect(self, args: dict[str, Any]) -> Result:
        return {}, self.close

    def req_terminate(self, args: dict[str, Any]) -> Result:
        return {}, self._terminate

    def _terminate(self) -> None:
        self.close()
        self.execution.finish()
