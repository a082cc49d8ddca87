"""Execution control over a JIT-compiled BPF program: breakpoints, run, step, finish.

The guest runs the program with BPF_PROG_TEST_RUN (started through the agent)
while the host holds the CPU through a ``Target``. Every stop is reported at a
BPF instruction boundary (the first x86 byte of an instruction's JIT range).
Calls out of the program (helpers) are always stepped over with a temporary
breakpoint on the return address, so stepping never wanders into the kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, overload

import capstone

from qstep import interrupts
from qstep.agent.replies import RunResult
from qstep.debugger.frames import Frame, backtrace
from qstep.debugger.jitframe import layout_of
from qstep.debugger.lineentries import falls_through
from qstep.debugger.locations import resolve
from qstep.debugger.mergedlines import PathCheck
from qstep.debugger.regs import BPF_TO_X86, BpfRegs, bpf_regs
from qstep.debugger.tailcall import is_tail_call, tail_called
from qstep.errors import GuestError, HostError, UsageError
from qstep.loaded import InsnSite, LoadedProgram
from qstep.runoutput import RunOutput
from qstep.target.base import Stop, Target, X86Regs

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
MAX_X86_STEPS = 100_000
POLL = 0.02
SETTLE_TIMEOUT = 30.0  # an interrupted program reaches an instruction start long before


@dataclass
class BpLocation:
    """One place a breakpoint stops at (a source line can have several)."""

    site: InsnSite
    enabled: bool = True
    hits: int = 0
    path: PathCheck | None = None  # stop only when control takes this way (merged lines)

    @property
    def addr(self) -> int:
        """The JIT address the breakpoint is inserted at."""
        assert self.site.jit_start is not None
        return self.site.jit_start


@dataclass
class Breakpoint:
    """A user breakpoint: one location, or every place a source line starts (gdb's 1.1, 1.2)."""

    number: int
    location: str
    locations: list[BpLocation]
    enabled: bool = True
    hits: int = 0
    temporary: bool = False
    note: str = ""  # how the location was resolved (a merged-away line's path)

    @property
    def site(self) -> InsnSite:
        """The first location's instruction."""
        return self.locations[0].site

    @property
    def addr(self) -> int:
        return self.locations[0].addr

    def armed(self) -> list[int]:
        """Addresses this breakpoint stops at now."""
        return [loc.addr for loc in self.locations if loc.enabled] if self.enabled else []


@dataclass
class Event:
    """What an execution command ended with."""

    kind: str  # "stopped" | "exited"
    reason: str  # "breakpoint", "step", "finish", "location", "exited"
    site: InsnSite | None = None
    breakpoint: Breakpoint | None = None
    retval: int | None = None
    duration_ns: int | None = None
    data_out: bytes = b""
    ctx_out: bytes = b""
    watch_addr: int | None = None
    output: RunOutput | None = None  # what the program printed (exited runs)
    location: int | None = None  # which location of ``breakpoint`` (1-based)


@dataclass
class RunRequest:
    """What ``run`` feeds the program."""

    data: bytes
    ctx: bytes = b""
    repeat: int = 1


class ProgramRunner(Protocol):
    """Starts test runs and collects their results (``qstep.session.Session``)."""

    def start_run(self, prog: LoadedProgram, request: RunRequest) -> int:
        """Start one test run without waiting; returns its id."""
        ...

    def poll_run(self, run: int, timeout: float) -> RunResult | None:
        """The run's result if it ends within ``timeout`` seconds, else None."""
        ...


@dataclass
class _X86:
    mnemonic: str
    size: int
    target: int | None


class Debugger:
    """Breakpoints and execution control for one loaded program."""

    def __init__(self, prog: LoadedProgram, target: Target, runner: ProgramRunner,
                 request: RunRequest) -> None:
        self.prog = prog
        self.target = target
        self.runner = runner
        self.request = request
        self.breakpoints: dict[int, Breakpoint] = {}
        self._next_number = 1
        self._inserted: dict[int, int] = {}
        self._run_seq: int | None = None
        self._percpu: int | None = None
        self.target.interrupt()  # returns at once if the target is already stopped
        self.stopped = True
        self.last_event: Event | None = None
        self._boundaries = {s.jit_start for s in prog.sites.values() if s.jit_start is not None}
        self._entries = {f.addr for f in prog.functions}
        self._regs_cache: X86Regs | None = None
        self._virtual = False  # stopped before an instruction the CPU is not at (stop_before)
        self.watchpoints: set[tuple[int, int, str]] = set()
        # Kernel addresses (outside the program) to stop at, e.g. the helper an
        # inspect probe calls to ask for a stop; a stop there has reason "kernel".
        self.kernel_breakpoints: set[int] = set()
        # Decides whether a stop at user breakpoints is reported (conditions, logpoints
        # of a front end): False resumes at once, also inside step/finish/advance.
        self.breakpoint_filter: Callable[[list[Breakpoint]], bool] | None = None
        self._decoded: dict[int, _X86] = {}
        self.x86_steps = 0  # single steps issued (statistics for benchmarks)
        self.vm_stops = 0  # stops after a resume (breakpoints, kernel, watchpoints)
        self.kernel_btf: bytes | None = None  # the guest kernel's BTF (maps while stopped)

    # -- state ---------------------------------------------------------
    @property
    def running_program(self) -> bool:
        """True between ``run`` and the program's exit."""
        return self._run_seq is not None

    def x86(self) -> X86Regs:
        """x86 registers at the current stop (cached until the CPU moves)."""
        self._require_stopped()
        if self._regs_cache is None:
            self._regs_cache = self.target.registers()
        return self._regs_cache

    def pc(self) -> int:
        """The x86 program counter at the current stop."""
        return self.x86().rip

    def site(self) -> InsnSite | None:
        """The BPF instruction at the current stop (None outside the program)."""
        return self.prog.site_at(self.pc())

    def regs(self) -> BpfRegs:
        """BPF registers r0-r10 at the current stop (through the JIT register map)."""
        x86 = self.x86()
        func = next((f for f in self.prog.functions if f.contains(x86.rip)), None)
        if func is None:
            return bpf_regs(x86, x86.rbp)
        return bpf_regs(x86, layout_of(self.prog, func).frame_pointer(x86, self.percpu_offset))

    def frames(self) -> list[Frame]:
        """The BPF call stack, innermost first."""
        return backtrace(self.prog, self.x86(), self.target.read_memory, self.percpu_offset)

    def percpu_offset(self) -> int:
        """The per-CPU offset of the guest's CPU 0 (qstep guests have one CPU)."""
        if self._percpu is None:
            addr = self.prog.percpu_offset_addr
            if addr is None:
                raise HostError("the per-CPU offset was not looked up for this program")
            self._percpu = int.from_bytes(self.read_memory(addr, 8), "little")
        return self._percpu

    def read_memory(self, addr: int, size: int) -> bytes:
        """Guest memory (virtual addresses) at the current stop."""
        self._require_stopped()
        return self.target.read_memory(addr, size)

    def write_register(self, n: int, value: int) -> None:
        """Set BPF register ``n`` (r0-r9) at the current stop (its x86 register)."""
        self._require_stopped()
        if not 0 <= n <= 9:
            raise UsageError(f"r{n} cannot be set (r10 is the frame pointer)")
        if self._virtual:
            raise UsageError("stopped by an in-guest probe (the CPU is in its handler): "
                             "step once, then set the register")
        self.target.write_register(BPF_TO_X86[n], value)
        self._regs_cache = None

    def write_memory(self, addr: int, data: bytes) -> None:
        """Write guest memory at the current stop."""
        self._require_stopped()
        self.target.write_memory(addr, data)

    def _require_stopped(self) -> None:
        if not self.stopped:
            raise UsageError("the program is not stopped (use 'run' first)")

    # -- breakpoints ---------------------------------------------------
    def add_breakpoint(self, location: str, temporary: bool = False) -> Breakpoint:
        """A breakpoint at every place ``location`` resolves to."""
        resolved = resolve(self.prog, location, self._current_file())
        bp = Breakpoint(self._next_number, location,
                        [BpLocation(site, path=resolved.paths.get(site.index))
                         for site in resolved.sites], temporary=temporary, note=resolved.note)
        self._next_number += 1
        self.breakpoints[bp.number] = bp
        if self.stopped:
            for addr in bp.armed():
                self._insert(addr)
        return bp

    def _current_file(self) -> str | None:
        if not self.stopped:
            return None
        site = self.site()
        return site.source.file if site and site.source else None

    def delete_breakpoint(self, number: int) -> None:
        """Remove breakpoint ``number``."""
        bp = self._breakpoint(number)
        if self.stopped:
            for addr in bp.armed():
                self._remove(addr)
        del self.breakpoints[number]

    def set_enabled(self, number: int, enabled: bool, location: int | None = None) -> None:
        """Enable or disable breakpoint ``number`` or only its location ``location`` (1-based)."""
        bp = self._breakpoint(number)
        if location is not None and not 1 <= location <= len(bp.locations):
            raise UsageError(f"breakpoint {number} has no location {location} "
                             f"(it has {len(bp.locations)})")
        before = set(bp.armed())
        if location is None:
            bp.enabled = enabled
        else:
            bp.locations[location - 1].enabled = enabled
        if self.stopped:
            after = set(bp.armed())
            for addr in after - before:
                self._insert(addr)
            for addr in before - after:
                self._remove(addr)

    def _breakpoint(self, number: int) -> Breakpoint:
        if number not in self.breakpoints:
            raise UsageError(f"no breakpoint number {number}")
        return self.breakpoints[number]

    def _insert(self, addr: int) -> None:
        if self._inserted.get(addr, 0) == 0:
            self.target.set_breakpoint(addr)
        self._inserted[addr] = self._inserted.get(addr, 0) + 1

    def _remove(self, addr: int) -> None:
        count = self._inserted.get(addr, 0)
        if count == 1:
            self.target.clear_breakpoint(addr)
            del self._inserted[addr]
        elif count > 1:
            self._inserted[addr] = count - 1

    def _enabled_addrs(self) -> list[int]:
        return [addr for bp in self.breakpoints.values() for addr in bp.armed()]

    # -- run and continue ----------------------------------------------
    def run(self) -> Event:
        """Start the program (BPF_PROG_TEST_RUN) and wait for a stop or its end."""
        if self.running_program:
            raise UsageError("the program is already running; use 'continue' or 'kill'")
        if not self.stopped:
            self.target.interrupt()
            self.stopped = True
        self._regs_cache = None
        self._clear_inserted()
        for addr in [*self._enabled_addrs(), *self.kernel_breakpoints]:
            self._insert(addr)
        self._run_seq = self.runner.start_run(self.prog, self.request)
        return self._resume_and_wait()

    def cont(self) -> Event:
        """Continue the stopped run until the next stop or the program's exit."""
        self._require_running()
        return self._resume_and_wait()

    def _require_running(self) -> None:
        if not self.running_program or not self.stopped:
            raise UsageError("the program is not being run (use 'run')")

    def _resume_and_wait(self, temp: tuple[int, ...] = ()) -> Event:
        for addr in temp:
            self._insert(addr)
        try:
            while True:
                self._regs_cache = None
                self._virtual = False
                self.target.resume()
                self.stopped = False
                event = self._wait()
                if not self._filtered_out(event) and not self._path_not_taken(event, temp):
                    return event
        except (KeyboardInterrupt, interrupts.Terminated):
            self._stop_after_interrupt()
            raise
        finally:
            if self.stopped:
                for addr in temp:
                    self._remove(addr)
            # Otherwise they stay in the target until the next stop or run clears them.

    @interrupts.deferred()
    def _stop_after_interrupt(self) -> None:
        """Ctrl-C while the target ran: stop it, so the state is a consistent stop."""
        if not self.stopped:
            stop = self.target.interrupt()
            self.stopped = True
            self._regs_cache = None
            self.last_event = Event("stopped", "interrupt", self.prog.site_at(stop.pc))

    @interrupts.deferred()
    def settle(self) -> None:
        """After an interrupt: bring the CPU to the start of a BPF instruction.

        A Ctrl-C lands between two x86 instructions of one BPF instruction or in the
        kernel (a helper, an interrupt handler): neither is a BPF state to show. Inside
        the program, single steps finish the instruction; elsewhere the program runs
        to the first instruction start it reaches (a temporary breakpoint on each).
        ``last_event`` says where it stopped, or that the program ended meanwhile.
        """
        if not self.running_program or not self.stopped or self._virtual:
            return
        for _ in range(MAX_X86_STEPS):
            pc = self.pc()
            if pc in self._boundaries:
                self._stepped("interrupt")
                return
            if not self._in_program(pc):
                break
            self._single_step(pc)
        self._run_to_boundary()

    def _run_to_boundary(self) -> None:
        addrs = sorted(self._boundaries)
        for addr in addrs:
            self._insert(addr)
        try:
            self._regs_cache = None
            self.target.resume()
            self.stopped = False
            event = self._wait(SETTLE_TIMEOUT)
            if event is None:  # still in the kernel: stop where it is
                self.target.interrupt()
                self.stopped = True
        finally:
            if self.stopped:
                for addr in addrs:
                    self._remove(addr)
        if event is None or event.kind == "stopped":
            self._stepped("interrupt")

    @overload
    def _wait(self) -> Event: ...
    @overload
    def _wait(self, timeout: float) -> Event | None: ...

    def _wait(self, timeout: float | None = None) -> Event | None:
        """The next stop or the program's end (None after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None and time.monotonic() > deadline:
                return None
            # A stop returns at once; the agent's reply (the run ended) is seen within POLL.
            stop = self.target.wait(POLL)
            if stop is not None:
                self.stopped = True
                self.vm_stops += 1
                return self._stop_event(stop)
            if self._run_seq is None:
                continue  # nothing runs: only a stop (e.g. an interrupt) can end the wait
            result = self._poll_run()
            if result is not None:
                return self._exit_event(result)

    def _filtered_out(self, event: Event) -> bool:
        """A breakpoint stop the ``breakpoint_filter`` does not want reported."""
        if self.breakpoint_filter is None or event.breakpoint is None:
            return False
        here = [bp for bp in self.breakpoints.values() if bp.enabled and bp.addr == self.pc()]
        return not self.breakpoint_filter(here)

    def _path_not_taken(self, event: Event, temp: tuple[int, ...]) -> bool:
        """A stop only at locations whose path (``BpLocation.path``) is not taken here."""
        if (event.kind != "stopped" or event.breakpoint is not None or event.reason != "breakpoint"
                or event.watch_addr is not None or self.pc() in temp):
            return False
        return any(loc.path is not None and loc.enabled and loc.addr == self.pc()
                   for bp in self.breakpoints.values() if bp.enabled for loc in bp.locations)

    def _poll_run(self) -> RunResult | None:
        assert self._run_seq is not None
        try:
            return self.runner.poll_run(self._run_seq, 0.0)
        except Exception:
            self._run_seq = None
            raise

    def _exit_event(self, result: RunResult) -> Event:
        self._run_seq = None
        # The VM keeps running (idle); breakpoints stay inserted for the next run.
        event = Event("exited", "exited", retval=result.retval,
                      duration_ns=result.duration_ns, data_out=result.data_out,
                      ctx_out=result.ctx_out,
                      output=result.output)
        self.last_event = event
        return event

    def _stop_event(self, stop: Stop) -> Event:
        site = self.prog.site_at(stop.pc)
        user = [(bp, n) for bp in self.breakpoints.values() if bp.enabled
                for n, loc in enumerate(bp.locations, start=1)
                if loc.enabled and loc.addr == stop.pc
                and (loc.path is None or loc.path.holds(self.regs().values))]
        for bp, n in user:
            bp.hits += 1
            bp.locations[n - 1].hits += 1
        for bp, _ in user:
            if bp.temporary:
                self.delete_breakpoint(bp.number)
        reason = "breakpoint" if user else stop.reason
        if not user and stop.pc in self.kernel_breakpoints:
            reason = "kernel"
        event = Event("stopped", reason, site, user[0][0] if user else None,
                      watch_addr=stop.watch_addr, location=user[0][1] if user else None)
        self.last_event = event
        return event

    # -- stepping ------------------------------------------------------
    def _decode(self, pc: int) -> _X86:
        cached = self._decoded.get(pc)
        if cached is None:
            cached = self._decoded[pc] = self._decode_uncached(pc)
        return cached

    def _decode_uncached(self, pc: int) -> _X86:
        code = self.prog.jit_bytes(pc, pc + 16)
        if len(code) < 16:
            code = self.target.read_memory(pc, 16)
        ins = next(_CS.disasm(code, pc, 1), None)
        if ins is None:
            raise GuestError(f"cannot decode the x86 instruction at {pc:#x}")
        target = None
        if ins.mnemonic == "call" and ins.op_str.startswith("0x"):
            target = int(ins.op_str, 16)
        return _X86(ins.mnemonic, ins.size, target)

    def _in_program(self, addr: int) -> bool:
        return any(f.contains(addr) for f in self.prog.functions)

    def _x86_step(self, x86: X86Regs, over_bpf_calls: bool) -> Event | None:
        """One x86 instruction; calls out of the program (and bpf calls if asked) run through."""
        ins = self._decode(x86.rip)
        if ins.mnemonic == "call" and (ins.target is None or not self._in_program(ins.target)
                                       or over_bpf_calls):
            return self._run_to(x86.rip + ins.size, min_rsp=x86.rsp)
        if ins.mnemonic == "ret":
            ret = int.from_bytes(self.target.read_memory(x86.rsp, 8), "little")
            if not self._in_program(ret):
                return self._resume_and_wait()  # the program returns to the kernel
        self._single_step(x86.rip)
        return None

    def _single_step(self, rip: int) -> None:
        """Step one x86 instruction, repeating a step that did not execute one.

        QEMU (7.2, TCG) sometimes ends a single-step with the CPU still at the
        same pc, apparently when the I/O thread kicks the vCPU; the JIT never
        emits an instruction that jumps to itself, so an unchanged pc means
        nothing ran.
        """
        for _ in range(100):
            self._regs_cache = None
            self.x86_steps += 1
            self.target.step()
            if self.x86().rip != rip:
                return
        raise GuestError(f"single-stepping makes no progress at {rip:#x}")

    def _run_to(self, addr: int, min_rsp: int) -> Event | None:
        """Continue to ``addr`` in this frame; an event if something else stopped us."""
        while True:
            event = self._resume_and_wait((addr,))
            if event.kind == "exited" or event.breakpoint is not None:
                return event
            x86 = self.x86()
            if x86.rip == addr and x86.rsp >= min_rsp:
                return None

    def stop_before(self, regs: X86Regs) -> Event:
        """Stop before the program instruction at ``regs.rip`` while the CPU is elsewhere.

        For a guest exception handler (an in-guest probe's) that interrupted the
        program there: ``regs`` are the program's registers it saved. Registers,
        frames and memory read as before that instruction (it has not run). The CPU
        cannot be stopped at that address itself (QEMU raises the guest's hardware
        breakpoint there on any debug stop), so the next command leaves the handler:
        ``stepi`` runs to the instruction's successors, the others resume as usual.
        """
        self._require_running()
        self._regs_cache, self._virtual = regs, True
        return self._stepped("location")

    def _leave_virtual(self, over_calls: bool) -> Event:
        site = self.site()
        assert site is not None
        addrs = self._successors(site, over_calls)
        event = self._resume_and_wait(tuple(addrs))
        if event.kind == "stopped" and event.breakpoint is None and self.pc() in addrs:
            return self.stepi(over_calls) if self.pc() not in self._boundaries else (
                self._stepped("step"))
        return event

    def _successors(self, site: InsnSite, over_calls: bool) -> list[int]:
        """Where the CPU can be next after ``site``: boundaries, or a return address."""
        insn = site.insn
        if insn.is_exit:
            frames = self.frames()
            ret = frames[0].return_addr if frames else None
            return [ret] if ret is not None and self._in_program(ret) else []
        after = self.prog.sites.get(insn.index + insn.size)
        targets = [after if falls_through(insn) else None,
                   self.prog.sites.get(insn.jump_target) if insn.jump_target is not None
                   else None]
        addrs = [t.jit_start for t in targets if t is not None and t.jit_start is not None]
        callee = next((f for f in self.prog.functions if f.start_insn == insn.call_target),
                      None)
        if callee is not None and not over_calls:
            addrs.append(callee.addr)
        return addrs

    def stepi(self, over_calls: bool = False) -> Event:
        """Run exactly one BPF instruction (``nexti`` with ``over_calls``)."""
        self._require_running()
        if self._virtual:
            return self._leave_virtual(over_calls)
        start = self.site()
        for _ in range(MAX_X86_STEPS):
            event = self._x86_step(self.x86(), over_calls)
            if event is not None:
                return event
            pc = self.x86().rip
            if pc in self._boundaries:
                return self._stepped("step")
            if not self._in_program(pc) and start is not None and is_tail_call(start):
                raise tail_called(start)
            if not self._in_program(pc):
                raise GuestError(f"stepping left the program at {pc:#x} (not a helper call "
                                 "or return); this is a qstep bug")
        raise GuestError(f"no BPF instruction boundary within {MAX_X86_STEPS} x86 steps")

    def _stepped(self, reason: str) -> Event:
        event = Event("stopped", reason, self.prog.site_at(self.x86().rip))
        self.last_event = event
        return event

    def step_line(self, over_calls: bool) -> Event:
        """``step`` (into bpf calls) or ``next`` (over them): until the source line changes."""
        start = self.site()
        if start is None:
            return self.stepi(over_calls)
        start_key = _line_key(start)
        depth = len(self.frames())
        while True:
            event = self.stepi(over_calls)
            if event.kind == "exited" or event.reason == "breakpoint" or event.site is None:
                return event
            site = event.site
            if over_calls and len(self.frames()) > depth:
                continue
            if site.function != start.function or _line_key(site) != start_key:
                return event

    def finish(self) -> Event:
        """Run until the current function returns to its caller."""
        frames = self.frames()
        if not frames or frames[0].return_addr is None:
            return self.cont()
        event = self._run_to(frames[0].return_addr, min_rsp=frames[0].cfa)
        if event is not None:
            return event
        pc = self.x86().rip
        if pc not in self._boundaries:
            return self.stepi()
        return self._stepped("finish")

    def advance(self, location: str, stop_at_return: bool = False) -> Event:
        """``advance LOC`` / ``until LOC``: continue to a location (or the frame's return)."""
        self._require_running()
        resolved = resolve(self.prog, location, self._current_file())
        temp = [s.jit_start for s in resolved.sites if s.jit_start is not None]
        paths = {s.jit_start: resolved.paths[s.index] for s in resolved.sites
                 if s.index in resolved.paths}
        frames = self.frames()
        if stop_at_return and frames and frames[0].return_addr is not None:
            temp.append(frames[0].return_addr)
        event = self._resume_and_wait(tuple(temp))
        while (event.kind == "stopped" and event.breakpoint is None and self.pc() in paths
               and not paths[self.pc()].holds(self.regs().values)):
            event = self._resume_and_wait(tuple(temp))  # a merged line's path not taken
        if event.kind == "stopped" and event.breakpoint is None:
            event.reason = "location"
        return event

    def _clear_inserted(self) -> None:
        for addr in list(self._inserted):
            self.target.clear_breakpoint(addr)
        self._inserted.clear()
        for watch in list(self.watchpoints):
            self.target.clear_watchpoint(*watch)
        self.watchpoints.clear()

    def set_watchpoint(self, addr: int, length: int, kind: str) -> None:
        """A data watchpoint for the rest of this run (``kind``: write, read, access)."""
        self._require_stopped()
        if (addr, length, kind) not in self.watchpoints:
            self.target.set_watchpoint(addr, length, kind)
            self.watchpoints.add((addr, length, kind))

    def clear_watchpoint(self, addr: int, length: int, kind: str) -> None:
        """Remove a data watchpoint set by ``set_watchpoint``."""
        self._require_stopped()
        if (addr, length, kind) in self.watchpoints:
            self.target.clear_watchpoint(addr, length, kind)
            self.watchpoints.discard((addr, length, kind))

    def run_to_address(self, addr: int) -> Event:
        """Continue until ``addr`` (any address) or another stop; the breakpoint is temporary."""
        self._require_running()
        event = self._resume_and_wait((addr,))
        if event.kind == "stopped" and event.breakpoint is None and self.pc() == addr:
            event.reason, event.site = "location", self.prog.site_at(addr)
        return event

    def accessing_site(self) -> InsnSite | None:
        """After a watchpoint stop: the instruction that made the access.

        The CPU stops after the accessing x86 instruction, whose last byte is
        therefore just below the pc.
        """
        return self.prog.site_at(self.pc() - 1)

    def kill(self) -> Event | None:
        """Let the current run finish with every breakpoint removed."""
        if not self.running_program:
            return None
        if not self.stopped:
            self.target.interrupt()
            self.stopped = True
        self._clear_inserted()
        return self._resume_and_wait()

    def detach(self) -> None:
        """Leave the guest running with no breakpoints of ours (for shutdown or reuse)."""
        if self.running_program:
            self.kill()
        if not self._inserted and not self.watchpoints and not self.stopped:
            return
        if not self.stopped:
            self.target.interrupt()
        self._clear_inserted()
        self._regs_cache = None
        self._virtual = False
        self.target.resume()
        self.stopped = False


def _line_key(site: InsnSite) -> tuple[str, int] | None:
    return (site.source.file, site.source.line) if site.source else None
