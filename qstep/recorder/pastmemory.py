"""Memory at a recorded position, across the helper calls that provably left it alone.

A helper's stores are not recorded (its code is outside the program), so a byte's
value cannot be carried across a helper call in general. Two cases are certain:
- helpers that write no memory the program can see (``NO_WRITES``: lookups, clocks,
  random numbers, ids);
- the BPF stack of the frames live at the call (at or above rsp): a helper (or kfunc)
  reaches it only through a pointer argument, so a byte of those frames below every
  stack pointer among r1-r5 is not written by it (the kernel's frames above the
  program's, e.g. a context on the stack, count as any other memory).
A byte's value at a position is the nearest recorded access to it (the byte after
the last one before, or the byte before the first one after), as long as no call that
may write it lies in between; ``None`` when no such access exists.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from qstep.bpf.uapi import Helper
from qstep.errors import UsageError
from qstep.recorder.recording import Recording

NO_WRITES = frozenset({
    Helper.MAP_LOOKUP_ELEM, Helper.KTIME_GET_NS, Helper.GET_PRANDOM_U32,
    Helper.GET_SMP_PROCESSOR_ID, Helper.GET_CURRENT_PID_TGID, Helper.GET_CURRENT_UID_GID,
    Helper.GET_NUMA_NODE_ID, Helper.JIFFIES64, Helper.KTIME_GET_BOOT_NS,
    Helper.KTIME_GET_COARSE_NS, Helper.KTIME_GET_TAI_NS})
ARGS = ("rdi", "rsi", "rdx", "rcx", "r8")  # r1-r5


@dataclass(frozen=True)
class _Call:
    step: int
    writes_nothing: bool
    rsp: int
    top: int  # the end of the program's stack (the outermost frame's return address)
    stack_args: tuple[int, ...]  # r1-r5 values that point into the stack


@dataclass(frozen=True)
class _Seen:
    step: int
    before: int | None
    after: int


class PastMemory:
    """Bytes of memory as they were before a recorded step."""

    def __init__(self, rec: Recording, top: int | None = None) -> None:
        """``top``: the end of the program's stack when the recording does not start at
        the program's entry (from the live frames where it began)."""
        self.rec = rec
        self.calls = _calls(rec, top)
        self._call_steps = [c.step for c in self.calls]
        self._seen: dict[int, list[_Seen]] = {}
        for k, step in enumerate(rec.steps):
            for a in step.frame_accesses + step.accesses:
                for i in range(a.size):
                    after = (a.value >> (8 * i)) & 0xFF
                    before = after if not a.store else (
                        (a.old >> (8 * i)) & 0xFF if a.old is not None else None)
                    self._seen.setdefault(a.addr + i, []).append(_Seen(k, before, after))

    def read(self, addr: int, size: int, pos: int, live: int,
             read_live: Callable[[int, int], bytes]) -> bytes:
        """The bytes before step ``pos``; one the recording never saw is read from the
        guest (``read_live``, at step ``live``) when nothing can have changed it since.
        ``UsageError`` for a byte that is not known."""
        known = [self.byte(b, pos) for b in range(addr, addr + size)]
        if None in known:
            now = read_live(addr, size)
            known = [now[i] if v is None and not self.stored(addr + i, 1, pos)
                     and not self.may_change(addr + i, pos, live) else v
                     for i, v in enumerate(known)]
        if None in known:
            b = addr + known.index(None)
            raise UsageError(f"the byte at {b:#x} is not known at this point of the "
                             "recording (the program did not access it, or a helper that "
                             "may write it ran in between)")
        return bytes(v for v in known if v is not None)

    def byte(self, addr: int, pos: int) -> int | None:
        """The byte at ``addr`` before step ``pos`` (None: not known)."""
        seen = self._seen.get(addr, [])
        i = bisect_left([s.step for s in seen], pos)
        if i > 0 and not self.may_change(addr, seen[i - 1].step, pos):
            return seen[i - 1].after
        if i < len(seen) and not self.may_change(addr, pos, seen[i].step):
            return seen[i].before
        return None

    def may_change(self, addr: int, start: int, end: int) -> bool:
        """A call in steps [start, end) may have written the byte at ``addr``."""
        lo = bisect_left(self._call_steps, start)
        hi = bisect_left(self._call_steps, end)
        return any(_may_write(call, addr) for call in self.calls[lo:hi])

    def stored(self, addr: int, size: int, start: int) -> bool:
        """A recorded store to [addr, addr+size) at step ``start`` or later."""
        return any(a.store and a.addr < addr + size and addr < a.addr + a.size
                   for step in self.rec.steps[start:]
                   for a in step.accesses + step.frame_accesses)


def _may_write(call: _Call, addr: int) -> bool:
    if call.writes_nothing:
        return False
    in_stack = call.rsp <= addr < call.top
    return not in_stack or any(p <= addr for p in call.stack_args)


def _calls(rec: Recording, top: int | None) -> list[_Call]:
    """Every helper or kfunc call the run made (not those the verifier inlined)."""
    xlated = {ins.index: ins for ins in rec.prog.xlated}
    first = rec.steps[0] if rec.steps else None
    main = rec.prog.functions[0]
    # Known only when the recording starts at the program's entry (rsp: its return address).
    if top is None:
        top = first.x86["rsp"] + 8 if first is not None and first.site.jit_start == main.addr \
            else 0
    out = []
    for k, step in enumerate(rec.steps):
        site = step.site
        ins = xlated.get(site.xlated_index if site.xlated_index is not None else -1)
        if ins is None or not (ins.is_helper_call or ins.is_kfunc_call):
            continue
        rsp = step.x86["rsp"]
        args = tuple(v for v in (step.x86[r] for r in ARGS) if rsp <= v < top)
        pure = site.insn.is_helper_call and site.insn.imm in NO_WRITES
        out.append(_Call(k, pure, rsp, top, args))
    return out
