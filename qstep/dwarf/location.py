"""DWARF location expressions of BPF variables and their evaluation on a stopped program.

BPF DWARF registers are the BPF registers (DW_OP_regN = rN; r10 is the frame
pointer and every function's frame base). Stack offsets from r10 (``DW_OP_fbreg``,
``DW_OP_breg10``) come in two conventions: clang-19 emits non-negative offsets
measured from ``r10 - StackSize`` (the address is ``r10 + off - StackSize``),
later LLVM (PR #204722) negative offsets from r10. A non-negative offset therefore
means the old convention; StackSize is the function's, from its code or its JIT
prologue (``qstep.dwarf.frame``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

MASK64 = (1 << 64) - 1
FRAME_REG = 10


class Unavailable(Exception):
    """A piece of a value DWARF cannot provide here; the message says why."""


class MachineState(Protocol):
    """What evaluating a location needs: registers, memory and the frame's stack size."""

    def reg(self, n: int) -> int: ...

    def mem(self, addr: int, size: int) -> bytes: ...

    def entry_reg(self, n: int) -> int | None:
        """rN at the entry of the current (non-inlined) function, when known."""
        ...

    @property
    def stack_size(self) -> int: ...


@dataclass(frozen=True)
class Op:
    """One DWARF operation: name without the ``DW_OP_`` prefix and its arguments."""

    name: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Piece:
    """Part of an object: ``size`` bytes (None: the whole object); no ops: optimized out."""

    size: int | None
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Location:
    """Where a variable's value is at one instruction."""

    pieces: tuple[Piece, ...]

    @property
    def optimized_out(self) -> bool:
        return all(not p.ops for p in self.pieces)

    def describe(self, stack_size: int | None = None) -> str:
        """Short text: ``r6``, ``[r10-16]``, ``=16``, ``{r9:4, ?:4}``."""
        if len(self.pieces) == 1 and self.pieces[0].size is None:
            return describe_ops(self.pieces[0].ops, stack_size)
        parts = [f"{describe_ops(p.ops, stack_size)}:{p.size}" for p in self.pieces]
        return "{" + ", ".join(parts) + "}"


def frame_offset(off: int, stack_size: int | None) -> int | None:
    """An r10-relative DWARF offset as a real offset from r10 (None: StackSize unknown)."""
    if off < 0:
        return off
    return None if stack_size is None else off - stack_size


def _signed_text(base: str, off: int) -> str:
    return base if off == 0 else f"{base}{off:+d}"


def describe_ops(ops: tuple[Op, ...], stack_size: int | None) -> str:
    if not ops:
        return "?"
    value = ops[-1].name == "stack_value"
    body = ops[:-1] if value else ops
    text = _describe_simple(body, stack_size)
    if text is None:
        text = " ".join(_op_text(o) for o in body)
    elif not value and not _is_register(body):
        text = f"[{text}]"
    return f"={text}" if value else text


def _is_register(ops: tuple[Op, ...]) -> bool:
    return len(ops) == 1 and ops[0].name in ("reg", "regx")


def _describe_simple(ops: tuple[Op, ...], stack_size: int | None) -> str | None:
    if len(ops) == 2 and ops[1].name == "plus_uconst":
        inner = _describe_simple(ops[:1], stack_size)
        first = ops[0]
        if inner is not None and first.name in ("breg", "fbreg"):
            moved = Op(first.name, (*first.args[:-1], first.args[-1] + ops[1].args[0]))
            return _describe_simple((moved,), stack_size)
        return None
    if len(ops) != 1:
        return None
    op = ops[0]
    if op.name in ("reg", "regx"):
        return f"r{op.args[0]}"
    if op.name in ("lit", "const"):
        return str(op.args[0])
    if op.name == "fbreg" or (op.name == "breg" and op.args[0] == FRAME_REG):
        off = frame_offset(op.args[-1], stack_size)
        return _signed_text("r10", off) if off is not None else f"r10-SS+{op.args[-1]}"
    if op.name == "breg":
        return _signed_text(f"r{op.args[0]}", op.args[1])
    return None


def _op_text(op: Op) -> str:
    args = ",".join(str(a) for a in op.args)
    return f"{op.name}({args})" if args else op.name


# -- evaluation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PieceValue:
    """Where one evaluated piece is: a register, memory, a computed value or bytes."""

    kind: str  # "reg" | "mem" | "value" | "bytes"
    value: int = 0
    data: bytes = b""


def _r10_address(state: MachineState, off: int) -> int:
    real = frame_offset(off, state.stack_size)
    if real is None:
        raise Unavailable("the frame's stack size is unknown")
    return (state.reg(FRAME_REG) + real) & MASK64


