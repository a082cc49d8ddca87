"""One run of a loaded program checked against the verifier's log of its load.

The run is recorded by the QEMU plugin when the session's QEMU has it, else traced
by stepping; either way every executed instruction is checked (`check_run`). Used by
``qstep trace --check-verifier``, ``qstep test`` (``verifier_check``) and
``qstep verify-verifier``; the text and JSON forms are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from qstep.debugger.engine import RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.errors import UsageError
from qstep.loaded import LoadedProgram
from qstep.recorder.run import record_run
from qstep.recorder.trace import trace_records
from qstep.session import Session
from qstep.verifier.check import CheckReport, Regs, Shown, check_run
from qstep.verifier.log import VerifierLog, parse_known


@dataclass
class VerifierCheck:
    """A checked run: the report, the trace's length and how it was traced."""

    report: CheckReport
    trace_insns: int
    traced_by: str  # "recorder" or "stepping"
    executed: list[int]  # original instruction indexes, in order


def verifier_log_of(prog: LoadedProgram) -> VerifierLog:
    """The parsed level-2 log kept at load; a clear error when there is none to use."""
    if prog.foreign:
        raise UsageError(f"{prog.name} was loaded outside qstep: the kernel kept no "
                         "verifier log of its load (load the object with qstep to check it)")
    if not prog.verifier_log:
        raise UsageError(f"{prog.name} was loaded without the verifier's detailed log "
                         "(--verifier-log)")
    return parse_known(prog.verifier_log)


def runtime_steps(items: Iterable[object]) -> Iterator[tuple[int, Regs, Shown]]:
    """(insn, registers before it, as the trace shows them) from a trace; before the
    first instruction only r1 (the context) and r10 (the frame pointer) hold values."""
    before: Regs = (None,) * 11
    shown: Shown = (None, "ctx") + (None,) * 8 + ("fp",)
    for item in items:
        if not isinstance(item, TraceRecord):
            continue
        yield item.site.index, before, shown
        if item.regs_after is not None:
            before = item.regs_after
            shown = item.shown if item.shown is not None else (None,) * 11


def check_records(prog: LoadedProgram, log: VerifierLog, items: Iterable[object],
                  traced_by: str) -> VerifierCheck:
    """Check a trace (`TraceRecord`s, from stepping or a recording) against ``log``."""
    steps = list(runtime_steps(items))
    report = check_run(log, steps, {i.index: i for i in prog.insns})
    return VerifierCheck(report, len(steps), traced_by, [s[0] for s in steps])


def can_record(session: Session, prog: LoadedProgram) -> bool:
    machine = session.machine
    return (machine is not None and machine.config is not None
            and machine.config.plugin is not None and not prog.foreign)


def trace_and_check(session: Session, prog: LoadedProgram, packet: bytes) -> VerifierCheck:
    """Run ``packet`` once (recorded when possible) and check every instruction."""
    log = verifier_log_of(prog)
    if can_record(session, prog):
        _result, rec = record_run(session, prog, packet)
        return check_records(prog, log, trace_records(rec), "recorder")
    with session.debugger(prog, RunRequest(packet)) as dbg:
        return check_records(prog, log, list(trace_run(dbg)), "stepping")
