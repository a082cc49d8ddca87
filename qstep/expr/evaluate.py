"""The reference evaluator of expressions (the semantics probes compile to).

Values are `int` (u64: arithmetic wraps modulo 2**64, shifts use the low 6 bits of the
count, comparisons are unsigned) or `bytes`; see `qstep.expr.ast` for the node rules.
"""

from __future__ import annotations

import ipaddress
import operator
from collections.abc import Callable
from typing import Protocol, assert_never, runtime_checkable

from qstep.errors import UsageError
from qstep.expr.ast import (
    BYTES_LITERALS,
    COMPARISONS,
    MASK,
    AddrOf,
    Binary,
    Cast,
    Deref,
    Expr,
    Index,
    IPv4,
    IPv6,
    Mem,
    Member,
    Name,
    Node,
    Num,
    Reg,
    SizeOf,
    Str,
    Subscript,
    Unary,
    Value,
    ipv6_text,
)

_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}


class Env(Protocol):
    """What `evaluate` reads: registers, memory and named maps/variables."""

    def reg(self, n: int) -> int:
        """Value of register rN."""
        ...

    def mem(self, addr: int, size: int) -> bytes:
        """`size` bytes at `addr`."""
        ...

    def name(self, name: str) -> Value:
        """Value of a map or C variable; raises UsageError if unknown."""
        ...


@runtime_checkable
class MapEnv(Env, Protocol):
    """An Env that can also look up `map[KEY]`."""

    def lookup(self, name: str, key: Value) -> Value:
        """Value stored under `key` in map `name`; raises UsageError if absent."""
        ...


def _fail(what: str, node: Node) -> UsageError:
    return UsageError(f"{what} at column {node.pos + 1}")


def evaluate(expr: Expr, env: Env) -> Value:
    """Value of `expr` in `env` (u64 ints or bytes)."""
    match expr:
        case Num() | Str() | IPv4() | IPv6():
            return expr.value
        case Reg():
            return env.reg(expr.n) & MASK
        case Mem():
            return _load(expr, env, mem_width(expr))
        case Name():
            return env.name(expr.name)
        case Index():
            return _lookup(expr, env)
        case Unary():
            return _unary(expr.op, _number(evaluate(expr.operand, env), expr))
        case Binary():
            return _binary(expr, env)
        case Member() | Subscript() | Deref() | AddrOf() | Cast() | SizeOf():
            raise _fail(f"{expr.to_text()} needs C types (DWARF), which this context lacks",
                        expr)
        case _:
            assert_never(expr)


def mem_width(mem: Mem, peer: Expr | None = None) -> int:
    """Bytes `mem` reads: its SIZE, or for SIZE 0 the peer literal's length (else 8)."""
    if mem.size:
        return mem.size
    return len(peer.value) if isinstance(peer, BYTES_LITERALS) else 8


def _load(mem: Mem, env: Env, width: int) -> Value:
    addr = _number(evaluate(mem.addr, env), mem)
    data = env.mem(addr, width)
    if len(data) != width:
        raise _fail(f"mem(): got {len(data)} of {width} bytes", mem)
    return int.from_bytes(data, "little") if width in (1, 2, 4, 8) else data


def _lookup(index: Index, env: Env) -> Value:
    if not isinstance(env, MapEnv):
        raise _fail(f"map lookup {index.base.name}[...] is not available here", index)
    return env.lookup(index.base.name, evaluate(index.key, env))


def _number(value: Value, node: Node) -> int:
    if isinstance(value, bytes):
        op = node.op if isinstance(node, Unary | Binary) else "mem()"
        raise _fail(f"'{op}' needs a number, not {len(value)} bytes", node)
    return value


def _unary(op: str, value: int) -> int:
    if op == "-":
        return -value & MASK
    if op == "~":
        return ~value & MASK
    return int(value == 0)


def _binary(expr: Binary, env: Env) -> int:
    if expr.op in ("&&", "||"):
        left = _number(evaluate(expr.left, env), expr) != 0
        if left == (expr.op == "||"):
            return int(left)
        return int(_number(evaluate(expr.right, env), expr) != 0)
    if expr.op in COMPARISONS:
        a, b = _operand(expr.left, expr.right, env), _operand(expr.right, expr.left, env)
        return int(_compare(expr, a, b))
    a = _number(evaluate(expr.left, env), expr)
    return _arith(expr, a, _number(evaluate(expr.right, env), expr))


def _operand(expr: Expr, peer: Expr, env: Env) -> Value:
    """A comparison operand: an auto-size mem() takes its width from the peer."""
    if isinstance(expr, Mem):
        return _load(expr, env, mem_width(expr, peer))
    return evaluate(expr, env)


def _arith(expr: Binary, a: int, b: int) -> int:
    op = expr.op
    if op in ("/", "%") and b == 0:
        raise _fail("division by zero", expr)
    results: dict[str, Callable[[], int]] = {
        "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
        "/": lambda: a // b, "%": lambda: a % b, "<<": lambda: a << (b & 63),
        ">>": lambda: a >> (b & 63), "&": lambda: a & b, "^": lambda: a ^ b, "|": lambda: a | b,
    }
    return results[op]() & MASK


def _compare(expr: Binary, a: Value, b: Value) -> bool:
    return bool(_COMPARE[expr.op](*_comparable(expr, a, b)))


def _comparable(expr: Binary, a: Value, b: Value) -> tuple[int, int] | tuple[bytes, bytes]:
    """Bring both operands to one type (see the module docstring)."""
    if isinstance(a, int) and isinstance(b, int):
        return a, b
    if isinstance(a, bytes) and isinstance(b, bytes):
        if len(a) != len(b):
            raise _fail(f"cannot compare {len(a)} bytes with {len(b)} bytes", expr)
        return a, b
    num, data = (a, b) if isinstance(a, int) else (b, a)
    assert isinstance(num, int) and isinstance(data, bytes)
    if len(data) > 8:
        raise _fail(f"cannot compare a number with {len(data)} bytes", expr)
    other = int.from_bytes(data, "little")
    return (num, other) if isinstance(a, int) else (other, num)


def format_value(value: Value, hint: object = None) -> str:
    """Text for a value; `hint` (a literal node or node class) selects IPv4/IPv6/string form."""
    kind = hint if isinstance(hint, type) else type(hint)
    if isinstance(value, int):
        if kind is IPv4 and value < 1 << 32:
            return str(ipaddress.IPv4Address(value.to_bytes(4, "little")))
        return f"{value:#x} ({value})"
    if kind is IPv4 and len(value) == 4:
        return str(ipaddress.IPv4Address(value))
    if kind is IPv6 and len(value) == 16:
        return ipv6_text(value)
    if kind is Str:
        return Str(value).to_text()
    return value.hex(" ")

