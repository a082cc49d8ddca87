"""Label-resolving BPF assembler for generated probes, on top of `qstep.bpf.asm`.

`Builder` collects instructions, forward/backward jumps to `Label`s and label
placements; `finish()` drops unreachable instructions (the verifier rejects them),
lays out the rest and fills in the jump offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

from qstep.bpf import insn as bi
from qstep.bpf.asm import alu64, assemble, jmp, ldimm64, raw
from qstep.bpf.insn import Insn
from qstep.errors import UsageError

JA, JEQ, JGT, JGE, JNE, JLT, JLE = 0x00, 0x10, 0x20, 0x30, 0x50, 0xA0, 0xB0
_IMM32 = range(-(1 << 31), 1 << 31)


class Label:
    """A jump target; placed once with `Builder.place`."""


@dataclass(frozen=True)
class _Jump:
    label: Label
    op: int
    dst: int
    src: int | None
    imm: int


def fits_imm(value: int) -> bool:
    """True if `value` (a u64) equals its own sign-extended low 32 bits."""
    value &= (1 << 64) - 1
    return value < 1 << 31 or value >= (1 << 64) - (1 << 31)


def signed_imm(value: int) -> int:
    """The 32-bit immediate whose sign extension is `value` (see `fits_imm`)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def load_const(dst: int, value: int) -> Insn:
    """dst = u64 constant (mov when it fits a sign-extended imm32, else ld_imm64)."""
    if fits_imm(value):
        return alu64(0xB0, dst, imm=signed_imm(value))
    return ldimm64(dst, value)


def be64(dst: int) -> Insn:
    """dst = be64 dst (a byte swap on little-endian machines)."""
    return raw(bi.ALU | bi.ALU_END | bi.BPF_X, dst, imm=64)


class Builder:
    """Instruction list with symbolic jump targets."""

    def __init__(self) -> None:
        self.items: list[Insn | _Jump | Label] = []
        self.placed: set[int] = set()

    def emit(self, *insns: Insn) -> None:
        """Append instructions."""
        self.items.extend(insns)

    def jump(self, label: Label, op: int = JA, dst: int = 0, src: int | None = None,
             imm: int = 0) -> None:
        """Append `if dst OP src/imm goto label` (unconditional for JA)."""
        if src is None and imm not in _IMM32:
            raise ValueError(f"jump immediate {imm} does not fit 32 bits")
        self.items.append(_Jump(label, op, dst, src, imm))

    def place(self, label: Label) -> None:
        """Make `label` refer to the next instruction."""
        if id(label) in self.placed:
            raise ValueError("label placed twice")
        self.placed.add(id(label))
        self.items.append(label)

    def finish(self) -> list[Insn]:
        """Resolve jumps; return the reachable instructions with slot indexes from 0."""
        items = self.reachable()
        where: dict[int, int] = {}
        slot = 0
        for item in items:
            if isinstance(item, Label):
                where[id(item)] = slot
            else:
                slot += item.size if isinstance(item, Insn) else 1
        out: list[Insn] = []
        slot = 0
        for item in items:
            if isinstance(item, Label):
                continue
            if isinstance(item, _Jump):
                item = _resolve(item, where, slot)
            out.append(item)
            slot += item.size
        return assemble(out)

    def reachable(self) -> list[Insn | _Jump | Label]:
        """Items reachable from the first one (labels are always kept)."""
        at = {id(item): i for i, item in enumerate(self.items) if isinstance(item, Label)}
        seen: set[int] = set()
        todo = [0]
        while todo:
            i = todo.pop()
            if i in seen or i >= len(self.items):
                continue
            seen.add(i)
            item = self.items[i]
            if isinstance(item, _Jump):
                todo.append(at.get(id(item.label), len(self.items)))
                if item.op == JA:
                    continue
            elif isinstance(item, Insn) and item.is_exit:
                continue
            todo.append(i + 1)
        return [item for i, item in enumerate(self.items)
                if i in seen or isinstance(item, Label)]


def _resolve(jump: _Jump, where: dict[int, int], slot: int) -> Insn:
    if id(jump.label) not in where:
        raise ValueError("jump to a label that was never placed")
    off = where[id(jump.label)] - (slot + 1)
    if not -(1 << 15) <= off < 1 << 15:
        raise UsageError("probe program too large (jump offset out of range)")
    return jmp(jump.op, jump.dst, jump.src, jump.imm, off)
