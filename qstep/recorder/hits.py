"""The emulator's own count of how often JIT addresses executed (the recorder plugin).

A probe counts its hits in the guest, but only the hits the CPU reported: under TCG a
hardware breakpoint is sometimes not taken (measured: 1-18 in 10^6 runs, on QEMU 7.2
and 10.0, more on a loaded host). Counting the same addresses in the emulator gives an
independent number, so a missed hit is reported instead of silently lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from qstep.errors import HostError
from qstep.recorder.control import DEFAULT_LIMIT, RecorderControl
from qstep.recorder.log import Boundary, parse_log
from qstep.session import Session

T = TypeVar("T")


def recorder_available(session: Session) -> bool:
    """Whether this session's QEMU runs the recorder plugin."""
    machine = session.machine
    return machine is not None and machine.config is not None and (
        machine.config.plugin is not None)


def count_executions(session: Session, addrs: list[int], run: Callable[[], T],
                     limit: int = DEFAULT_LIMIT) -> tuple[T, Counter[int]]:
    """Run ``run`` with the plugin counting the executions of each address in ``addrs``."""
    machine = session.machine
    if machine is None or machine.config is None or machine.config.plugin is None:
        raise HostError("counting executions needs the recorder plugin (QEMU 10)")
    with RecorderControl(machine.config.recorder_socket, session.hello) as control:
        control.arm([(a, a + 1) for a in addrs], addrs, limit)
        try:
            result = run()
        finally:
            size = control.disarm(limit)
    log = machine.config.recorder_log.read_bytes()[:size]
    return result, Counter(r.pc for r in parse_log(log) if isinstance(r, Boundary))
