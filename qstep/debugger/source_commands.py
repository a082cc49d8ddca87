"""Debugger commands over C variables: print VAR, info locals/args, ptype, whatis,
frame/up/down and a backtrace with inlined frames. Each returns (text, data)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qstep.debugger.engine import Event
from qstep.debugger.source import SourceFrame, SourceView
from qstep.debugger.watches import LABELS, Watches
from qstep.dwarf.format import check_format, decode, format_value
from qstep.dwarf.location import Unavailable
from qstep.dwarf.types import CType, ptype_text
from qstep.dwarf.values import Value
from qstep.errors import UsageError
from qstep.expr.ast import Expr, Member, Name
from qstep.expr.parser import parse_expression
from qstep.expr.typed import evaluate_typed, uses_c

Result = tuple[str, dict[str, Any]]
MASK64 = (1 << 64) - 1


def frame_text(f: SourceFrame) -> str:
    where = f" at {f.file.rsplit('/', 1)[-1]}:{f.line}" if f.file else ""
    site = f.call.site
    insn = f" (insn {site.index})" if site is not None and f.level == 0 else ""
    return f"#{f.level}  {f.function}{' [inlined]' if f.inlined else ''}{where}{insn}"


def frame_data(f: SourceFrame) -> dict[str, Any]:
    return {"level": f.level, "function": f.function, "inlined": f.inlined,
            "file": f.file or None, "line": f.line or None,
            "insn": f.call.site.index if f.call.site else None, "r10": f.call.r10}


NO_DWARF = ("the object has no DWARF debug info, so no C variables (compile with -g; "
            "static linking with bpftool gen object drops .debug_* sections)")


class FrameEnv:
    """``qstep.expr.typed`` environment of the selected frame."""

    def __init__(self, cmds: SourceCommands) -> None:
        self._cmds = cmds

    @property
    def cmds(self) -> SourceCommands:
        return self._cmds

    def reg(self, n: int) -> int:
        view = self._cmds.view
        try:
            return view.state(view.selected()).reg(n)
        except Unavailable as why:
            raise UsageError(str(why)) from None

    def mem(self, addr: int, size: int) -> bytes:
        return self._cmds.view.dbg.read_memory(addr, size)

    def variable(self, name: str) -> Value | None:
        if not self._cmds.view.model.has_dwarf:
            raise UsageError(NO_DWARF)
        return self._cmds.lookup(name)

    def find_type(self, name: str) -> CType | None:
        return self._cmds.view.model.find_type(name)

    def map_element(self, name: str, key: Value) -> Value | None:
        element = self._cmds.map_element
        return element(name, key) if element is not None else None


class _WithValue(FrameEnv):
    """The frame's environment plus one named value (a map element)."""

    def __init__(self, env: FrameEnv, name: str, value: Value) -> None:
        super().__init__(env.cmds)
        self._name, self._value = name, value

    def variable(self, name: str) -> Value | None:
        return self._value if name == self._name else super().variable(name)


