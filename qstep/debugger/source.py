"""The C-level view of a stopped program: source frames (inlined calls included) and
the values of their variables, from the object's DWARF.

Each bpf-to-bpf frame (``qstep.debugger.frames``) expands into its inlined calls,
innermost first, as gdb shows them. Inlined frames share their function's
registers. In calling bpf-to-bpf frames r10 and the callee-saved r6-r9 are known
(``qstep.debugger.unwind``); r0-r5 are clobbered by the call, so variables held
there are reported unavailable rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import Debugger
from qstep.debugger.entryvalues import entry_value
from qstep.debugger.frames import Frame as CallFrame
from qstep.debugger.unwind import caller_register
from qstep.dwarf.corerelo import model_for
from qstep.dwarf.location import Location, Op, Piece, Unavailable
from qstep.dwarf.model import Frame as Scope
from qstep.dwarf.model import GlobalVar, Variable
from qstep.dwarf.placement import Placement, variables_text
from qstep.dwarf.values import Value, in_memory, read_value, unavailable
from qstep.errors import UsageError
from qstep.loaded import InsnSite, JitFunction


@dataclass(frozen=True)
class SourceFrame:
    """One frame as the user sees it: a function or an inlined call of one."""

    level: int
    function: str
    inlined: bool
    file: str
    line: int
    call: CallFrame  # the bpf-to-bpf frame it runs in
    scope: Scope | None  # variables (None: no DWARF for this code)

    @property
    def innermost_call(self) -> bool:
        return self.call.level == 0


class FrameState:
    """Registers and memory of one bpf-to-bpf frame, for DWARF location evaluation."""

    def __init__(self, dbg: Debugger, call: CallFrame, stack_size: int) -> None:
        self._dbg = dbg
        self._call = call
        self._regs = dbg.regs()
        self.stack_size = stack_size

    def reg(self, n: int) -> int:
        if self._call.level == 0:
            return self._regs[n]
        value = caller_register(self._dbg.prog, self._dbg.frames(), self._call.level, n,
                                self._regs[n], self._dbg.read_memory)
        if value is None:
            raise Unavailable(f"r{n} of a calling frame is clobbered by the call")
        return value

    def mem(self, addr: int, size: int) -> bytes:
        return self._dbg.read_memory(addr, size)

    def entry_reg(self, n: int) -> int | None:
        """rN at the function's entry (``qstep.debugger.entryvalues``; raises
        ``Unavailable`` saying why when nothing keeps it)."""
        return entry_value(self._dbg.prog, self._dbg.frames(), self._call.level, n,
                           list(self._regs.values), self._dbg.read_memory)


class _Memory:
    """Guest memory only (for objects at known addresses, such as globals)."""

    stack_size = 0

    def __init__(self, dbg: Debugger) -> None:
        self._dbg = dbg

    def reg(self, n: int) -> int:
        raise Unavailable("no frame")

    def mem(self, addr: int, size: int) -> bytes:
        return self._dbg.read_memory(addr, size)

    def entry_reg(self, n: int) -> int | None:
        return None


class SourceView:
    """DWARF variables and frames for one debugged program."""

    def __init__(self, obj: BpfObject, dbg: Debugger) -> None:
        self.obj = obj
        self.dbg = dbg
        self.model = model_for(obj, lambda: dbg.kernel_btf)
        self.places = Placement(obj)
        self._selected = 0
        self._selected_at: int | None = None
        self._stack_sizes: dict[str, int] = {}

    # -- program places --------------------------------------------------
    def place(self, site: InsnSite) -> tuple[str, int] | None:
        """(ELF section, slot) of a loaded instruction."""
        return self.places.place(site)

    def annotations(self) -> dict[int, str]:
        """Instruction → where its C variables live (for ``disas``)."""
        return {i: variables_text(self.model, self.places, site)
                for i, site in self.dbg.prog.sites.items()}

    def scopes_at(self, site: InsnSite) -> list[Scope]:
        place = self.place(site)
        return self.model.frames_at(*place) if place else []

    def stack_size(self, func: JitFunction) -> int:
        size = self._stack_sizes.get(func.name)
        if size is None:
            size = self._stack_sizes[func.name] = self.places.stack_size(func.name)
        return size

    # -- frames -----------------------------------------------------------
    def frames(self) -> list[SourceFrame]:
        out: list[SourceFrame] = []
        for call in self.dbg.frames():
            site = call.site
            scopes = self.scopes_at(site) if site is not None else []
            file = site.source.file if site and site.source else ""
            line = site.source.line if site and site.source else 0
            if not scopes:
                out.append(SourceFrame(len(out), call.function.name, False, file, line, call,
                                       None))
                continue
            for scope in scopes:
                out.append(SourceFrame(len(out), scope.function, scope.inlined, file, line,
                                       call, scope))
                file, line = scope.call_file or file, scope.call_line
        return out

    def _reset_if_moved(self) -> None:
        pc = self.dbg.pc()
        if pc != self._selected_at:
            self._selected, self._selected_at = 0, pc

    @property
    def selected_level(self) -> int:
        self._reset_if_moved()
        return self._selected

    def select(self, level: int) -> SourceFrame:
        frames = self.frames()
        if not frames:
            raise UsageError("no frames (the program is not stopped in its code)")
        if not 0 <= level < len(frames):
            raise UsageError(f"no frame at level {level} (frames 0..{len(frames) - 1})")
        self._reset_if_moved()
        self._selected = level
        return frames[level]

    def selected_or_none(self) -> SourceFrame | None:
        """The selected frame, None when the program is not stopped in its code."""
        if not self.dbg.stopped:
            return None
        frames = self.frames()
        return frames[min(self.selected_level, len(frames) - 1)] if frames else None

    def selected(self) -> SourceFrame:
        frames = self.frames()
        if not frames:
            raise UsageError("no frames (the program is not stopped in its code)")
        return frames[min(self.selected_level, len(frames) - 1)]

    # -- values -------------------------------------------------------------
    def state(self, frame: SourceFrame) -> FrameState:
        return FrameState(self.dbg, frame.call, self.stack_size(frame.call.function))

    def value(self, frame: SourceFrame, var: Variable) -> Value:
        site = frame.call.site
        if site is None:
            return unavailable(var.type, "not in the program")
        place = self.place(site)
        if place is None:
            return unavailable(var.type, "no DWARF for this function")
        return read_value(var.location_at(place[1]), var.type, self.state(frame))

    def entry_value(self, frame: SourceFrame, var: Variable) -> Value | None:
        """A parameter's value at its function's entry (gdb's ``var@entry``), when it
        was passed in a register (r1-r5) and that entry value is known here
        (``qstep.debugger.entryvalues``); None otherwise."""
        func = frame.call.function
        entry_site = self.dbg.prog.sites.get(func.start_insn)
        place = self.place(entry_site) if entry_site is not None and not frame.inlined else None
        loc = var.location_at(place[1]) if place is not None else None
        if loc is None or len(loc.pieces) != 1 or len(loc.pieces[0].ops) != 1:
            return None
        op = loc.pieces[0].ops[0]
        if op.name != "reg" or not 1 <= op.args[0] <= 5:
            return None
        ops = (Op("entry_value", ((op,),)), Op("stack_value"))
        value = read_value(Location((Piece(None, ops),)), var.type, self.state(frame))
        return value if value.available else None

    def global_value(self, var: GlobalVar) -> Value:
        base = self.global_base(var.section)
        if base is None:
            return unavailable(var.type, f"the address of {var.section} is not known (the "
                                         "program never refers to it)")
        return in_memory(var.type, base + var.offset, _Memory(self.dbg))

    @cached_property
    def _global_bases(self) -> dict[str, int]:
        return self.places.global_bases(self.dbg.prog)

    def global_base(self, section: str) -> int | None:
        return self._global_bases.get(section)

