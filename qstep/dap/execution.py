"""continue, next, stepIn, stepOut, pause: run the packets one after another and report
where the program stopped (``stopped``) or that the last one ended (``exited``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qstep.commands.run import dump_maps, maps_text
from qstep.dap.bprequests import BreakpointRequests
from qstep.dap.databps import DataBreakpoints
from qstep.dap.state import THREAD_ID, DapState, Result
from qstep.debugger.engine import Event, RunRequest
from qstep.errors import UsageError


class Execution:
    """Execution requests; every packet is one BPF_PROG_TEST_RUN."""

    def __init__(self, state: DapState, breakpoints: BreakpointRequests,
                 data: DataBreakpoints) -> None:
        self.s = state
        self.bps = breakpoints
        self.data = data

    def first_run(self) -> None:
        """After ``configurationDone``: the first packet (stopping at entry if asked)."""
        assert self.s.config is not None
        dbg = self.s.debugger()
        if self.s.config.stop_on_entry:
            dbg.add_breakpoint(f"#{dbg.prog.functions[0].start_insn}", temporary=True)
        self.bps.sync()
        if self.s.config.stop_on_entry:
            self.report(dbg.run(), entry=True)
            return
        self.go(dbg.run)

    def req_continue(self, args: dict[str, Any]) -> Result:
        return {"allThreadsContinued": True}, lambda: self.go(self.s.debugger().cont)

    def req_next(self, args: dict[str, Any]) -> Result:
        dbg = self.s.debugger()
        if args.get("granularity") == "instruction":
            return {}, lambda: self.go(lambda: dbg.stepi(True), stepping=True)
        return {}, lambda: self.go(lambda: dbg.step_line(True), stepping=True)

    def req_stepIn(self, args: dict[str, Any]) -> Result:
        dbg = self.s.debugger()
        if args.get("granularity") == "instruction":
            return {}, lambda: self.go(lambda: dbg.stepi(False), stepping=True)
        return {}, lambda: self.go(lambda: dbg.step_line(False), stepping=True)

    def req_stepOut(self, args: dict[str, Any]) -> Result:
        return {}, lambda: self.go(self._step_out, stepping=True)

    def _step_out(self) -> Event:
        """``finish``; out of an inlined call: next lines until its frame is gone."""
        dbg, view = self.s.debugger(), self.s.view
        frames = view.frames() if view is not None else []
        if not frames or not frames[0].inlined:
            return dbg.finish()
        depth = len(frames)
        while True:
            event = dbg.step_line(True)
            if event.kind == "exited" or event.reason == "breakpoint" or \
                    len(view.frames()) < depth:  # type: ignore[union-attr]
                return event

    def req_pause(self, args: dict[str, Any]) -> Result:
        raise UsageError("pause: a BPF test run lasts microseconds; set a breakpoint instead")

    def go(self, action: Callable[[], Event], stepping: bool = False) -> None:
        """Run until something the user asked for stops the program, or the last packet ends."""
        self.s.handles.reset()
        dbg = self.s.debugger()
        event = action()
        while True:
            if event.kind == "exited":
                self.bps.probes.drain()
                self.data.run_ended()
                self._exited(event)
                if self.s.packet_index + 1 >= len(self.s.packets):
                    self._maps_output()
                    self._probe_output()
                    self.finish()
                    return
                self.s.packet_index += 1
                dbg.request = RunRequest(self.s.packets[self.s.packet_index])
                self.bps.sync()
                event = dbg.run()
                continue
            if event.reason == "kernel":  # a probe asked for a stop (or another's helper)
                event, ids = self.bps.probes.hand_over()
                if ids:
                    self.report(event, ids=ids)
                    return
                continue
            if event.watch_addr is not None:
                found = self.data.hit(event)
                if found is None:
                    event = dbg.cont()
                    continue
                ids, text = found
                self.s.output(text + "\n")
                self.report(event, ids=ids, reason="data breakpoint", text=text)
                return
            if event.reason == "breakpoint" or stepping or event.site is not None:
                self.report(event)
                return
            event = dbg.cont()

    def report(self, event: Event, entry: bool = False, ids: list[int] | None = None,
               reason: str = "breakpoint", text: str = "") -> None:
        """The ``stopped`` event for a stop (``ids``: the breakpoints a probe or a
        watchpoint reported, with their ``reason`` and ``text``)."""
        if ids is None:
            ids = self.bps.hit_ids() if event.reason == "breakpoint" else []
        else:
            event.reason = reason
        reason = "entry" if entry else {"breakpoint": "breakpoint", "finish": "step",
                                        "step": "step", "data breakpoint": "data breakpoint",
                                        }.get(event.reason, "step")
        if ids and reason == "step":
            reason = "breakpoint"
        if reason == "breakpoint" and not ids:
            reason = "step"
        body: dict[str, Any] = {"reason": reason, "threadId": THREAD_ID,
                                "allThreadsStopped": True}
        if ids:
            body["hitBreakpointIds"] = ids
        if text:
            body["description"], body["text"] = text.splitlines()[0], text
        self.s.send("stopped", body)

    def _exited(self, event: Event) -> None:
        assert event.retval is not None
        self.s.retvals.append(event.retval)
        text = self.s.command_set().event_output(event).text
        number = self.s.packet_index + 1
        self.s.output(f"packet {number}: {text}\n",
                      data={"packet": number, "retval": event.retval})

    def _maps_output(self) -> None:
        """The maps after the last run, as ``qstep run`` prints them."""
        assert self.s.session is not None and self.s.prog is not None
        text = "\n".join(maps_text(self.s.prog, dump_maps(self.s.session, self.s.prog)))
        self.s.output(f"maps after the runs:\n{text}\n")

    def _probe_output(self) -> None:
        """What the in-guest probes counted, and how often the VM stopped."""
        dbg = self.s.debugger()
        for row in self.bps.probes.summary():
            counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in row.items()
                               if k != "breakpoint")
            self.s.output(f"breakpoint {row['breakpoint']} (in-guest probe): {counts}\n",
                          data={"probe": row})
        self.s.output(f"VM stops: {dbg.vm_stops}\n", data={"vm_stops": dbg.vm_stops})

    def finish(self) -> None:
        """``exited`` (the last packet's retval) and ``terminated``, once."""
        if not self.s.finished:
            self.s.finished = True
            self.s.send("exited", {"exitCode": self.s.retvals[-1] if self.s.retvals else 0})
            self.s.send("terminated", {})
