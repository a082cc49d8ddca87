"""A small whole-program BPF interpreter built on `step`, for testing the oracle itself.

Memory is one flat sparse address space. Each bpf-to-bpf call gets its own
512-byte stack frame (r10 = top of frame); r6-r9 and r10 are restored on return
and r1-r5 hold `POISON` after calls, since the calling convention clobbers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qstep.bpf.insn import Insn
from qstep.oracle.interp import (
    CALL_CLOBBERED,
    M64,
    NREGS,
    Effect,
    LdImm64Value,
    OracleError,
    step,
)

STACK_SIZE = 512
STACK_TOP = 0x7F00_0000
MAX_FRAMES = 8
POISON = 0xDEAD_BEEF_DEAD_BEEF


class FlatMemory:
    """Sparse byte-addressable memory; reading a byte never written raises `OracleError`."""

    def __init__(self) -> None:
        self.bytes: dict[int, int] = {}

    def write(self, addr: int, data: bytes) -> None:
        """Store `data` at `addr`."""
        for i, b in enumerate(data):
            self.bytes[(addr + i) & M64] = b

    def read(self, addr: int, size: int) -> bytes:
        """Return `size` bytes at `addr`."""
        try:
            return bytes(self.bytes[(addr + i) & M64] for i in range(size))
        except KeyError as exc:
            raise OracleError(f"read of {size} bytes at {addr:#x}: byte {exc.args[0]:#x} "
                              "was never written") from None


Helper = Callable[[list[int], FlatMemory], int]


@dataclass
class _Frame:
    return_pc: int
    saved: list[int]  # r6..r10 of the caller


@dataclass
class _Machine:
    code: dict[int, Insn]
    memory: FlatMemory
    helpers: dict[int, Helper]
    ldimm64_value: LdImm64Value | None
    regs: list[int]
    frames: list[_Frame] = field(default_factory=list)

    def call_helper(self, insn: Insn) -> None:
        fn = self.helpers.get(insn.imm)
        if fn is None:
            raise OracleError(f"insn {insn.index}: no helper #{insn.imm} given")
        result = fn(list(self.regs), self.memory)
        for r in CALL_CLOBBERED:
            self.regs[r] = POISON
        self.regs[0] = result & M64

    def call_bpf(self, insn: Insn, target: int) -> int:
        if len(self.frames) + 1 >= MAX_FRAMES:
            raise OracleError(f"insn {insn.index}: call depth exceeds {MAX_FRAMES} frames")
        self.frames.append(_Frame(insn.index + 1, self.regs[6:11]))
        self.regs[10] = (self.regs[10] - STACK_SIZE) & M64
        return target

    def ret(self) -> int:
        frame = self.frames.pop()
        self.regs[6:11] = frame.saved
        for r in range(1, 6):
            self.regs[r] = POISON
        return frame.return_pc

    def advance(self, insn: Insn, eff: Effect) -> int | None:
        """Apply `eff`; return the next pc, or None when the program exits."""
        for w in eff.writes:
            self.memory.write(w.addr, w.value)
        self.regs = list(eff.regs)
        if eff.kind == "call_helper":
            self.call_helper(insn)
        elif eff.kind == "call_bpf" and eff.call_target is not None:
            return self.call_bpf(insn, eff.call_target)
        elif eff.kind == "exit":
            return self.ret() if self.frames else None
        return eff.next_pc


def run_program(insns: list[Insn], ctx_regs: dict[int, int], memory: FlatMemory,
                helpers: dict[int, Helper], max_steps: int = 100000,
                ldimm64_value: LdImm64Value | None = None) -> int:
    """Run from `insns[0]` until the outermost exit and return r0.

    `ctx_regs` gives initial registers (usually {1: ctx address}); the others are 0
    and r10 is the top of the first stack frame. `helpers` maps helper ids to
    functions of (registers, memory) returning r0.
    """
    regs = [0] * NREGS
    for r, v in ctx_regs.items():
        regs[r] = v & M64
    regs[10] = STACK_TOP
    m = _Machine({i.index: i for i in insns}, memory, helpers, ldimm64_value, regs)
    pc: int | None = insns[0].index
    for _ in range(max_steps):
        if pc is None:
            return m.regs[0]
        insn = m.code.get(pc)
        if insn is None:
            raise OracleError(f"pc {pc} is outside the program")
        pc = m.advance(insn, step(insn, m.regs, memory.read, ldimm64_value))
    if pc is None:
        return m.regs[0]
    raise OracleError(f"no exit after {max_steps} steps")
