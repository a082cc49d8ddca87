"""Run a real JIT-compiled program in lockstep with BPF semantics (``qstep verify-jit``).

For every BPF instruction of a real run the reference interpreter computes, from the
registers before it, the state after it: it executes the xlated instructions the kernel
really JIT-compiled for that instruction, reads memory from the stopped guest, takes
``ld_imm64`` constants from the JIT's own x86 code, and leaves helper results unknown.
The debugger then steps the real program, and its registers, memory writes and next
instruction must agree. The first disagreement localises a JIT miscompile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import capstone

from qstep.bpf.insn import Insn
from qstep.debugger.engine import Debugger
from qstep.debugger.tailcall import TailCalled
from qstep.listing import xlated_span
from qstep.loaded import InsnSite, LoadedProgram
from qstep.oracle.interp import MemWrite, OracleError, step

M64 = (1 << 64) - 1
MemReader = Callable[[int, int], bytes]
RegsReader = Callable[[], tuple[int, ...]]


@dataclass
class Expected:
    """What BPF semantics say one instruction does."""

    regs: list[int]
    unknown: set[int]
    writes: list[MemWrite] = field(default_factory=list)
    next_insn: int | None = None
    call_target: int | None = None
    exits: bool = False
    returned: bool = False  # an inlined helper's callback returned (its frame ends here)


@dataclass
class _Resume:
    """Where an inlined helper (bpf_loop) goes on after its callback returns."""

    site: InsnSite  # the helper call, whose xlated span holds the loop
    pc: int  # the xlated instruction after the callback call
    regs: list[int]  # registers at the call
    depth: int  # call depth inside the callback
    callee: int  # the callback's first instruction


@dataclass(frozen=True)
class Divergence:
    """The first instruction where the JIT's result differs from BPF semantics."""

    step: int
    site: InsnSite
    what: str
    regs_before: tuple[int, ...]
    regs_after: tuple[int, ...]
    expected: tuple[int, ...]
    unknown: frozenset[int]


@dataclass
class LockstepReport:
    """How many instructions agreed, and the divergence that ended the run (if any)."""

    checked: int = 0
    divergence: Divergence | None = None
    retval: int | None = None
    unsupported: str | None = None  # why the check stopped before the end (no divergence)


