"""Moving forward and backward through a recorded run (gdb's ``reverse-*`` commands).

A position ``pos`` is the state *before* recorded step ``pos`` executes (``pos ==
len(steps)``: the program has returned). Registers come from the boundary records.
Memory at a position comes from the recording too: a byte's value is the nearest
access to it (the last one before, or the first one after: a load's value or the
bytes a store replaced), as long as no helper call lies between that access and
the position; helpers run outside the program and their stores are not recorded,
so across one the value is unknown rather than guessed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from qstep.debugger.locations import resolve
from qstep.debugger.mergedlines import PathCheck
from qstep.debugger.regs import BpfRegs
from qstep.errors import UsageError
from qstep.loaded import InsnSite
from qstep.recorder.recording import Recording


@dataclass(frozen=True)
class Stop:
    """Where a movement ended and why (``breakpoint``, ``watchpoint``, ``step``,
    ``start``: the beginning of the recording, ``end``: the program returned)."""

    pos: int
    reason: str
    breakpoint: int | None = None
    watch: tuple[int, int, bytes | None, bytes] | None = None  # (step, addr, old, new)


@dataclass(frozen=True)
class _Access:
    step: int
    before: int | None  # the byte before this access (loads: the byte read)
    after: int  # the byte after it


class Replay:
    """A cursor over a recording, with breakpoints and watchpoints."""

    def __init__(self, rec: Recording) -> None:
        if not rec.steps:
            raise UsageError("the recording is empty")
        self.rec = rec
        self.pos = 0
        self.depth = _depths(rec)
        self.breakpoints: dict[int, InsnSite] = {}  # number -> site
        self._paths: dict[int, PathCheck] = {}  # number -> the path it stops on
        self.watches: dict[int, tuple[int, int]] = {}  # number -> (addr, size)
        self._next_number = 1
        xlated = {ins.index: ins for ins in rec.prog.xlated}
        self._helper_steps = [k for k, s in enumerate(rec.steps)
                              if (x := xlated.get(s.site.xlated_index if s.site.xlated_index
                                                  is not None else -1)) is not None
                              and (x.is_helper_call or x.is_kfunc_call)]
        self._bytes = _byte_history(rec)

    # -- state -------------------------------------------------------------
    @property
    def exited(self) -> bool:
        return self.pos >= len(self.rec.steps)

    def site(self) -> InsnSite | None:
        return None if self.exited else self.rec.steps[self.pos].site

    def regs(self) -> BpfRegs:
        if self.exited:
            raise UsageError(f"the program has returned (retval {self.rec.retval}); "
                             "go back with reverse-stepi")
        return self.rec.steps[self.pos].regs()

    def read_memory(self, addr: int, size: int) -> bytes:
        """Bytes at ``addr`` as they were at this position, or ``UsageError``."""
        out = bytearray()
        for b in range(addr, addr + size):
            value = self._byte_at(b)
            if value is None:
                raise UsageError(f"the byte at {b:#x} is not known at this point of the "
                                 "recording (never accessed by the program, or a helper "
                                 "ran in between)")
            out.append(value)
        return bytes(out)

    def _byte_at(self, b: int) -> int | None:
        history = self._bytes.get(b)
        if not history:
            return None
        steps = [a.step for a in history]
        i = bisect_left(steps, self.pos)
        if i > 0 and not self._helper_between(history[i - 1].step, self.pos):
            return history[i - 1].after
        if i < len(history) and not self._helper_between(self.pos, history[i].step):
            return history[i].before
        return None

    def _helper_between(self, start: int, end: int) -> bool:
        """A helper ran after the accesses of step ``start`` and before step ``end``."""
        i = bisect_left(self._helper_steps, start)
        return i < len(self._helper_steps) and self._helper_steps[i] < end

    # -- breakpoints and watchpoints ---------------------------------------
    def add_breakpoint(self, location: str) -> list[tuple[int, InsnSite]]:
        added = []
        resolved = resolve(self.rec.prog, location)
        for site in resolved.sites:
            self.breakpoints[self._next_number] = site
            if site.index in resolved.paths:  # a merged-away line: only where its path goes
                self._paths[self._next_number] = resolved.paths[site.index]
            added.append((self._next_number, site))
            self._next_number += 1
        return added

    def add_watch(self, addr: int, size: int) -> int:
        self.watches[self._next_number] = (addr, size)
        self._next_number += 1
        return self._next_number - 1

    def delete(self, number: int) -> None:
        if self.breakpoints.pop(number, None) is None and self.watches.pop(number, None) is None:
            raise UsageError(f"no breakpoint or watchpoint {number}")

    # -- movement ----------------------------------------------------------
    def stepi(self, over_calls: bool = False) -> Stop:
        if self.exited:
            raise UsageError("the program has returned; the recording ends here")
        depth = self.depth[self.pos]
        return self._forward(lambda q: not over_calls or self.depth[q] <= depth)

    def reverse_stepi(self, over_calls: bool = False) -> Stop:
        depth = self.depth[min(self.pos, len(self.rec.steps) - 1)]
        return self._backward(lambda q: not over_calls or self.depth[q] <= depth)

    def step_line(self, over_calls: bool, reverse: bool = False) -> Stop:
        """``step``/``next`` (or their reverse): to another source line."""
        start = self.pos
        key = self._line_key(start)
        depth = self.depth[min(start, len(self.rec.steps) - 1)]

        def other_line(q: int) -> bool:
            return (not over_calls or self.depth[q] <= depth) and self._line_key(q) != key
        stop = self._backward(other_line) if reverse else self._forward(other_line)
        if reverse and stop.reason == "step":  # gdb stops at the start of that line
            line = self._line_key(self.pos)
            while self.pos > 0 and self._line_key(self.pos - 1) == line \
                    and self.depth[self.pos - 1] == self.depth[self.pos]:
                self.pos -= 1
        return stop

    def finish(self, reverse: bool = False) -> Stop:
        """To the caller: after the return (forward) or at the call (reverse)."""
        depth = self.depth[min(self.pos, len(self.rec.steps) - 1)]
        if reverse:
            return self._backward(lambda q: self.depth[q] < depth)
        return self._forward(lambda q: self.depth[q] < depth)

    def cont(self, reverse: bool = False) -> Stop:
        return self._backward(lambda q: False) if reverse else self._forward(lambda q: False)

    def _forward(self, arrived: Callable[[int], bool]) -> Stop:
        n = len(self.rec.steps)
        while self.pos < n:
            watch = self._watch_hit(self.pos)
            self.pos += 1
            if watch is not None:
                return Stop(self.pos, "watchpoint", watch=watch)
            if self.pos == n:
                break
            bp = self._breakpoint_at(self.pos)
            if bp is not None:
                return Stop(self.pos, "breakpoint", breakpoint=bp)
            if arrived(self.pos):
                return Stop(self.pos, "step")
        return Stop(self.pos, "end")

    def _backward(self, arrived: Callable[[int], bool]) -> Stop:
        while self.pos > 0:
            self.pos -= 1
            watch = self._watch_hit(self.pos)
            if watch is not None:
                return Stop(self.pos, "watchpoint", watch=watch)
            bp = self._breakpoint_at(self.pos)
            if bp is not None:
                return Stop(self.pos, "breakpoint", breakpoint=bp)
            if arrived(self.pos):
                return Stop(self.pos, "step")
        return Stop(self.pos, "start")

    def _breakpoint_at(self, pos: int) -> int | None:
        step = self.rec.steps[pos]
        return next((n for n, s in self.breakpoints.items() if s.index == step.site.index
                     and (n not in self._paths or self._paths[n].holds(step.regs().values))),
                    None)

    def _watch_hit(self, pos: int) -> tuple[int, int, bytes | None, bytes] | None:
        """(step, addr, old, new) of the first store of step ``pos`` into a watched range."""
        step = self.rec.steps[pos]
        for a in step.accesses:
            for addr, size in self.watches.values():
                lo, hi = max(a.addr, addr), min(a.addr + a.size, addr + size)
                if a.store and lo < hi:
                    new = a.value.to_bytes(a.size, "little")[lo - a.addr:hi - a.addr]
                    old = (a.old.to_bytes(a.size, "little")[lo - a.addr:hi - a.addr]
                           if a.old is not None else None)
                    return pos, lo, old, new
        return None

    def _line_key(self, pos: int) -> tuple[str, int] | None:
        if pos >= len(self.rec.steps):
            return None
        site = self.rec.steps[pos].site
        return (site.function.name, site.source.line) if site.source else None


def _depths(rec: Recording) -> list[int]:
    """bpf-to-bpf call depth before each step (and after the last)."""
    depths = [0]
    for step in rec.steps:
        ins = step.site.insn
        d = depths[-1]
        depths.append(d + 1 if ins.is_pseudo_call else d - 1 if ins.is_exit and d > 0 else d)
    return depths


def _byte_history(rec: Recording) -> dict[int, list[_Access]]:
    """Per byte, every recorded access in order: the byte before and after it."""
    out: dict[int, list[_Access]] = {}
    for k, step in enumerate(rec.steps):
        for a in step.frame_accesses + step.accesses:
            for i in range(a.size):
                new = (a.value >> (8 * i)) & 0xFF
                if a.store:
                    old = (a.old >> (8 * i)) & 0xFF if a.old is not None else None
                    out.setdefault(a.addr + i, []).append(_Access(k, old, new))
                else:
                    out.setdefault(a.addr + i, []).append(_Access(k, new, new))
    return out
