"""The lockstep oracle over a recording: every instruction, register and memory write.

The same check as ``lockstep`` (which steps a live run through the gdbstub), over a
run the recorder plugin logged: for each recorded BPF instruction the reference
interpreter computes the state after it from the registers before it and the memory
the recording saw (``Replay.read_memory``); the next boundary's registers, the next
instruction and the instruction's recorded stores must agree with it exactly. Stores
are compared both ways: a write BPF semantics give that the JIT did not do, or a
store the JIT did that BPF semantics do not give, is a divergence.
"""

from __future__ import annotations

from collections.abc import Callable

from qstep.debugger.tailcall import is_tail_call
from qstep.errors import UsageError
from qstep.loaded import LoadedProgram
from qstep.oracle.interp import OracleError
from qstep.oracle.lockstep import (
    Divergence,
    Expected,
    LockstepReport,
    Oracle,
    compare_step,
    tail_call_end,
)
from qstep.recorder.recording import RecordedStep, Recording
from qstep.recorder.replay import Replay
from qstep.session import Session


def lockstep_recording(rec: Recording,
                       percpu_offset: Callable[[], int] | None = None) -> LockstepReport:
    """Check every step of a one-run recording; stop at the first divergence.
    ``percpu_offset``: CPU 0's per-CPU offset, for xlated code that computes per-CPU
    addresses (``percpu_offset_reader``)."""
    report = LockstepReport()
    if not rec.steps:
        return report
    replay = Replay(rec)
    oracle = Oracle(rec.prog, replay.read_memory, percpu_offset)
    frames: list[tuple[int, ...]] = []
    for k, step in enumerate(rec.steps):
        replay.pos = k
        before = step.regs().values
        try:
            exp = oracle.expect(step.site, before)
        except (UsageError, OracleError) as err:
            report.unsupported = f"step {k + 1}, insn {step.site.index}: {err}"
            return report
        if exp.exits and not frames:
            return _at_exit(report, rec, k, exp, before)
        if k + 1 == len(rec.steps) and is_tail_call(step.site):
            report.unsupported = tail_call_end(k + 1, step.site)
            return report
        if k + 1 == len(rec.steps):
            return _diverged(report, step, before, (), exp.regs,
                             "the recording ends here: the program left its JIT code "
                             "without returning (a tail call?)")
        after = rec.steps[k + 1].regs().values
        replay.pos = k + 1
        found = compare_step(replay.read_memory, exp, frames, before, after,
                             rec.steps[k + 1].site.index)
        what = found[0] if found is not None else _store_mismatch(step, exp)
        if what is not None:
            unknown = found[2] if found is not None else set()
            return _diverged(report, step, before, after, exp.regs, what, unknown)
        report.checked += 1
    return report


def percpu_offset_reader(session: Session, prog: LoadedProgram) -> Callable[[], int] | None:
    """CPU 0's per-CPU offset read once through the gdbstub (a kernel variable, not a
    BPF value: the recording cannot tell it), when the program's code needs it."""
    addr = prog.percpu_offset_addr
    if addr is None:
        return None
    cache: list[int] = []

    def read() -> int:
        if not cache:
            with session.target() as target:
                cache.append(int.from_bytes(target.read_memory(addr, 8), "little"))
        return cache[0]
    return read


def _at_exit(report: LockstepReport, rec: Recording, k: int, exp: Expected,
             before: tuple[int, ...]) -> LockstepReport:
    step = rec.steps[k]
    report.retval = rec.retval
    want = exp.regs[0] & 0xFFFFFFFF
    if k + 1 != len(rec.steps):
        return _diverged(report, step, before, (), exp.regs,
                         "the program went on after the exit of its main function")
    if rec.retval != want:
        return _diverged(report, step, before, (), exp.regs,
                         f"the program returned {rec.retval}, BPF semantics give {want}")
    report.checked += 1
    return report


def _store_mismatch(step: RecordedStep, exp: Expected) -> str | None:
    """The first byte where the recorded stores and BPF semantics' writes differ.

    A store that left a byte as it was is not a write BPF semantics must give: x86's
    ``lock cmpxchg`` writes the old value back when the comparison fails.
    """
    got: dict[int, tuple[int, int | None]] = {}  # addr -> (byte stored, byte before)
    for a in step.accesses:
        if a.store:
            for i in range(a.size):
                old = (a.old >> (8 * i)) & 0xFF if a.old is not None else None
                got[a.addr + i] = ((a.value >> (8 * i)) & 0xFF, got.get(a.addr + i, (0, old))[1])
    want: dict[int, int] = {}
    for w in exp.writes:
        want.update({w.addr + i: b for i, b in enumerate(w.value)})
    for addr in sorted(set(got) | set(want)):
        if addr not in got:
            return (f"BPF semantics write {want[addr]:#04x} at {addr:#x}; the JIT stored "
                    "nothing there")
        stored, before = got[addr]
        if addr not in want and stored != before:
            return (f"the JIT stored {stored:#04x} at {addr:#x}, which BPF semantics do "
                    "not write")
        if addr in want and stored != want[addr]:
            return (f"the JIT stored {stored:#04x} at {addr:#x}, BPF semantics write "
                    f"{want[addr]:#04x}")
    return None


def _diverged(report: LockstepReport, step: RecordedStep, before: tuple[int, ...],
              after: tuple[int, ...], expected: list[int], what: str,
              unknown: set[int] | None = None) -> LockstepReport:
    report.divergence = Divergence(report.checked + 1, step.site, what, before, after,
                                   tuple(expected[:11]), frozenset(unknown or ()))
    return report
