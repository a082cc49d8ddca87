"""``qstep trace`` records from a recording: the same records stepping produces."""

from __future__ import annotations

from collections.abc import Iterator

from qstep.debugger.defined import DefinedRegs
from qstep.debugger.provenance import Provenance
from qstep.debugger.tailcall import LEFT, is_tail_call
from qstep.debugger.trace import TraceRecord, callback_args, shown_regs
from qstep.errors import GuestError
from qstep.recorder.recording import Recording
from qstep.recorder.replay import Replay


def trace_records(rec: Recording, max_steps: int = 1_000_000) -> Iterator[TraceRecord]:
    """The records ``trace_run`` yields by stepping, built from the recording.

    Pointers get their provenance as when stepping; a map key is read as the
    recording knew it when the lookup was called (``Replay.read_memory``).
    """
    if not rec.steps:
        return
    replay = Replay(rec)
    provenance = Provenance(rec.prog, rec.steps[0].regs().values, replay.read_memory)
    defined = DefinedRegs()
    for k, step in enumerate(rec.steps[:max_steps]):
        if k + 1 == len(rec.steps):
            if not rec.exited and is_tail_call(step.site):
                yield TraceRecord(k + 1, step.site, None, rec.retval, left=LEFT)
                return
            if not rec.exited:
                raise GuestError(f"the program left its JIT code after instruction "
                                 f"{step.site.index} ({step.site.function.name}) without "
                                 "exiting (a tail call?); the recording ends there")
            yield TraceRecord(k + 1, step.site, None, rec.retval)
            return
        args = callback_args(rec.prog, step.site, rec.steps[k + 1].site)
        live = defined.after(step.site.insn, args)
        after = rec.steps[k + 1].regs().values
        replay.pos = k
        provenance.step(step.site, step.regs().values, after, args is not None)
        regs = tuple(v if n in live else None for n, v in enumerate(after))
        yield TraceRecord(k + 1, step.site, regs, shown=shown_regs(regs, provenance))
