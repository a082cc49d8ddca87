"""dataBreakpointInfo and setDataBreakpoints: hardware watchpoints on C objects, as the
REPL's ``watch``/``rwatch``/``awatch`` (``qstep.debugger.watches``).

A watchpoint watches an address of the current run (stack objects move between
runs), so data breakpoints are set while the program is stopped and end with the
run; a hit stops after the accessing instruction and reports it, its line, and
the object's old and new values.
"""

from __future__ import annotations

from typing import Any

from qstep.dap.state import DapState, Result
from qstep.debugger.engine import Event
from qstep.debugger.watches import Watch
from qstep.errors import QstepError

MAX_STACK = 512
COMMANDS = {"write": "watch", "read": "rwatch", "readWrite": "awatch"}
ENDED = "the run it watched ended (a watchpoint watches one run's address)"
LEFT = "the function whose frame holds it returned (the stack was reused outside the program)"


class DataBreakpoints:
    """The client's data breakpoints (DAP id → the REPL's watch)."""

    def __init__(self, state: DapState) -> None:
        self.s = state
        self.watches: dict[int, Watch] = {}
        self.frames: dict[int, tuple[int, int]] = {}  # id -> its frame's return slot, value
        self.next_id = 10_000  # apart from source/function breakpoint ids

    def req_dataBreakpointInfo(self, args: dict[str, Any]) -> Result:
        name = str(args["name"])
        ref = int(args.get("variablesReference") or 0)
        expr = (self.s.handles.evaluate_name(ref, name) if ref else None) or name
        if "frameId" in args and self.s.view is not None:
            self.s.view.select(int(args["frameId"]) - 1)
        source = self.s.command_set().source
        try:
            value = source.resolve(expr) if source is not None else None
            if value is None:
                return {"dataId": None, "description": f"{expr}: not a C object"}, None
            if value.address is None:
                return {"dataId": None, "description": f"{expr}: not in memory here (a "
                        "register or a constant); only memory can be watched"}, None
        except QstepError as err:
            return {"dataId": None, "description": str(err)}, None
        size = len(value.data)
        return {"dataId": expr, "description": f"{expr} ({size} bytes at {value.address:#x})",
                "accessTypes": list(COMMANDS), "canPersist": False}, None

    def req_setDataBreakpoints(self, args: dict[str, Any]) -> Result:
        source = self.s.command_set().source
        dbg = self.s.debugger()
        for watch in self.watches.values():
            if source is not None and watch in source.watches.items and dbg.stopped:
                source.watches.remove(watch.number)
        self.watches.clear()
        out = []
        for spec in args.get("breakpoints", []):
            self.next_id += 1
            out.append({"id": self.next_id} | self._set(self.next_id, spec))
        return {"breakpoints": out}, None

    def _set(self, dap_id: int, spec: dict[str, Any]) -> dict[str, Any]:
        source = self.s.command_set().source
        dbg = self.s.debugger()
        if source is None:
            return {"verified": False, "message": "no C variables (no DWARF)"}
        if not dbg.running_program or not dbg.stopped:
            return {"verified": False, "message": "set data breakpoints while the program is "
                    "stopped in a run (a watchpoint watches that run's address)"}
        command = COMMANDS.get(str(spec.get("accessType", "write")), "watch")
        try:
            source.watch(command, str(spec["dataId"]))
        except QstepError as err:
            return {"verified": False, "message": str(err)}
        watch = source.watches.items[-1]
        self.watches[dap_id] = watch
        frame = self._frame_of(watch.addr)
        if frame is not None:
            self.frames[dap_id] = frame
        return {"verified": True, "message": f"{command} {watch.text} ({watch.size} bytes at "
                f"{watch.addr:#x})"}

    def hit(self, event: Event) -> tuple[list[int], str] | None:
        """At a watchpoint stop: the data breakpoints hit and the report (access, values);
        None for an access from outside the program (after the watched object's frame
        returned: the watchpoints there are deleted, as gdb does, and the run goes on)."""
        source = self.s.command_set().source
        if source is None or event.watch_addr is None:
            return [], ""
        if self.s.debugger().accessing_site() is None and self._left_frame(event.watch_addr):
            return None
        lines, data = source.watches.report(event)
        numbers = {d["watch"] for d in data}
        ids = sorted(i for i, w in self.watches.items() if w.number in numbers)
        return ids, "\n".join(lines)

    def _frame_of(self, addr: int) -> tuple[int, int] | None:
        """The return-address slot of the frame holding ``addr``, and its value now."""
        dbg = self.s.debugger()
        for frame in dbg.frames():
            if frame.r10 - MAX_STACK <= addr < frame.r10:
                slot = frame.r10 + 8  # above the saved rbp that r10 points to
                return slot, int.from_bytes(dbg.read_memory(slot, 8), "little")
        return None

    def _left_frame(self, addr: int) -> bool:
        """Whether the watched object at ``addr`` belongs to a frame that has returned (its
        return address was overwritten); its data breakpoints are then deleted."""
        source = self.s.command_set().source
        assert source is not None
        dbg = self.s.debugger()
        gone = False
        for dap_id, watch in list(self.watches.items()):
            frame = self.frames.get(dap_id)
            if not watch.addr <= addr < watch.addr + watch.size or frame is None:
                continue
            slot, value = frame
            if int.from_bytes(dbg.read_memory(slot, 8), "little") != value:
                gone = True
                source.watches.remove(watch.number)
                del self.watches[dap_id]
                self.s.send("breakpoint", {"reason": "changed", "breakpoint": {
                    "id": dap_id, "verified": False, "message": f"deleted: {LEFT}"}})
        return gone

    def run_ended(self) -> None:
        """The run's watchpoints are gone: say so for each data breakpoint."""
        for dap_id in self.watches:
            self.s.send("breakpoint", {"reason": "changed", "breakpoint": {
                "id": dap_id, "verified": False, "message": ENDED}})
        source = self.s.command_set().source
        if source is not None:
            source.watches.items.clear()
        self.watches.clear()
        self.frames.clear()