class SourceCommands:
    """The C-level commands for one debugged program."""

    def __init__(self, view: SourceView) -> None:
        self.view = view
        self.watches = Watches(view.dbg)
        self.displays: dict[int, tuple[str, str]] = {}  # number → (format, expression)
        # Map elements for C expressions (``qstep.debugger.map_commands``), when set.
        self.map_element: Callable[[str, Value], Value | None] | None = None
        self._next_display = 1

    def display(self, fmt: str, text: str) -> Result:
        """``display[/FMT] EXPR``: print it now and after every stop."""
        if not text.strip():
            return self.show_displays()
        check_format(fmt)
        number = self._next_display
        self.displays[number] = (fmt, text.strip())
        self._next_display += 1
        return self._display_line(number)

    def undisplay(self, arg: str) -> Result:
        try:
            numbers = [int(n) for n in arg.split()] or list(self.displays)
        except ValueError:
            raise UsageError(f"undisplay: expected display numbers, got '{arg}'") from None
        for n in numbers:
            if self.displays.pop(n, None) is None:
                raise UsageError(f"no display number {n}")
        return "", {"undisplayed": numbers}

    def _display_line(self, number: int) -> Result:
        fmt, text = self.displays[number]
        try:
            shown = self.print(fmt, text)
            value = shown[0] if shown is not None else "<not a C expression>"
        except UsageError as err:
            value = f"<error: {err}>"
        return f"{number}: {text} = {value}", {"display": number, "expr": text, "text": value}

    def show_displays(self) -> Result:
        """Every display, for the stop that just happened."""
        results = [self._display_line(n) for n in sorted(self.displays)]
        return "\n".join(r[0] for r in results), {"displays": [r[1] for r in results]}

    def info_frame(self) -> Result:
        f = self.view.selected()
        call = f.call
        lines = [f"Stack level {f.level}, {f.function}"
                 + (" (inlined)" if f.inlined else "")
                 + (f" at {f.file.rsplit('/', 1)[-1]}:{f.line}" if f.file else ""),
                 f" bpf-to-bpf frame {call.level} in {call.function.name}: r10 = {call.r10:#x},"
                 f" stack size {self.view.stack_size(call.function)} bytes"]
        if call.return_addr is not None:
            caller = self.view.dbg.prog.site_at(call.return_addr - 1)
            lines.append(f" called from insn {caller.index if caller else '?'}, returns to "
                         f"{call.return_addr:#x}")
        if f.scope is not None:
            lines.append(f" arguments: {', '.join(v.name for v in f.scope.params) or 'none'}")
            lines.append(f" locals: {', '.join(v.name for v in f.scope.locals) or 'none'}")
        return "\n".join(lines), {"frame": frame_data(f),
                                  "stack_size": self.view.stack_size(call.function)}

    def watch(self, command: str, text: str) -> Result:
        """``watch``/``rwatch``/``awatch EXPR``: a hardware watchpoint on a C object."""
        value = self.resolve(text)
        if value is None:
            raise UsageError(f"{command} needs a C object, e.g. {command} cnt->packets")
        w = self.watches.add(command, text.strip(), value)
        return (f"{LABELS[w.kind]} {w.number}: {w.text} ({w.size} bytes at {w.addr:#x})",
                {"watch": w.number, "expr": w.text, "kind": w.kind, "addr": w.addr,
                 "size": w.size})

    # -- values ------------------------------------------------------------
    def lookup(self, name: str) -> Value | None:
        """A variable of the selected frame, else a global (None: no such name)."""
        frame = self.view.selected_or_none()
        var = frame.scope.find(name) if frame is not None and frame.scope else None
        if frame is not None and var is not None:
            return self.view.value(frame, var)
        glob = self.view.model.globals.get(name)
        if glob is not None and glob.section.startswith((".data", ".rodata", ".bss")):
            return self.view.global_value(glob)
        return None

    def parse(self, text: str) -> Expr:
        return parse_expression(text, lambda word: self.view.model.find_type(word) is not None)

    def evaluate(self, expr: Expr, text: str) -> Value:
        try:
            return evaluate_typed(expr, FrameEnv(self))
        except UsageError as err:
            raise UsageError(f"{text.strip()}: {err}") from None

    def resolve(self, text: str) -> Value | None:
        """The typed value of a C expression, or None when it uses no C names/operators."""
        expr = self.parse(text)
        return self.evaluate(expr, text) if uses_c(expr) else None

    def print_part(self, fmt: str, base: Value, name: str, suffix: str, text: str) -> Result:
        """``print MAP[KEY].member[i]...``: ``suffix`` (members, indexes) applied to
        ``base`` (the element, typed by DWARF) as C does; ``name`` stands for it."""
        check_format(fmt)
        expr = self.parse(f"{name}{suffix}")
        try:
            value = evaluate_typed(expr, _WithValue(FrameEnv(self), name.strip(), base))
        except UsageError as err:
            raise UsageError(f"{text.strip()}: {err}") from None
        last = expr.name if isinstance(expr, Member) else ""
        shown = format_value(value, last, fmt)
        return shown, {"value": decode(value), "type": value.type.c_name(), "text": shown,
                       "address": value.address}

    def number(self, text: str) -> int | None:
        """A C expression's value as an address/integer (``x``), None without C."""
        value = self.resolve(text)
        if value is None:
            return None
        if value.type.strip().kind == "array" and value.address is not None:
            return value.address
        if not value.type.is_scalar or not value.available:
            raise UsageError(f"{text.strip()}: needs a number or an address, not "
                             f"{value.type.c_name()}")
        return value.as_int() & MASK64

    def print(self, fmt: str, text: str) -> Result | None:
        value = self.resolve(text)
        if value is None:
            return None
        check_format(fmt)
        expr = self.parse(text)
        last = expr.name if isinstance(expr, Member | Name) else ""
        shown = format_value(value, last, fmt)
        return shown, {"value": decode(value), "type": value.type.c_name(), "text": shown,
                       "address": value.address}

    def _variables(self, params: bool) -> Result:
        frame = self.view.selected()
        if frame.scope is None:
            shown = ("No symbol table info available." if self.view.model.has_dwarf
                     else f"No symbol table info available: {NO_DWARF}.")
            return shown, {"variables": []}
        chosen = frame.scope.params if params else frame.scope.locals
        lines, data = [], []
        for var in chosen:
            value = self.view.value(frame, var)
            shown = format_value(value, var.name)
            lines.append(f"{var.name} = {shown}")
            data.append({"name": var.name, "type": var.type.c_name(), "value": decode(value),
                         "text": shown, "available": not value.unavailable})
            entry = self.view.entry_value(frame, var) if params and value.unavailable else None
            if entry is not None:  # gdb's a@entry: what the caller passed
                shown = format_value(entry, var.name)
                lines.append(f"{var.name}@entry = {shown}")
                data.append({"name": f"{var.name}@entry", "type": var.type.c_name(),
                             "value": decode(entry), "text": shown, "available": True})
        empty = "No arguments." if params else "No locals."
        return "\n".join(lines) or empty, {"variables": data}

    def info_locals(self) -> Result:
        return self._variables(params=False)

    def info_args(self) -> Result:
        return self._variables(params=True)

    # -- types ---------------------------------------------------------------
    def type_of(self, text: str) -> CType:
        text = text.strip()
        if not text:
            raise UsageError("which expression or type?")
        named = self.view.model.find_type(text)
        if named is not None:
            return named
        if self.view.dbg.stopped:
            value = self.resolve(text)
            if value is not None:
                return value.type
        raise UsageError(f"no type or variable '{text}'")

    def ptype(self, text: str) -> Result:
        t = self.type_of(text)
        return f"type = {ptype_text(t)}", {"type": t.c_name()}

    def whatis(self, text: str) -> Result:
        t = self.type_of(text)
        return f"type = {t.c_name()}", {"type": t.c_name()}

    # -- stepping over and out of inlined calls ----------------------------------
    def _depth(self) -> tuple[int, int, tuple[str, int]]:
        """(bpf-to-bpf frames, inlined frames in the innermost one, its line)."""
        frames = self.view.frames()
        inner = [f for f in frames if f.call.level == 0]
        calls = len({f.call.level for f in frames})
        line = (inner[0].file, inner[0].line) if inner else ("", 0)
        return calls, sum(1 for f in inner if f.inlined), line

    def _step_until(self, step: Callable[[], Event],
                    done: Callable[[tuple[int, int, tuple[str, int]]], bool]) -> Event:
        while True:
            event = step()
            if event.kind == "exited" or event.reason == "breakpoint" or event.site is None:
                return event
            if done(self._depth()):
                return event

    def next_line(self) -> Event:
        """``next``: to the next line of this frame, over bpf calls and inlined calls."""
        calls, inlined, line = self._depth()

        def done(now: tuple[int, int, tuple[str, int]]) -> bool:
            left = now[0] != calls or now[1] < inlined
            return left or (now[1] == inlined and now[2] != line)
        return self._step_until(lambda: self.view.dbg.step_line(True), done)

    def finish_inlined(self) -> Event | None:
        """``finish`` in an inlined frame: run until that inlined call is left (None when
        the innermost frame is not inlined)."""
        calls, inlined, _line = self._depth()
        if inlined == 0:
            return None
        return self._step_until(lambda: self.view.dbg.stepi(True),
                                lambda now: now[0] != calls or now[1] < inlined)

    # -- frames ------------------------------------------------------------------
    def backtrace(self, limit: int | None) -> Result:
        frames = self.view.frames()[:limit]
        text = "\n".join(frame_text(f) for f in frames)
        return text or "no frames (not in the program)", {
            "frames": [frame_data(f) for f in frames]}

    def frame(self, arg: str, relative: int = 0) -> Result:
        arg = arg.strip()
        if arg and not arg.isdigit():
            raise UsageError(f"expected a frame number, got '{arg}'")
        if relative:
            level = self.view.selected_level + relative * (int(arg) if arg else 1)
        else:
            level = int(arg) if arg else self.view.selected_level
        f = self.view.select(level)
        return frame_text(f), {"frame": frame_data(f)}
