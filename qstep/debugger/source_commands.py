"""Debugger commands over C variables: print VAR, info locals/args, ptype, whatis,
frame/up/down and a backtrace with inlined frames. Each returns (text, data)."""

from __future__ import annotations

from typing import Any

from qstep.debugger.source import SourceFrame, SourceView
from qstep.debugger.varpath import IDENT, apply_steps, parse_path
from qstep.dwarf.format import check_format, decode, format_value
from qstep.dwarf.types import CType, ptype_text
from qstep.dwarf.values import Value
from qstep.errors import UsageError

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


class SourceCommands:
    """The C-level commands for one debugged program."""

    def __init__(self, view: SourceView) -> None:
        self.view = view

    # -- values ------------------------------------------------------------
    def lookup(self, name: str) -> tuple[Value, SourceFrame] | None:
        """A variable of the selected frame, else a global (None: no such name)."""
        frame = self.view.selected()
        var = frame.scope.find(name) if frame.scope else None
        if var is not None:
            return self.view.value(frame, var), frame
        glob = self.view.model.globals.get(name)
        if glob is not None and glob.section.startswith((".data", ".rodata", ".bss")):
            return self.view.global_value(glob), frame
        return None

    def resolve(self, text: str) -> Value | None:
        """The typed value of a variable path, or None when ``text`` is not one."""
        path = parse_path(text)
        if path is None:
            return None
        found = self.lookup(path.name)
        if found is None:
            raise UsageError(f'No symbol "{path.name}" in current context.')
        value, frame = found
        return apply_steps(value, path, text.strip(), self.view.state(frame))

    def scalar(self, name: str) -> int | bytes | None:
        """A variable for the untyped expression evaluator: integers (pointers as
        addresses), other objects as bytes; None when there is no such variable."""
        found = self.lookup(name)
        if found is None:
            return None
        value = found[0]
        if not value.available:
            raise UsageError(f"'{name}' is {format_value(value, name).strip('<>')} here")
        if value.type.is_scalar:
            return value.as_int() & MASK64
        return value.data

    def print(self, fmt: str, text: str) -> Result | None:
        value = self.resolve(text)
        if value is None:
            return None
        check_format(fmt)
        path = parse_path(text)
        assert path is not None
        last = next((str(s.arg) for s in reversed(path.steps) if s.kind in ("member", "arrow")),
                    path.name)
        shown = format_value(value, last, fmt)
        return shown, {"value": decode(value), "type": value.type.c_name(), "text": shown,
                       "address": value.address}

    def _variables(self, params: bool) -> Result:
        frame = self.view.selected()
        if frame.scope is None:
            return "No symbol table info available.", {"variables": []}
        chosen = frame.scope.params if params else frame.scope.locals
        lines, data = [], []
        for var in chosen:
            value = self.view.value(frame, var)
            shown = format_value(value, var.name)
            lines.append(f"{var.name} = {shown}")
            data.append({"name": var.name, "type": var.type.c_name(), "value": decode(value),
                         "text": shown, "available": not value.unavailable})
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
        if parse_path(text) is not None and self.view.dbg.stopped:
            value = self.resolve(text)
            if value is not None:
                return value.type
        found = self.view.model.find_type(text)
        if found is None:
            if IDENT.fullmatch(text):
                raise UsageError(f"No symbol \"{text}\" in current context.")
            raise UsageError(f"no type or variable '{text}'")
        return found

    def ptype(self, text: str) -> Result:
        t = self.type_of(text)
        return f"type = {ptype_text(t)}", {"type": t.c_name()}

    def whatis(self, text: str) -> Result:
        t = self.type_of(text)
        return f"type = {t.c_name()}", {"type": t.c_name()}

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
