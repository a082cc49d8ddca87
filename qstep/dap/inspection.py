"""threads, stackTrace, scopes, variables, evaluate, exceptionInfo: the stopped state."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from qstep.dap.state import THREAD_ID, DapState, Result, ref
from qstep.debugger.regs import BPF_TO_X86
from qstep.errors import QstepError, UsageError


class Inspection:
    """Requests that read the program's state where it stopped."""

    def __init__(self, state: DapState) -> None:
        self.s = state

    def req_threads(self, args: dict[str, Any]) -> Result:
        name = self.s.prog.name if self.s.prog is not None else "program"
        return {"threads": [{"id": THREAD_ID, "name": name}]}, None

    # -- frames --------------------------------------------------------------
    def req_stackTrace(self, args: dict[str, Any]) -> Result:
        if self.s.rejected is not None:
            return {"stackFrames": [self._rejection_frame()], "totalFrames": 1}, None
        frames = [self._frame(level) for level in range(self._frame_count())]
        start, count = int(args.get("startFrame", 0)), int(args.get("levels", 0) or 0)
        shown = frames[start:start + count] if count else frames[start:]
        return {"stackFrames": shown, "totalFrames": len(frames)}, None

    def _frame_count(self) -> int:
        if self.s.view is not None:
            return len(self.s.view.frames())
        return len(self.s.debugger().frames())

    def _frame(self, level: int) -> dict[str, Any]:
        if self.s.view is not None:
            f = self.s.view.frames()[level]
            site = f.call.site
            out: dict[str, Any] = {"id": level + 1, "name": f.function + (
                " [inlined]" if f.inlined else ""), "line": f.line, "column": 1 if f.line else 0}
            if f.file:
                out["source"] = self.s.source(f.file)
        else:
            call = self.s.debugger().frames()[level]
            site = call.site
            out = {"id": level + 1, "name": call.function.name, "line": 0, "column": 0}
            if site is not None and site.source is not None:
                out |= {"source": self.s.source(site.source.file), "line": site.source.line,
                        "column": 1}
        if site is not None:
            out["instructionPointerReference"] = ref(site)
        return out

    # -- scopes and variables ------------------------------------------------
    def req_scopes(self, args: dict[str, Any]) -> Result:
        level = int(args["frameId"]) - 1
        scopes = []
        view = self.s.view
        if view is not None:
            frame = view.select(level)
            if frame.scope is not None:
                scopes.append(self.scope("Locals", lambda: self._vars(level, False)))
                scopes.append(self.scope("Arguments", lambda: self._vars(level, True)))
        scopes.append(self.scope("Registers", self._registers, "registers"))
        dbg = self.s.debugger()
        if dbg.prog.verifier_log and not dbg.prog.foreign:
            scopes.append(self.scope("Verifier", self._verifier, "registers"))
        scopes.append(self.scope("Maps", self._maps) | {"expensive": True})
        if view is not None and self._globals():
            scopes.append(self.scope("Globals", self._global_vars))
        return {"scopes": scopes}, None

    def scope(self, name: str, children: Callable[[], list[dict[str, Any]]],
              hint: str = "locals") -> dict[str, Any]:
        """A DAP Scope whose variables ``children`` lists."""
        return {"name": name, "presentationHint": hint, "expensive": False,
                "variablesReference": self.s.handles.add(children)}

    def _vars(self, level: int, params: bool) -> list[dict[str, Any]]:
        view = self.s.view
        assert view is not None
        frame = view.select(level)
        if frame.scope is None:
            return []
        chosen = frame.scope.params if params else frame.scope.locals
        return [self.s.handles.value_variable(v.name, view.value(frame, v), v.name)
                for v in chosen]

    def _registers(self) -> list[dict[str, Any]]:
        regs = self.s.debugger().regs()
        return [{"name": f"r{n}", "value": f"{regs[n]:#x}", "type": f"u64 ({BPF_TO_X86[n]})",
                 "evaluateName": f"$r{n}", "variablesReference": 0} for n in range(11)]

    def _verifier(self) -> list[dict[str, Any]]:
        """Each register beside what the verifier proved before this instruction
        (``info verifier``: the union over the paths it explored here)."""
        data = self.s.command_set().info_verifier("").data
        out = []
        for name, reg in data["regs"].items():
            claims = " | ".join(reg["verifier"]) or "not initialized"
            mark = "   (outside every state the verifier kept here)" \
                if reg["inside"] is False else ""
            out.append({"name": name, "value": f"{reg['value']:#x}   verifier: {claims}{mark}",
                        "evaluateName": f"${name}", "variablesReference": 0,
                        "presentationHint": {"attributes": ["readOnly"]}})
        return out

    def _maps(self) -> list[dict[str, Any]]:
        """Each map of the program with its entries, read from guest memory (``print MAP``)."""
        assert self.s.prog is not None
        out = []
        for name in sorted(self.s.prog.maps):
            try:
                result = self.s.command_set().maps.print(name)
            except QstepError as err:
                out.append({"name": name, "value": f"<{err}>", "variablesReference": 0})
                continue
            entries = result[1]["entries"] if result is not None else []
            reference = self.s.handles.add(_entries(entries))
            out.append({"name": name, "value": f"{len(entries)} entries",
                        "variablesReference": reference})
        return out

    def _globals(self) -> list[str]:
        assert self.s.view is not None
        return sorted(n for n, g in self.s.view.model.globals.items()
                      if g.section.startswith((".data", ".rodata", ".bss")))

    def _global_vars(self) -> list[dict[str, Any]]:
        view = self.s.view
        assert view is not None
        return [self.s.handles.value_variable(n, view.global_value(view.model.globals[n]), n)
                for n in self._globals()]

    def req_variables(self, args: dict[str, Any]) -> Result:
        return {"variables": self.s.handles.children(int(args["variablesReference"]))}, None

    # -- expressions ---------------------------------------------------------
    def req_evaluate(self, args: dict[str, Any]) -> Result:
        expr, context = str(args["expression"]), args.get("context", "repl")
        if "frameId" in args and self.s.view is not None:
            self.s.view.select(int(args["frameId"]) - 1)
        commands = self.s.command_set()
        if context == "repl" and re.match(r"[a-z]+\b", expr) and not self._is_c_name(expr):
            out = commands.execute(expr)
            return {"result": out.text, "variablesReference": 0}, None
        value = commands.source.resolve(expr) if commands.source is not None else None
        if value is not None:
            var = self.s.handles.value_variable(expr, value, expr)
            return {"result": var["value"], "type": var["type"],
                    "variablesReference": var["variablesReference"]}, None
        return {"result": commands.cmd_print(expr).text, "variablesReference": 0}, None

    def _is_c_name(self, expr: str) -> bool:
        """Whether ``expr`` starts with a C variable rather than a debugger command."""
        word = re.match(r"[A-Za-z_]\w*", expr)
        commands = self.s.command_set()
        if word is None or commands.source is None or not self.s.debugger().stopped:
            return False
        try:
            return commands.source.lookup(word.group(0)) is not None
        except QstepError:
            return False

    # -- verifier rejections -------------------------------------------------
    def req_exceptionInfo(self, args: dict[str, Any]) -> Result:
        rejected = self.s.rejected
        if rejected is None:
            raise UsageError("no exception: the program was not rejected")
        return {"exceptionId": "VerifierError", "breakMode": "always",
                "description": str(rejected).splitlines()[0],
                "details": {"message": rejected.log, "typeName": "VerifierError"}}, None

    def report_rejection(self) -> None:
        """The rejection as an ``exception`` stop (after ``configurationDone``)."""
        assert self.s.rejected is not None
        self.s.output(str(self.s.rejected) + "\n", "stderr")
        self.s.send("stopped", {"reason": "exception", "threadId": THREAD_ID,
                                "description": str(self.s.rejected).splitlines()[0],
                                "allThreadsStopped": True})

    def _rejection_frame(self) -> dict[str, Any]:
        assert self.s.rejected is not None
        spots = re.findall(r"@ (\S+):(\d+)", self.s.rejected.log)
        frame: dict[str, Any] = {"id": 1, "name": "verifier rejection", "line": 0, "column": 0}
        if spots:
            file, line = spots[-1]
            frame |= {"source": self.s.source(file), "line": int(line), "column": 1}
        return frame


def _entries(entries: list[dict[str, str]]) -> Callable[[], list[dict[str, Any]]]:
    """A map's entries as DAP variables (key → value)."""
    return lambda: [{"name": e["key"], "value": e["value"], "variablesReference": 0}
                    for e in entries]
