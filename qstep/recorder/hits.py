"""The emulator's own count of how often JIT addresses executed (the recorder plugin).

A probe counts its hits in the guest, but only the hits the CPU reported. Under QEMU
10.0.2 TCG a hardware breakpoint is sometimes not taken (measured: 4-9 in 10^6 runs of
the example, more on a loaded host). Counting the same addresses in the emulator gives
an independent number, so a missed hit is reported instead of silently lost.

Root cause (measured; bench/hwbp_misses.py shows it): an external interrupt (the local
APIC timer, vector 0xec) delivered exactly before the probed instruction. Since QEMU
9.1 (commit 69cb498c5626 "target/i386: fix pushed value of EFLAGS.RF", June 2024),
``do_interrupt64`` in target/i386/tcg/seg_helper.c pushes RFLAGS with RF=1 for every
event that is not an INT instruction: ``set_rf = exception_is_fault(intno)``, which is
true for hardware interrupts too (vectors >= 32). The handler's IRET restores RF=1, so
``x86_debug_check_breakpoint`` (target/i386/tcg/tcg-cpu.c) declines the breakpoint in
``check_for_breakpoints_slow`` (accel/tcg/cpu-exec.c): the instruction runs, no #DB.
Real CPUs push the current RF (0 there) for external interrupts (Intel SDM vol. 3,
17.3.1.1). In a breakpoint's page every instruction is its own translation block, so
an interrupt can arrive at any of them. QEMU 7.2 pushes the current RF: no miss there
in 2.3 x 10^6 runs. Perf throttling is not involved (no #DB at all at a miss). Built
from the same source with ``set_rf = !is_hw && exception_is_fault(intno)``, QEMU took
every breakpoint (0 misses in 2 x 10^6 runs, while 28 timer interrupts arrived at the
probed instruction, now pushing RF=0, each followed by the #DB).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar
from weakref import WeakKeyDictionary

from qstep.errors import HostError, QstepError
from qstep.recorder.control import DEFAULT_LIMIT, RecorderControl
from qstep.recorder.log import Boundary, LogRecord, Vector, parse_with_vectors
from qstep.session import Session

T = TypeVar("T")

DEBUG_VECTOR = 1
FIRST_EXTERNAL_VECTOR = 32
RF = 1 << 16
_IDT: WeakKeyDictionary[Session, int | None] = WeakKeyDictionary()


class Executions(Counter[int]):
    """How often each address ran. Of those runs (when ``classified``: the log had the
    vectors delivered at the addresses), ``after_debug`` followed a #DB at that address
    (the breakpoint was taken) and ``after_interrupt`` followed, with no #DB, an
    external interrupt there that pushed RF=1 (the QEMU behaviour described above)."""

    def __init__(self) -> None:
        super().__init__()
        self.after_debug: Counter[int] = Counter()
        self.after_interrupt: Counter[int] = Counter()
        self.classified = False


def classify(records: Iterable[LogRecord | Vector], classified: bool = True) -> Executions:
    """Count the boundary records per pc and what was delivered at that pc before each."""
    out = Executions()
    out.classified = classified
    delivered: dict[int, list[Vector]] = {}
    for rec in records:
        if isinstance(rec, Vector):
            delivered.setdefault(rec.pc, []).append(rec)
        elif isinstance(rec, Boundary):
            out[rec.pc] += 1
            seen = delivered.pop(rec.pc, [])
            if any(v.vector == DEBUG_VECTOR for v in seen):
                out.after_debug[rec.pc] += 1
            elif any(v.vector >= FIRST_EXTERNAL_VECTOR and v.pushed_flags & RF for v in seen):
                out.after_interrupt[rec.pc] += 1
    return out


def recorder_available(session: Session) -> bool:
    """Whether this session's QEMU runs the recorder plugin."""
    machine = session.machine
    return machine is not None and machine.config is not None and (
        machine.config.plugin is not None)


def idt_address(session: Session) -> int | None:
    """The guest's IDT (``idt_table``), None where kallsyms does not list it."""
    if session not in _IDT:
        try:
            _IDT[session] = session.kallsyms("idt_table")
        except QstepError:
            _IDT[session] = None
    return _IDT[session]


def count_executions(session: Session, addrs: list[int], run: Callable[[], T],
                     limit: int = DEFAULT_LIMIT) -> tuple[T, Executions]:
    """Run ``run`` with the plugin counting the executions of each address in ``addrs``."""
    machine = session.machine
    if machine is None or machine.config is None or machine.config.plugin is None:
        raise HostError("counting executions needs the recorder plugin (QEMU 10)")
    idt = idt_address(session)
    with RecorderControl(machine.config.recorder_socket, session.hello) as control:
        control.arm([(a, a + 1) for a in addrs], addrs, limit, idt=idt)
        try:
            result = run()
        finally:
            size = control.disarm(limit)
    log = machine.config.recorder_log.read_bytes()[:size]
    return result, classify(parse_with_vectors(log), classified=idt is not None)
