"""What one DAP session's request handlers share: the session, the program, the
debugger, and how sources and instructions are named to the client."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from qstep.dap.launch import LaunchConfig
from qstep.dap.variables import Handles
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import Debugger
from qstep.debugger.source import SourceView
from qstep.errors import UsageError, VerifierError
from qstep.loaded import InsnSite, LoadedProgram
from qstep.session import Session

Send = Callable[[str, dict[str, Any]], None]  # (event name, body)
After = Callable[[], None]
Result = tuple[dict[str, Any], After | None]
THREAD_ID = 1


class DapState:
    """The state of one debug session (one guest, one program, its packets)."""

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
        self.rejected: VerifierError | None = None
        self.retvals: list[int] = []
        self.finished = False

    def debugger(self) -> Debugger:
        """The debugger; a one-line error before ``launch``."""
        if self.dbg is None:
            raise UsageError("no program is being debugged (launch first)")
        return self.dbg

    def command_set(self) -> CommandSet:
        """The REPL's commands over the debugger (print, info, ...)."""
        if self.commands is None:
            raise UsageError("no program is being debugged (launch first)")
        return self.commands

    def output(self, text: str, category: str = "console", **extra: Any) -> None:
        """An ``output`` event (one or more lines)."""
        self.send("output", {"category": category, "output": text, **extra})

    def source(self, file: str) -> dict[str, Any]:
        """A DAP Source for a file named in the program's line info."""
        path = self.path(file)
        return {"name": Path(file).name, "path": str(path) if path else file}

    def path(self, file: str) -> Path | None:
        """The file on this machine: as named, or beside the object."""
        candidates = [Path(file)]
        if self.config is not None and not Path(file).is_absolute():
            obj = self.config.args.object
            if isinstance(obj, Path):
                candidates.append(obj.parent / file)
                candidates.append(obj.parent / Path(file).name)
        return next((c.resolve() for c in candidates if c.is_file()), None)

    def where(self, site: InsnSite | None) -> dict[str, Any]:
        """Source, line and instruction reference of an instruction (empty without lines)."""
        if site is None or site.source is None:
            return {}
        return {"source": self.source(site.source.file), "line": site.source.line,
                "instructionReference": ref(site)}


def ref(site: InsnSite) -> str:
    """An instruction's memory/instruction reference: its JIT address (``#N`` without)."""
    return hex(site.jit_start) if site.jit_start is not None else f"#{site.index}"