def _convert(value: int, bits: int, signed: bool) -> int:
    value &= (1 << bits) - 1 if bits else MASK64
    if signed and bits and value >> (bits - 1):
        value -= 1 << bits
    return value & MASK64


_BINARY: dict[str, Callable[[int, int], int]] = {
    "plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
    "shl": lambda a, b: a << b if b < 64 else 0, "shr": lambda a, b: a >> b if b < 64 else 0,
    "shra": lambda a, b: (_to_signed(a) >> min(b, 63)),
    "div": lambda a, b: int(_to_signed(a) / _to_signed(b)) if b else _div_zero(),
    "mod": lambda a, b: a % b if b else _div_zero(),
    "eq": lambda a, b: int(a == b), "ne": lambda a, b: int(a != b),
    "lt": lambda a, b: int(_to_signed(a) < _to_signed(b)),
    "gt": lambda a, b: int(_to_signed(a) > _to_signed(b)),
    "le": lambda a, b: int(_to_signed(a) <= _to_signed(b)),
    "ge": lambda a, b: int(_to_signed(a) >= _to_signed(b)),
}


def _div_zero() -> int:
    raise Unavailable("division by zero in a DWARF expression")


def _to_signed(v: int) -> int:
    v &= MASK64
    return v - (1 << 64) if v >> 63 else v


def evaluate_piece(ops: tuple[Op, ...], state: MachineState) -> PieceValue:
    """Run one piece's operations; raise ``Unavailable`` when the value is not known."""
    if not ops:
        raise Unavailable("optimized out")
    if _is_register(ops):
        return PieceValue("reg", state.reg(ops[0].args[0]) & MASK64)
    if ops[0].name == "implicit_value":
        return PieceValue("bytes", data=bytes(ops[0].args[1]))
    stack: list[int] = []
    for i, op in enumerate(ops):
        if op.name == "stack_value":
            if i != len(ops) - 1 or not stack:
                raise Unavailable("malformed DWARF expression")
            return PieceValue("value", stack[-1] & MASK64)
        _step(op, stack, state)
    if not stack:
        raise Unavailable("empty DWARF expression")
    return PieceValue("mem", stack[-1] & MASK64)


def _step(op: Op, stack: list[int], state: MachineState) -> None:
    name, args = op.name, op.args
    if name in ("lit", "const"):
        stack.append(args[0] & MASK64)
    elif name == "fbreg" or (name == "breg" and args[0] == FRAME_REG):
        stack.append(_r10_address(state, args[-1]))
    elif name == "breg":
        stack.append((state.reg(args[0]) + args[1]) & MASK64)
    elif name == "plus_uconst":
        stack.append((_pop(stack) + args[0]) & MASK64)
    elif name in _BINARY:
        b, a = _pop(stack), _pop(stack)
        stack.append(_BINARY[name](a, b) & MASK64)
    elif name in ("neg", "not", "abs"):
        a = _pop(stack)
        stack.append({"neg": -a, "not": ~a, "abs": abs(_to_signed(a))}[name] & MASK64)
    elif name in ("dup", "drop", "swap", "over"):
        _stack_op(name, stack)
    elif name == "convert":
        stack.append(_convert(_pop(stack), args[0], args[1]))
    elif name == "deref_size" or name == "deref":
        size = args[0] if args else 8
        stack.append(int.from_bytes(state.mem(_pop(stack), size), "little"))
    elif name == "entry_value":
        stack.append(_entry_value(args[0], state))
    else:
        raise Unavailable(f"unsupported DWARF operation DW_OP_{name}")


def _stack_op(name: str, stack: list[int]) -> None:
    if name == "dup":
        stack.append(_peek(stack, 0))
    elif name == "drop":
        _pop(stack)
    elif name == "over":
        stack.append(_peek(stack, 1))
    else:
        b, a = _pop(stack), _pop(stack)
        stack.extend((b, a))


def _peek(stack: list[int], depth: int) -> int:
    if len(stack) <= depth:
        raise Unavailable("malformed DWARF expression (stack underflow)")
    return stack[-1 - depth]


def _pop(stack: list[int]) -> int:
    if not stack:
        raise Unavailable("malformed DWARF expression (stack underflow)")
    return stack.pop()


def _entry_value(inner: tuple[Op, ...], state: MachineState) -> int:
    if not _is_register(inner):
        raise Unavailable("unsupported DW_OP_entry_value expression")
    reg = inner[0].args[0]
    value = state.entry_reg(reg)
    if value is None:
        raise Unavailable(f"needs r{reg} at the function's entry (DW_OP_entry_value), "
                          "which is not known here")
    return value & MASK64