def imm_loads(prog: LoadedProgram, site: InsnSite) -> Iterator[int]:
    """Immediate values the JIT loads into registers in this instruction's x86 code."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    code = prog.jit_bytes(site.jit_start or 0, site.jit_end or 0)
    for ins in md.disasm(code, site.jit_start or 0):
        ops = ins.operands
        if (ins.mnemonic in ("mov", "movabs") and len(ops) == 2
                and ops[1].type == capstone.x86.X86_OP_IMM
                and ops[0].type == capstone.x86.X86_OP_REG):
            yield ops[1].imm & (M64 if ops[0].size == 8 else 0xFFFFFFFF)


class Oracle:
    """Runs the xlated span of one original instruction from a given state."""

    def __init__(self, prog: LoadedProgram, read: MemReader,
                 percpu_offset: Callable[[], int] | None = None) -> None:
        self.prog = prog
        self.read_guest = read
        self.percpu_offset = percpu_offset
        self.orig_of_xlated = {s.xlated_index: i for i, s in prog.sites.items()
                               if s.xlated_index is not None}
        self._depth = 0  # bpf-to-bpf and callback calls, along the run (one expect per step)
        self._resumes: list[_Resume] = []

    def expect(self, site: InsnSite, regs: Sequence[int]) -> Expected:
        """BPF semantics of ``site`` from registers ``regs`` before it (called for every
        executed instruction in order: it follows calls and inlined helpers' callbacks)."""
        if site.insn.is_exit and self._resumes and self._resumes[-1].depth == self._depth:
            self._depth -= 1
            exp = self._resume(self._resumes.pop(), regs)
        else:
            exp = self._span(site, regs)
            if exp.exits and self._depth:
                self._depth -= 1
        if exp.call_target is not None:
            self._depth += 1
        if site.index == site.function.start_insn and exp.regs[0] == regs[0]:
            # r0 is no input of a function: its prologue may set it (6.1 zeroes the tail
            # call count in eax), so unless the first instruction writes it, it is unknown.
            exp.unknown.add(0)
        return exp

    def _span(self, site: InsnSite, regs: Sequence[int]) -> Expected:
        span = xlated_span(self.prog, site)
        by_index = {x.index: x for x in span}
        # Verifier patches may use BPF_REG_AX (r11 in 6.x, r12 in 7.2+; x86 r10 in the
        # JIT) as a scratch register inside the span; it is written before it is read.
        exp = Expected([*regs, 0, 0], set())
        return self._run(site, by_index, span[0].index, exp,
                         lambda: self._function_at(regs[2], site))

    def _resume(self, at: _Resume, regs: Sequence[int]) -> Expected:
        """After a callback's exit (``regs`` before it): the rest of the inlined helper,
        with the callback's r0-r5 and the caller's r6-r10 (its epilogue restores them)."""
        by_index = {x.index: x for x in xlated_span(self.prog, at.site)}
        exp = Expected([*regs[:6], *at.regs[6:]], set(), returned=True)
        exp = self._run(at.site, by_index, at.pc, exp, lambda: at.callee)
        if exp.call_target is None:
            exp.unknown |= {1, 2, 3, 4, 5}  # a helper call's argument registers
        return exp

    def _run(self, site: InsnSite, by_index: dict[int, Insn], pc: int, exp: Expected,
             callback: Callable[[], int]) -> Expected:
        """Execute xlated code from ``pc`` until it leaves ``site``'s span, calls or exits
        (``callback``: the function an inlined helper calls, for a call in the span)."""
        overlay: dict[int, int] = {}
        imms = iter(imm_loads(self.prog, site))

        def read(addr: int, size: int) -> bytes:
            data = bytearray(self.read_guest(addr, size))
            for i in range(size):
                if addr + i in overlay:
                    data[i] = overlay[addr + i]
            return bytes(data)

        def ldimm64(_insn: Insn) -> int:
            return next(imms)

        while pc in by_index:
            eff = step(by_index[pc], exp.regs, read, ldimm64, self.percpu_offset)
            exp.regs = list(eff.regs)
            exp.unknown |= set(eff.unknown)
            for w in eff.writes:
                exp.writes.append(w)
                overlay.update({w.addr + i: b for i, b in enumerate(w.value)})
            if eff.kind == "call_bpf" and not site.insn.is_pseudo_call:
                # bpf_loop inlined: a loop calling the callback, whose address the
                # program passed in r2 (the original call's argument)
                callee = callback()
                self._resumes.append(_Resume(site, pc + by_index[pc].size, list(exp.regs),
                                             self._depth + 1, callee))
                exp.call_target = callee
                return exp
            if eff.kind == "call_bpf":
                # The kernel rewrites a JIT-ed pseudo call's imm (6.1: the subprogram
                # number), so the target comes from the original relative offset.
                exp.call_target = site.insn.call_target
                return exp
            if eff.kind == "exit":
                exp.exits = True
                return exp
            assert eff.next_pc is not None
            pc = eff.next_pc
            if pc not in by_index and self._codeless(pc):
                # no x86 code (7.x: a no-op kfunc patched into 'goto pc+0'): the CPU
                # never stops there, so its xlated code runs as part of this step
                by_index.update({x.index: x for x in xlated_span(
                    self.prog, self.prog.sites[self.orig_of_xlated[pc]])})
        exp.next_insn = self.orig_of_xlated[pc]
        return exp

    def _function_at(self, addr: int, site: InsnSite) -> int:
        """The first instruction of the function whose JIT code starts at ``addr``."""
        func = next((f for f in self.prog.functions if f.addr == addr), None)
        if func is None:
            raise OracleError(f"insn {site.index}: a helper the verifier inlined calls back "
                              f"into the program, but r2 ({addr:#x}) is no function's start")
        return func.start_insn

    def _codeless(self, xlated: int) -> bool:
        """Whether the original instruction starting at this xlated one has no JIT code."""
        orig = self.orig_of_xlated.get(xlated)
        site = self.prog.sites.get(orig) if orig is not None else None
        return (site is not None and site.jit_start is not None
                and site.jit_start == site.jit_end)


def lockstep(dbg: Debugger, read_regs: RegsReader | None = None) -> LockstepReport:
    """Step the whole run from the entry, checking each instruction; stop at the first
    divergence. ``read_regs`` replaces the debugger's register read (tests inject
    faults through it)."""
    regs_of: RegsReader = read_regs or (lambda: dbg.regs().values)
    prog = dbg.prog
    oracle = Oracle(prog, dbg.read_memory, dbg.percpu_offset)
    dbg.add_breakpoint(f"#{prog.functions[0].start_insn}", temporary=True)
    event = dbg.run()
    frames: list[tuple[int, ...]] = []  # caller registers at each bpf-to-bpf call
    report = LockstepReport()
    while event.kind == "stopped" and event.site is not None:
        site, before = event.site, regs_of()
        exp = oracle.expect(site, before)
        try:
            event = dbg.stepi()
        except TailCalled:
            report.unsupported = tail_call_end(report.checked + 1, site)
            dbg.cont()
            return report
        if exp.exits and not frames:
            report.retval = event.retval
            if event.kind != "exited" or event.retval != exp.regs[0] & 0xFFFFFFFF:
                report.divergence = Divergence(report.checked + 1, site, (
                    f"the program returned {event.retval}, BPF semantics give "
                    f"{exp.regs[0] & 0xFFFFFFFF}"), before, (), tuple(exp.regs[:11]),
                    frozenset())
            else:
                report.checked += 1
            return report
        if event.kind != "stopped" or event.site is None:
            report.divergence = Divergence(report.checked + 1, site,
                                           f"the run ended ({event.kind}) mid-program",
                                           before, (), tuple(exp.regs[:11]), frozenset())
            return report
        found = compare_step(dbg.read_memory, exp, frames, before, regs_of(),
                             event.site.index)
        if found is not None:
            what, after, unknown = found
            report.divergence = Divergence(report.checked + 1, site, what, before, after,
                                           tuple(exp.regs[:11]), frozenset(unknown))
            return report
        report.checked += 1
    return report


def tail_call_end(step: int, site: InsnSite) -> str:
    """Why a check ends at a tail call."""
    return (f"step {step}, insn {site.index}: the program tail-called another program, "
            "which qstep does not follow")


def compare_step(read_after: MemReader, exp: Expected, frames: list[tuple[int, ...]],
                 before: tuple[int, ...], after: tuple[int, ...], next_insn: int
                 ) -> tuple[str, tuple[int, ...], set[int]] | None:
    """What disagrees after one instruction, or None (``read_after``: memory after it;
    ``frames``: caller registers at each bpf-to-bpf call, kept up to date)."""
    want_next: int | None
    if exp.returned:  # an inlined helper's callback returned into it
        frames.pop()
    if exp.call_target is not None:
        frames.append(before)
        unknown, want_next = {10} | exp.unknown, exp.call_target
    elif exp.exits:
        caller = frames.pop()
        exp.regs = [exp.regs[0], *caller[1:]]
        unknown, want_next = {1, 2, 3, 4, 5}, next_insn
    else:
        unknown, want_next = exp.unknown, exp.next_insn
    if next_insn != want_next:
        return (f"execution continued at insn {next_insn}, BPF semantics give insn "
                f"{want_next}", after, unknown)
    for n in range(11):
        if n not in unknown and after[n] != exp.regs[n]:
            return (f"r{n} is {after[n]:#x}, BPF semantics give {exp.regs[n]:#x}", after,
                    unknown)
    for w in exp.writes:
        got = read_after(w.addr, w.size)
        if got != w.value:
            return (f"memory at {w.addr:#x} holds {got.hex()}, BPF semantics wrote "
                    f"{w.value.hex()}", after, unknown)
    return None
