"""Record one BPF_PROG_TEST_RUN of a loaded program with the recorder plugin."""

from __future__ import annotations

import contextlib

from qstep.errors import HostError, QstepError
from qstep.loaded import LoadedProgram
from qstep.recorder.control import DEFAULT_LIMIT, RecorderControl
from qstep.recorder.log import parse_log
from qstep.recorder.recording import Recording, build_recording
from qstep.session import RunResult, Session


def jit_ranges(prog: LoadedProgram) -> list[tuple[int, int]]:
    return [(f.addr, f.addr + f.length) for f in prog.functions]


def boundaries(prog: LoadedProgram) -> list[int]:
    return sorted({s.jit_start for s in prog.sites.values() if s.jit_start is not None})


def record_run(session: Session, prog: LoadedProgram, data: bytes, ctx: bytes = b"",
               limit: int = DEFAULT_LIMIT, repeat: int = 1) -> tuple[RunResult, Recording]:
    """Arm the recorder on ``prog``'s JIT code, run it once, disarm, read the log.

    ``repeat`` is BPF_PROG_TEST_RUN's (raw tracepoint programs take 0: one run).
    """
    machine = session.machine
    if machine is None or machine.config is None or session.agent is None:
        raise HostError("the session is not started")
    if machine.config.plugin is None:
        raise HostError(f"no recorder in this QEMU: {machine.recorder_error}")
    if prog.foreign:
        raise HostError("recording needs a program loaded by qstep (exact JIT map)")
    with RecorderControl(machine.config.recorder_socket, session.hello) as control:
        control.arm(jit_ranges(prog), boundaries(prog), limit)
        try:
            result = session.test_run(prog, data, ctx, repeat=repeat)
        except Exception:
            with contextlib.suppress(QstepError):  # the run's own error is the one to see
                control.disarm(limit)
            raise
        # A Ctrl-C leaves it armed: the guest goes down, and a disarm would wait for a
        # vCPU still busy with the run.
        size = control.disarm(limit)
    log = machine.config.recorder_log.read_bytes()[:size]
    return result, build_recording(prog, parse_log(log), result.retval)
