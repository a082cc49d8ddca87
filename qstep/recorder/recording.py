"""A recorded run as BPF instructions: registers before each, and its memory accesses.

The plugin logs a boundary record (x86 registers before the instruction) each time
execution reaches the first JIT byte of a BPF instruction, and every load and store
of in-range x86 instructions. Accesses between two boundaries belong to the
earlier instruction. Frame mechanics of the JIT (push, pop, call, ret, leave: the
return address, saved registers) are not BPF memory accesses and are set apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import capstone

from qstep.debugger.regs import BPF_TO_X86, MASK64, BpfRegs
from qstep.errors import GuestError
from qstep.loaded import InsnSite, LoadedProgram
from qstep.recorder.log import Boundary, LogRecord, MemAccess

FRAME_MNEMONICS = frozenset({"push", "pop", "call", "ret", "leave"})
_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


@dataclass
class RecordedStep:
    """One executed BPF instruction."""

    site: InsnSite
    x86: dict[str, int]  # registers before it
    accesses: list[MemAccess] = field(default_factory=list)  # BPF loads and stores
    frame_accesses: list[MemAccess] = field(default_factory=list)  # the JIT's own

    def regs(self) -> BpfRegs:
        """BPF registers before this instruction (r10 = rsp - 8 at a function's entry)."""
        values = [self.x86[name] & MASK64 for name in BPF_TO_X86]
        if self.x86_pc_is_entry:
            values[10] = (self.x86["rsp"] - 8) & MASK64
        return BpfRegs(tuple(values))

    @property
    def x86_pc_is_entry(self) -> bool:
        return self.site.jit_start == self.site.function.addr


@dataclass
class Recording:
    """Every BPF instruction one run executed, in order, and the run's result."""

    prog: LoadedProgram
    steps: list[RecordedStep]
    retval: int

    @property
    def exited(self) -> bool:
        """True when the last instruction is the main function's exit."""
        if not self.steps:
            return False
        last = self.steps[-1].site
        return last.insn.is_exit and last.function == self.prog.functions[0]


def build_recording(prog: LoadedProgram, records: list[LogRecord], retval: int) -> Recording:
    """Group log records into BPF instructions."""
    steps: list[RecordedStep] = []
    frame_pcs: dict[int, bool] = {}
    for rec in records:
        if isinstance(rec, Boundary):
            site = prog.site_at(rec.pc)
            if site is None or site.jit_start != rec.pc:
                raise GuestError(f"recorder: {rec.pc:#x} is not a BPF instruction boundary")
            steps.append(RecordedStep(site, rec.regs))
        elif steps:
            if rec.pc not in frame_pcs:
                frame_pcs[rec.pc] = _is_frame_insn(prog, rec.pc)
            step = steps[-1]
            (step.frame_accesses if frame_pcs[rec.pc] else step.accesses).append(rec)
    return Recording(prog, steps, retval)


def _is_frame_insn(prog: LoadedProgram, pc: int) -> bool:
    code = prog.jit_bytes(pc, pc + 16)
    for ins in _CS.disasm(code, pc, 1):
        return ins.mnemonic in FRAME_MNEMONICS
    return False
