"""DAP requests → ``Session``/``Debugger`` calls. No debugging logic lives here.

One adapter serves one debug session: ``launch`` (or ``attach``) boots the guest
and opens the program; ``configurationDone`` runs the first packet; every packet
is one BPF_PROG_TEST_RUN, and the session ends after the last one.
Handlers return the response body and, optionally, work to do after the response
is sent (execution requests answer first, then report ``stopped``/``exited``).
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from qstep.commands.common import open_in_session, program_source, read_setup
from qstep.commands.run import dump_maps, maps_text
from qstep.dap.breakpoints import HitCondition, LogMessage, UserBreakpoint
from qstep.dap.launch import LaunchConfig, parse_config
from qstep.dap.variables import Handles
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import Breakpoint, Debugger, Event, RunRequest
from qstep.debugger.guestmaps import fetch_kernel_btf
from qstep.debugger.regs import BPF_TO_X86
from qstep.debugger.source import SourceView
from qstep.debugger.sourcefiles import source_lines
from qstep.errors import QstepError, UsageError, VerifierError
from qstep.listing import bpf_text
from qstep.loaded import InsnSite, LoadedProgram
from qstep.session import FromObject, Session
from qstep.userinput import read_packet

Send = Callable[[str, dict[str, Any]], None]  # (event name, body)
After = Callable[[], None]
Result = tuple[dict[str, Any], After | None]
THREAD_ID = 1
CAPABILITIES = {
    "supportsConfigurationDoneRequest": True, "supportsConditionalBreakpoints": True,
    "supportsHitConditionalBreakpoints": True, "supportsLogPoints": True,
    "supportsFunctionBreakpoints": True, "supportsInstructionBreakpoints": True,
    "supportsEvaluateForHovers": True, "supportsDisassembleRequest": True,
    "supportsReadMemoryRequest": True, "supportsLoadedSourcesRequest": True,
    "supportsExceptionInfoRequest": True, "supportsSteppingGranularity": True,
    "supportsTerminateRequest": True, "supportsStepBack": False,
}


class Adapter:
    """The state of one debug session and a handler per DAP request."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.stack = ExitStack()
        self.session: Session | None = None
        self.prog: LoadedProgram | None = None
        self.dbg: Debugger | None = None
        self.view: SourceView | None = None
        self.commands: CommandSet | None = None
        self.config: LaunchConfig | None = None
        self.packets: list[bytes] = []
        self.packet_index = 0
        self.handles = Handles()
        self.source_bps: dict[str, list[UserBreakpoint]] = {}
        self.kind_bps: dict[str, list[UserBreakpoint]] = {}  # function / instruction
        self.by_number: dict[int, UserBreakpoint] = {}
        self.next_bp_id = 1
        self.rejected: VerifierError | None = None
        self.retvals: list[int] = []
        self.finished = False

    # -- dispatch ------------------------------------------------------------
    def handle(self, command: str, args: dict[str, Any]) -> Result:
        """Run one request; raise ``QstepError`` for a failed one."""
        handler = getattr(self, "req_" + command, None)
        if handler is None:
            raise UsageError(f"request '{command}' is not supported")
        result: Result = handler(args)
        return result

    def close(self) -> None:
        """Stop everything: detach the debugger and shut the guest down."""
        try:
            self.stack.close()
        except QstepError as err:  # the guest is shut down all the same
            print(f"qstep: while stopping: {err}", file=sys.stderr)

    def _dbg(self) -> Debugger:
        if self.dbg is None:
            raise UsageError("no program is being debugged (launch first)")
        return self.dbg

    def _commands(self) -> CommandSet:
        if self.commands is None:
            raise UsageError("no program is being debugged (launch first)")
        return self.commands

    # -- lifecycle -----------------------------------------------------------
    def req_initialize(self, args: dict[str, Any]) -> Result:
        return dict(CAPABILITIES), None

    def req_launch(self, args: dict[str, Any]) -> Result:
        return self._start("launch", args)

    def req_attach(self, args: dict[str, Any]) -> Result:
        return self._start("attach", args)

    def _start(self, request: str, args: dict[str, Any]) -> Result:
        self.config = parse_config(request, args)
        self.packets = [read_packet(p) for p in self.config.packets]
        source = program_source(self.config.args)
        setup = read_setup(self.config.args)
        self.session = self.stack.enter_context(
            Session(kernel=self.config.args.kernel, accel=self.config.args.accel))
        try:
            self.prog = open_in_session(self.session, source, setup, quiet=True)
        except VerifierError as err:
            self.rejected = err
            return {}, lambda: self.send("initialized", {})
        kernel_btf = fetch_kernel_btf(self.session)  # the agent cannot answer once stopped
        self.dbg = self.stack.enter_context(
            self.session.debugger(self.prog, RunRequest(self.packets[0])))
        self.dbg.kernel_btf = kernel_btf
        self.view = SourceView(source.obj, self.dbg) if isinstance(source, FromObject) else None
        self.commands = CommandSet(self.dbg, self.view)
        self.dbg.breakpoint_filter = self._breakpoint_stops
        return {}, lambda: self.send("initialized", {})

    def req_configurationDone(self, args: dict[str, Any]) -> Result:
        if self.rejected is not None:
            return {}, self._report_rejection
        return {}, self._first_run

    def _first_run(self) -> None:
        assert self.config is not None
        dbg = self._dbg()
        if self.config.stop_on_entry:
            dbg.add_breakpoint(f"#{dbg.prog.functions[0].start_insn}", temporary=True)
            self._report(dbg.run(), entry=True)
            return
        self._go(dbg.run)

    def req_disconnect(self, args: dict[str, Any]) -> Result:
        return {}, self.close

    def req_terminate(self, args: dict[str, Any]) -> Result:
        return {}, self._terminate

    def _terminate(self) -> None:
        self.close()
        self._finish()

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.send("exited", {"exitCode": self.retvals[-1] if self.retvals else 0})
            self.send("terminated", {})

    # -- breakpoints ---------------------------------------------------------
    def req_setBreakpoints(self, args: dict[str, Any]) -> Result:
        path = str(args.get("source", {}).get("path") or args.get("source", {}).get("name"))
        self._drop(self.source_bps.pop(path, []))
        made, out = [], []
        for spec in args.get("breakpoints", []):
            location = f"{Path(path).name}:{int(spec['line'])}"
            bp, body = self._make(location, spec)
            made += [bp] if bp else []
            out.append(body | {"source": {"path": path}, "line": spec["line"]})
        self.source_bps[path] = made
        return {"breakpoints": out}, None

    def req_setFunctionBreakpoints(self, args: dict[str, Any]) -> Result:
        return self._set_kind("function", [(b["name"], b) for b in args.get("breakpoints", [])])

    def req_setInstructionBreakpoints(self, args: dict[str, Any]) -> Result:
        specs = []
        for b in args.get("breakpoints", []):
            ref, offset = b["instructionReference"], int(b.get("offset", 0))
            specs.append((_instruction_location(ref, offset), b))
        return self._set_kind("instruction", specs)

    def _set_kind(self, kind: str, specs: list[tuple[str, dict[str, Any]]]) -> Result:
        self._drop(self.kind_bps.pop(kind, []))
        made, out = [], []
        for location, spec in specs:
            bp, body = self._make(location, spec)
            made += [bp] if bp else []
            out.append(body)
        self.kind_bps[kind] = made
        return {"breakpoints": out}, None

    def _make(self, location: str, spec: dict[str, Any]) -> tuple[UserBreakpoint | None,
                                                                  dict[str, Any]]:
        """One DAP breakpoint: verified with its real line, or unverified with the reason."""
        try:
            bp = UserBreakpoint(
                self.next_bp_id, condition=spec.get("condition") or None,
                hit_condition=(HitCondition.parse(spec["hitCondition"])
                               if spec.get("hitCondition") else None),
                log=LogMessage.parse(spec["logMessage"]) if spec.get("logMessage") else None)
            engine = [self._dbg().add_breakpoint(location)]  # one, with every location
        except QstepError as err:
            self.next_bp_id += 1
            return None, {"id": self.next_bp_id - 1, "verified": False, "message": str(err),
                          "reason": "failed"}
        self.next_bp_id += 1
        bp.numbers = [e.number for e in engine]
        for number in bp.numbers:
            self.by_number[number] = bp
        return bp, {"id": bp.id, "verified": True, **self._where(engine[0].site)}

    def _drop(self, bps: list[UserBreakpoint]) -> None:
        for bp in bps:
            for number in bp.numbers:
                self.by_number.pop(number, None)
                if self.dbg is not None and number in self.dbg.breakpoints:
                    self.dbg.delete_breakpoint(number)

    def _where(self, site: InsnSite | None) -> dict[str, Any]:
        if site is None or site.source is None:
            return {}
        return {"source": self._source(site.source.file), "line": site.source.line,
                "instructionReference": _ref(site)}

    def _source(self, file: str) -> dict[str, Any]:
        path = self._path(file)
        return {"name": Path(file).name, "path": str(path) if path else file}

    def _path(self, file: str) -> Path | None:
        candidates = [Path(file)]
        if self.config is not None and not Path(file).is_absolute():
            obj = self.config.args.object
            if isinstance(obj, Path):
                candidates.append(obj.parent / file)
                candidates.append(obj.parent / Path(file).name)
        return next((c.resolve() for c in candidates if c.is_file()), None)

    # -- execution -----------------------------------------------------------
    def req_continue(self, args: dict[str, Any]) -> Result:
        return {"allThreadsContinued": True}, lambda: self._go(self._dbg().cont)

    def req_next(self, args: dict[str, Any]) -> Result:
        dbg = self._dbg()
        if args.get("granularity") == "instruction":
            return {}, lambda: self._go(lambda: dbg.stepi(True), stepping=True)
        return {}, lambda: self._go(lambda: dbg.step_line(True), stepping=True)

    def req_stepIn(self, args: dict[str, Any]) -> Result:
        dbg = self._dbg()
        if args.get("granularity") == "instruction":
            return {}, lambda: self._go(lambda: dbg.stepi(False), stepping=True)
        return {}, lambda: self._go(lambda: dbg.step_line(False), stepping=True)

    def req_stepOut(self, args: dict[str, Any]) -> Result:
        return {}, lambda: self._go(self._step_out, stepping=True)

    def _step_out(self) -> Event:
        """``finish``; out of an inlined call: next lines until its frame is gone."""
        dbg, view = self._dbg(), self.view
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

    def _go(self, action: Callable[[], Event], stepping: bool = False) -> None:
        """Run until something the user asked for stops the program, or the last packet ends."""
        self.handles.reset()
        dbg = self._dbg()
        event = action()
        while True:
            if event.kind == "exited":
                self._exited(event)
                if self.packet_index + 1 >= len(self.packets):
                    self._maps_output()
                    self._finish()
                    return
                self.packet_index += 1
                dbg.request = RunRequest(self.packets[self.packet_index])
                event = dbg.run()
                continue
            if event.reason == "breakpoint" or stepping or event.site is not None:
                self._report(event)
                return
            event = dbg.cont()

    def _breakpoint_stops(self, engine: list[Breakpoint]) -> bool:
        """Evaluate the conditions of the breakpoints here; print logpoints."""
        stops = False
        here = [self.by_number[b.number] for b in engine if b.number in self.by_number]
        for bp in dict.fromkeys(here):
            if not bp.acts(self._truth):
                continue
            if bp.log is not None:
                self.send("output", {"category": "console",
                                     "output": bp.log.render(self._print) + "\n"})
            else:
                stops = True
        return stops or not here

    def _truth(self, expr: str) -> bool:
        data = self._commands().cmd_print(expr).data
        return _truthy(data.get("value"))

    def _print(self, expr: str) -> str:
        return self._commands().cmd_print(expr).text

    def _report(self, event: Event, entry: bool = False) -> None:
        ids = []
        if event.reason == "breakpoint":
            dbg = self._dbg()
            ids = sorted({self.by_number[b.number].id for b in dbg.breakpoints.values()
                          if b.addr == dbg.pc() and b.number in self.by_number})
        reason = "entry" if entry else {"breakpoint": "breakpoint", "finish": "step",
                                        "step": "step"}.get(event.reason, "step")
        if reason == "breakpoint" and not ids:
            reason = "step"
        body: dict[str, Any] = {"reason": reason, "threadId": THREAD_ID,
                                "allThreadsStopped": True}
        if ids:
            body["hitBreakpointIds"] = ids
        self.send("stopped", body)

    def _exited(self, event: Event) -> None:
        assert event.retval is not None
        self.retvals.append(event.retval)
        text = self._commands().event_output(event).text
        self.send("output", {"category": "console",
                             "output": f"packet {self.packet_index + 1}: {text}\n",
                             "data": {"packet": self.packet_index + 1, "retval": event.retval}})

    def _maps_output(self) -> None:
        """The maps after the last run, as ``qstep run`` prints them."""
        assert self.session is not None and self.prog is not None
        text = "\n".join(maps_text(self.prog, dump_maps(self.session, self.prog)))
        self.send("output", {"category": "console", "output": f"maps after the runs:\n{text}\n"})

    # -- verifier rejections -------------------------------------------------
    def _report_rejection(self) -> None:
        assert self.rejected is not None
        self.send("output", {"category": "stderr", "output": str(self.rejected) + "\n"})
        self.send("stopped", {"reason": "exception", "threadId": THREAD_ID,
                              "description": str(self.rejected).splitlines()[0],
                              "allThreadsStopped": True})

    def req_exceptionInfo(self, args: dict[str, Any]) -> Result:
        if self.rejected is None:
            raise UsageError("no exception: the program was not rejected")
        return {"exceptionId": "VerifierError", "breakMode": "always",
                "description": str(self.rejected).splitlines()[0],
                "details": {"message": self.rejected.log, "typeName": "VerifierError"}}, None

    def _rejection_frame(self) -> dict[str, Any]:
        assert self.rejected is not None
        spots = re.findall(r"@ (\S+):(\d+)", self.rejected.log)
        frame: dict[str, Any] = {"id": 1, "name": "verifier rejection", "line": 0, "column": 0}
        if spots:
            file, line = spots[-1]
            frame |= {"source": self._source(file), "line": int(line), "column": 1}
        return frame

    # -- state ---------------------------------------------------------------
    def req_threads(self, args: dict[str, Any]) -> Result:
        name = self.prog.name if self.prog is not None else "program"
        return {"threads": [{"id": THREAD_ID, "name": name}]}, None

    def req_stackTrace(self, args: dict[str, Any]) -> Result:
        if self.rejected is not None:
            return {"stackFrames": [self._rejection_frame()], "totalFrames": 1}, None
        frames = [self._frame(level) for level in range(self._frame_count())]
        start, count = int(args.get("startFrame", 0)), int(args.get("levels", 0) or 0)
        shown = frames[start:start + count] if count else frames[start:]
        return {"stackFrames": shown, "totalFrames": len(frames)}, None

    def _frame_count(self) -> int:
        return len(self.view.frames()) if self.view is not None else len(self._dbg().frames())

    def _frame(self, level: int) -> dict[str, Any]:
        dbg = self._dbg()
        if self.view is not None:
            f = self.view.frames()[level]
            site = f.call.site
            out: dict[str, Any] = {"id": level + 1, "name": f.function + (
                " [inlined]" if f.inlined else ""), "line": f.line, "column": 1 if f.line else 0}
            if f.file:
                out["source"] = self._source(f.file)
        else:
            call = dbg.frames()[level]
            site = call.site
            out = {"id": level + 1, "name": call.function.name, "line": 0, "column": 0}
            if site is not None and site.source is not None:
                out |= {"source": self._source(site.source.file), "line": site.source.line,
                        "column": 1}
        if site is not None:
            out["instructionPointerReference"] = _ref(site)
        return out

    def req_scopes(self, args: dict[str, Any]) -> Result:
        level = int(args["frameId"]) - 1
        scopes = []
        if self.view is not None:
            frame = self.view.select(level)
            if frame.scope is not None:
                scopes.append(self._scope("Locals", lambda: self._vars(level, False)))
                scopes.append(self._scope("Arguments", lambda: self._vars(level, True)))
        scopes.append(self._scope("Registers", self._registers, "registers"))
        scopes.append(self._scope("Maps", self._maps) | {"expensive": True})
        if self.view is not None and self._globals():
            scopes.append(self._scope("Globals", self._global_vars))
        return {"scopes": scopes}, None

    def _scope(self, name: str, children: Callable[[], list[dict[str, Any]]],
               hint: str = "locals") -> dict[str, Any]:
        return {"name": name, "presentationHint": hint, "expensive": False,
                "variablesReference": self.handles.add(children)}

    def _vars(self, level: int, params: bool) -> list[dict[str, Any]]:
        assert self.view is not None
        frame = self.view.select(level)
        if frame.scope is None:
            return []
        chosen = frame.scope.params if params else frame.scope.locals
        return [self.handles.value_variable(v.name, self.view.value(frame, v), v.name)
                for v in chosen]

    def _registers(self) -> list[dict[str, Any]]:
        regs = self._dbg().regs()
        return [{"name": f"r{n}", "value": f"{regs[n]:#x}", "type": f"u64 ({BPF_TO_X86[n]})",
                 "evaluateName": f"$r{n}", "variablesReference": 0} for n in range(11)]

    def _maps(self) -> list[dict[str, Any]]:
        """Each map of the program with its entries, read from guest memory (``print MAP``)."""
        assert self.prog is not None
        out = []
        for name in sorted(self.prog.maps):
            try:
                result = self._commands().maps.print(name)
            except QstepError as err:
                out.append({"name": name, "value": f"<{err}>", "variablesReference": 0})
                continue
            entries = result[1]["entries"] if result is not None else []
            ref = self.handles.add(_entries(entries))
            out.append({"name": name, "value": f"{len(entries)} entries",
                        "variablesReference": ref})
        return out

    def _globals(self) -> list[str]:
        assert self.view is not None
        return sorted(n for n, g in self.view.model.globals.items()
                      if g.section.startswith((".data", ".rodata", ".bss")))

    def _global_vars(self) -> list[dict[str, Any]]:
        assert self.view is not None
        model = self.view.model
        return [self.handles.value_variable(n, self.view.global_value(model.globals[n]), n)
                for n in self._globals()]

    def req_variables(self, args: dict[str, Any]) -> Result:
        return {"variables": self.handles.children(int(args["variablesReference"]))}, None

    def req_evaluate(self, args: dict[str, Any]) -> Result:
        expr, context = str(args["expression"]), args.get("context", "repl")
        if "frameId" in args and self.view is not None:
            self.view.select(int(args["frameId"]) - 1)
        commands = self._commands()
        if context == "repl" and re.match(r"[a-z]+\b", expr) and not self._is_c_name(expr):
            out = commands.execute(expr)
            return {"result": out.text, "variablesReference": 0}, None
        value = commands.source.resolve(expr) if commands.source is not None else None
        if value is not None:
            var = self.handles.value_variable(expr, value, expr)
            return {"result": var["value"], "type": var["type"],
                    "variablesReference": var["variablesReference"]}, None
        return {"result": commands.cmd_print(expr).text, "variablesReference": 0}, None

    def _is_c_name(self, expr: str) -> bool:
        """Whether ``expr`` starts with a C variable rather than a debugger command."""
        word = re.match(r"[A-Za-z_]\w*", expr)
        commands = self._commands()
        if word is None or commands.source is None or not self._dbg().stopped:
            return False
        try:
            return commands.source.lookup(word.group(0)) is not None
        except QstepError:
            return False

    # -- code and memory -----------------------------------------------------
    def req_loadedSources(self, args: dict[str, Any]) -> Result:
        assert self.prog is not None
        files = sorted({s.source.file for s in self.prog.sites.values() if s.source})
        return {"sources": [self._source(f) for f in files]}, None

    def req_source(self, args: dict[str, Any]) -> Result:
        assert self.prog is not None
        path = str(args.get("source", {}).get("path", ""))
        lines = source_lines(self.prog, path)
        text = "\n".join(lines.get(n, "") for n in range(1, max(lines, default=0) + 1))
        return {"content": text, "mimeType": "text/x-c"}, None

    def req_disassemble(self, args: dict[str, Any]) -> Result:
        prog = self._dbg().prog
        sites = [s for _, s in sorted(prog.sites.items()) if s.jit_start is not None]
        addr = int(args["memoryReference"], 0) + int(args.get("offset", 0))
        start = next((i for i, s in enumerate(sites) if s.jit_start == addr), None)
        if start is None:
            raise UsageError(f"disassemble: {addr:#x} is not the start of a BPF instruction")
        first = start + int(args.get("instructionOffset", 0))
        out = []
        for i in range(first, first + int(args["instructionCount"])):
            if not 0 <= i < len(sites):
                out.append({"address": "0x0", "instruction": "", "presentationHint": "invalid"})
                continue
            out.append(self._instruction(sites[i]))
        return {"instructions": out}, None

    def _instruction(self, site: InsnSite) -> dict[str, Any]:
        assert site.jit_start is not None
        offset = site.index - site.function.start_insn
        out: dict[str, Any] = {"address": hex(site.jit_start),
                               "instruction": bpf_text(self._dbg().prog, site),
                               "symbol": f"{site.function.name}+{offset}"}
        if site.source is not None:
            out |= {"location": self._source(site.source.file), "line": site.source.line}
        return out

    def req_readMemory(self, args: dict[str, Any]) -> Result:
        addr = int(args["memoryReference"], 0) + int(args.get("offset", 0))
        count = int(args["count"])
        if count > 1 << 20:
            raise UsageError("readMemory: at most 1 MiB at a time")
        data = self._dbg().read_memory(addr, count)
        return {"address": hex(addr), "data": base64.b64encode(data).decode()}, None


def _entries(entries: list[dict[str, str]]) -> Callable[[], list[dict[str, Any]]]:
    """A map's entries as DAP variables (key → value)."""
    return lambda: [{"name": e["key"], "value": e["value"], "variablesReference": 0}
                    for e in entries]


def _truthy(value: object) -> bool:
    """A condition's value: numbers, and byte strings (hex) with a non-zero byte."""
    if isinstance(value, str):
        return any(c not in "0 " for c in value)
    return bool(value)


def _ref(site: InsnSite) -> str:
    return hex(site.jit_start) if site.jit_start is not None else f"#{site.index}"


def _instruction_location(ref: str, offset: int) -> str:
    """An instruction breakpoint's location: a JIT address, ``#N``, or ``func:offset``."""
    ref = ref.strip()
    if ref.startswith("#"):
        return f"#{int(ref[1:], 0) + offset}"
    if re.fullmatch(r"0x[0-9a-fA-F]+", ref):
        return f"*{int(ref, 16) + offset:#x}"
    func, sep, off = ref.rpartition(":")
    if sep and off.isdigit():
        return f"{func}:{int(off) + offset}"
    return ref
