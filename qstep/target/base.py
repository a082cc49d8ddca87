"""The target interface: a guest CPU that stops, steps, and shows registers and memory.

A ``Target`` starts out stopped (QEMU's gdbstub stops the VM when a debugger
connects). ``close()`` detaches, which removes every breakpoint and lets the VM
run again; it never kills QEMU (``qstep.vm.Machine`` owns it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import astuple, dataclass, fields
from types import TracebackType
from typing import Self

import capstone

from qstep import interrupts
from qstep.errors import GuestError

GPR_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
REG_NAMES = (*GPR_NAMES, "rip", "eflags")  # QEMU's ``g`` order; gdb's numbers 0-17
STOP_REASONS = ("breakpoint", "step", "watchpoint", "interrupt", "exited", "signal")
WATCH_KINDS = ("write", "read", "access")
KERNEL_BASE = 0xFFFF800000000000
STEP_RETRIES = 3
_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


@dataclass(frozen=True)
class X86Regs:
    """The general registers, rip and eflags of a stopped x86-64 CPU."""

    rax: int
    rbx: int
    rcx: int
    rdx: int
    rsi: int
    rdi: int
    rbp: int
    rsp: int
    r8: int
    r9: int
    r10: int
    r11: int
    r12: int
    r13: int
    r14: int
    r15: int
    rip: int
    eflags: int

    @classmethod
    def from_values(cls, values: list[int]) -> X86Regs:
        """Build from the 18 values in ``REG_NAMES`` order."""
        return cls(*values[: len(REG_NAMES)])

    def as_dict(self) -> dict[str, int]:
        return {f.name: v for f, v in zip(fields(self), astuple(self), strict=True)}


@dataclass(frozen=True)
class Stop:
    """Why and where the CPU stopped; ``watch_addr`` is set for watchpoint stops."""

    reason: str
    pc: int
    watch_addr: int | None = None


class TargetError(GuestError):
    """The debugger connection failed: gdb or QEMU died, or the protocol broke."""


def may_repeat_in_place(code: bytes, pc: int) -> bool:
    """True if the x86 instruction at ``pc`` can execute and leave rip unchanged
    (a ``rep`` string instruction, or a jump to itself)."""
    insn = next(_CS.disasm(code, pc, 1), None)
    if insn is None:
        return False
    return str(insn.mnemonic).startswith("rep") or (
        insn.mnemonic == "jmp" and insn.op_str == hex(pc))


def check_watch_kind(kind: str) -> None:
    if kind not in WATCH_KINDS:
        raise ValueError(f"watchpoint kind must be one of {', '.join(WATCH_KINDS)}: {kind!r}")


class Target(ABC):
    """A stopped (or resumed) guest CPU behind a debugger connection.

    Implementations keep the latest stop in ``_stop``, the registers read at it
    in ``_regs``, and what they set in ``_bps`` / ``_wps`` (keyed like the
    ``breakpoints`` / ``watchpoints`` properties).
    """

    _stop: Stop
    _regs: X86Regs | None
    _bps: Collection[tuple[int, bool]]
    _wps: Collection[tuple[int, int, str]]

    @abstractmethod
    def registers(self) -> X86Regs:
        """The registers at the current stop."""

    @abstractmethod
    def read_memory(self, addr: int, size: int) -> bytes:
        """``size`` bytes of guest virtual memory (current page tables)."""

    def write_register(self, name: str, value: int) -> None:
        """Set one general-purpose register (``REG_NAMES``) at the current stop."""
        raise TargetError(f"this debugger backend cannot write registers ({name})")

    def write_memory(self, addr: int, data: bytes) -> None:
        """Write guest virtual memory at the current stop."""
        raise TargetError(f"this debugger backend cannot write memory ({addr:#x})")

    @abstractmethod
    def set_breakpoint(self, addr: int, hardware: bool = True) -> None:
        """Stop whenever the CPU is about to execute ``addr``."""

    @abstractmethod
    def clear_breakpoint(self, addr: int, hardware: bool = True) -> None:
        """Remove a breakpoint set with the same arguments (no-op if absent)."""

    @abstractmethod
    def set_watchpoint(self, addr: int, length: int, kind: str) -> None:
        """Stop after an access (``write``, ``read``, ``access``) to the range."""

    @abstractmethod
    def clear_watchpoint(self, addr: int, length: int, kind: str) -> None:
        """Remove a watchpoint set with the same arguments (no-op if absent)."""

    @interrupts.deferred()  # a Ctrl-C is taken once the step is complete
    def step(self) -> Stop:
        """Execute exactly one x86 instruction (interrupts stay masked).

        QEMU now and then (about 1 step in 400 here) reports a single step that
        executed nothing; such a step is repeated.
        """
        before, pc = self.cached_registers, self.stop.pc
        stop = self._step_once()
        for _ in range(STEP_RETRIES):
            if stop.reason != "step" or stop.pc != pc or self._step_ran(before):
                break
            stop = self._step_once()
        return stop

    def _step_ran(self, before: X86Regs | None) -> bool:
        """After a step that left rip alone: did it execute anything?"""
        if before is not None:
            return self.registers() != before
        return may_repeat_in_place(self.read_memory(self.stop.pc, 16), self.stop.pc)

    @abstractmethod
    def _step_once(self) -> Stop:
        """One ``s`` as QEMU does it."""

    @property
    def stop(self) -> Stop:
        """The latest stop."""
        return self._stop

    @property
    def cached_registers(self) -> X86Regs | None:
        """The registers of the current stop if already read, else None."""
        return self._regs

    @abstractmethod
    def resume(self) -> None:
        """Continue (stepping off a breakpoint at the current pc); do not wait."""

    @abstractmethod
    def wait(self, timeout: float) -> Stop | None:
        """The stop that ends the running state, or None if still running."""

    @abstractmethod
    def interrupt(self) -> Stop:
        """Stop a running target (returns the current stop if already stopped)."""

    @abstractmethod
    def close(self, resume: bool = True) -> None:
        """Detach: remove breakpoints, let the VM run, release the connection.

        With ``resume=False`` the VM stays stopped (breakpoints removed) so that
        another client can connect and see the same stop.
        """

    @abstractmethod
    def fileno(self) -> int:
        """A descriptor that becomes readable when the target may have stopped."""

    @property
    @abstractmethod
    def running(self) -> bool:
        """True between ``resume()`` and the stop that ends it."""

    def clear_all(self) -> None:
        """Remove every breakpoint and watchpoint this target set."""
        for addr, hardware in list(self.breakpoints):
            self.clear_breakpoint(addr, hardware)
        for addr, length, kind in list(self.watchpoints):
            self.clear_watchpoint(addr, length, kind)

    @property
    def breakpoints(self) -> set[tuple[int, bool]]:
        """The breakpoints set, as ``(addr, hardware)``."""
        return set(self._bps)

    @property
    def watchpoints(self) -> set[tuple[int, int, str]]:
        """The watchpoints set, as ``(addr, length, kind)``."""
        return set(self._wps)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.close()
        except TargetError:
            if exc is None:
                raise
