"""``why``: who wrote these bytes before this point of the run, from a recording.

``TARGET at LOC``: TARGET is ``mem(ADDR, SIZE)`` or an address expression (SIZE
bytes, default 8), evaluated with the registers (and recorded memory) as they were
when LOC was first reached. The answer lists every recorded store to any of those
bytes before that moment, oldest first: instruction, source line, the bytes it
replaced and the bytes it wrote. Stores by helpers are not recorded (their code is
outside the program), so the helper calls that ran are listed with the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from qstep.bpf.helpers import HELPER_NAMES
from qstep.debugger.locations import resolve
from qstep.errors import UsageError
from qstep.expr import Expr, evaluate, parse_expression
from qstep.expr.ast import Mem
from qstep.loaded import InsnSite
from qstep.recorder.log import MemAccess
from qstep.recorder.pastmemory import NO_WRITES
from qstep.recorder.recording import RecordedStep, Recording
from qstep.recorder.replay import Replay

DEFAULT_SIZE = 8


@dataclass(frozen=True)
class Write:
    """One store that touched the bytes asked about (only the overlapping bytes)."""

    step: int
    site: InsnSite
    addr: int  # first overlapping byte
    old: bytes | None  # None: the recorder could not read them first
    new: bytes
    jit_frame: bool  # a push/call of the JIT (saved register, return address)


@dataclass(frozen=True)
class WhyAnswer:
    addr: int
    size: int
    step: int  # the step at which LOC was first reached
    site: InsnSite
    value: bytes | None  # the bytes at that moment, if the recording saw all of them
    writes: list[Write]
    helper_calls: list[tuple[int, InsnSite, str]]
    name: str = ""  # the C object asked about (``tkey.remote_ipv6``), if one was
    shown: str = ""  # its value then, typed


@dataclass(frozen=True)
class History:
    """What the first ``end`` steps of a recording did: every store, every helper call."""

    writes: list[Write]
    helper_calls: list[tuple[int, InsnSite, str]]

    def answer(self, rec: Recording, end: int, addr: int, size: int,
               value: bytes | None) -> WhyAnswer:
        """The answer for [addr, addr+size) at step ``end`` (0-based) of ``rec``."""
        return WhyAnswer(addr, size, end + 1, rec.steps[end].site, value,
                         _clip(self.writes, addr, size), self.helper_calls)


def history(rec: Recording, end: int) -> History:
    """The stores and helper calls of steps [0, end) of ``rec``."""
    out = History([], [])
    xlated = {ins.index: ins for ins in rec.prog.xlated}
    for k, step in enumerate(rec.steps[:end]):
        for a in step.frame_accesses + step.accesses:
            if a.store:
                out.writes.append(_write(k + 1, step, a, a in step.frame_accesses))
        ins = xlated.get(step.site.xlated_index if step.site.xlated_index is not None else -1)
        if ins is not None and ins.is_kfunc_call:
            out.helper_calls.append((k + 1, step.site, "a kfunc"))
        if ins is None or not ins.is_helper_call:  # (or inlined by the verifier)
            continue
        # the object's instruction names the helper (the xlated imm is an address offset)
        helper = step.site.insn.imm if step.site.insn.is_helper_call else ins.imm
        if helper not in NO_WRITES:  # a lookup, a clock, ... cannot have written them
            out.helper_calls.append((k + 1, step.site,
                                     HELPER_NAMES.get(helper, f"helper {helper}")))
    return out


class ReplayEnv:
    """``evaluate``'s view of a replay position: registers and recorded memory."""

    def __init__(self, replay: Replay) -> None:
        self._replay = replay
        self._regs = replay.regs()

    def reg(self, n: int) -> int:
        return self._regs[n]

    def mem(self, addr: int, size: int) -> bytes:
        return self._replay.read_memory(addr, size)

    def name(self, name: str) -> int:
        raise UsageError(f"'{name}': use registers $r0..$r10 and mem(ADDR, SIZE) here")


def split_question(text: str) -> tuple[str, str]:
    """``TARGET at LOC`` → (TARGET, LOC)."""
    target, sep, loc = text.rpartition(" at ")
    if not sep or not target.strip() or not loc.strip():
        raise UsageError(f"'{text}': ask 'EXPR at LOC' (a C object, mem(ADDR, SIZE) or ADDR)")
    return target.strip(), loc.strip()


def parse_question(text: str) -> tuple[Expr, int, str]:
    """``TARGET at LOC`` → (address expression, size, location text)."""
    target, loc = split_question(text)
    expr, size = address_and_size(target)
    return expr, size, loc


def address_and_size(text: str) -> tuple[Expr, int]:
    """``mem(ADDR, SIZE)`` → (ADDR, SIZE); another expression is an address of 8 bytes."""
    expr = parse_expression(text.strip())
    if isinstance(expr, Mem):
        return expr.addr, expr.size or DEFAULT_SIZE
    return expr, DEFAULT_SIZE


def why(rec: Recording, text: str) -> WhyAnswer:
    """Answer ``TARGET at LOC`` over the recording."""
    expr, size, loc = parse_question(text)
    resolved = resolve(rec.prog, loc)
    sites = {s.index for s in resolved.sites}
    for k, step in enumerate(rec.steps):
        path = resolved.paths.get(step.site.index)  # a merged-away line: its path only
        if step.site.index in sites and (path is None or path.holds(step.regs().values)):
            replay = Replay(rec)
            replay.pos = k
            addr = address_value(evaluate(expr, ReplayEnv(replay)))
            return history(rec, k).answer(rec, k, addr, size, _known(replay, addr, size))
    raise UsageError(f"{loc} was not reached in this run ({len(rec.steps)} instructions)")


def address_value(value: int | bytes) -> int:
    """An evaluated address expression as an unsigned 64-bit address."""
    if isinstance(value, bytes):
        return int.from_bytes(value, "little")
    return value & ((1 << 64) - 1)


def _known(replay: Replay, addr: int, size: int) -> bytes | None:
    try:
        return replay.read_memory(addr, size)
    except UsageError:
        return None


def _write(step: int, rs: RecordedStep, a: MemAccess, frame: bool) -> Write:
    new = a.value.to_bytes(a.size, "little")
    old = a.old.to_bytes(a.size, "little") if a.old is not None else None
    return Write(step, rs.site, a.addr, old, new, frame)


def _overlaps(w: Write, addr: int, size: int) -> bool:
    return w.addr < addr + size and addr < w.addr + len(w.new)


def _clip(writes: list[Write], addr: int, size: int) -> list[Write]:
    """The writes that touch [addr, addr+size), cut to the overlapping bytes."""
    out = []
    for w in writes:
        if not _overlaps(w, addr, size):
            continue
        lo, hi = max(w.addr, addr), min(w.addr + len(w.new), addr + size)
        cut = slice(lo - w.addr, hi - w.addr)
        out.append(Write(w.step, w.site, lo, w.old[cut] if w.old is not None else None,
                         w.new[cut], w.jit_frame))
    return out
