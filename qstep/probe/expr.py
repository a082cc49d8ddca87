"""Expression AST shared by INSPECT_SPECs and the debugger's `print`/`x`, and its evaluator.

Every node is a frozen dataclass with a keyword-only `pos` (0-based column in the
source text) that is ignored by `==`, and a `to_text()` that unparses it so that
parsing the text gives an equal node. `Binary.pos`/`Unary.pos` is the operator's
column. Values are `int` (u64, BPF semantics: arithmetic wraps modulo 2**64, shifts
use the low 6 bits of the count, comparisons are unsigned) or `bytes`.

`mem(ADDR, SIZE)` yields a little-endian unsigned number for SIZE 1/2/4/8 and bytes
for other sizes (up to 64). SIZE 0 means "auto": as wide as a string/IPv4/IPv6
literal it is compared with, else 8 bytes. A number compared with bytes of at most
8 bytes reads them little-endian (like a load from memory); bytes compared with bytes
need equal lengths. `Name` (a map or C variable) and `Index` (`map[KEY]`) are
resolved by the environment.
"""

from __future__ import annotations

import ipaddress
import operator
from dataclasses import dataclass, field
from typing import Protocol, assert_never, runtime_checkable

from qstep.errors import UsageError

MASK = (1 << 64) - 1
Value = int | bytes

# C precedence (higher binds tighter); all binary operators are left-associative.
PRECEDENCE: dict[str, int] = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6,
    "<": 7, "<=": 7, ">": 7, ">=": 7, "<<": 8, ">>": 8,
    "+": 9, "-": 9, "*": 10, "/": 10, "%": 10,
}
COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
UNARY_OPS = frozenset({"-", "~", "!"})
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}
_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\t"): "\\t",
            ord("\r"): "\\r"}


@dataclass(frozen=True)
class Node:
    """Base of all AST nodes: `pos` is the 0-based column, not part of equality."""

    pos: int = field(default=0, compare=False, kw_only=True)

    def to_text(self) -> str:
        """Source text that parses back to an equal node."""
        raise NotImplementedError


@dataclass(frozen=True)
class Num(Node):
    """Integer literal (0 <= value < 2**64)."""

    value: int

    def to_text(self) -> str:
        return str(self.value) if self.value < 0x10000 else hex(self.value)


@dataclass(frozen=True)
class Str(Node):
    """String literal, as bytes (UTF-8 for non-ASCII characters)."""

    value: bytes

    def to_text(self) -> str:
        return '"' + "".join(_escape(b) for b in self.value) + '"'


def _escape(byte: int) -> str:
    if byte in _ESCAPES:
        return _ESCAPES[byte]
    return chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}"


@dataclass(frozen=True)
class IPv4(Node):
    """IPv4 address literal: 4 bytes in network order."""

    value: bytes

    def to_text(self) -> str:
        return str(ipaddress.IPv4Address(self.value))


@dataclass(frozen=True)
class IPv6(Node):
    """IPv6 address literal: 16 bytes in network order."""

    value: bytes

    def to_text(self) -> str:
        return ipv6_text(self.value)


def ipv6_text(packed: bytes) -> str:
    """Compressed IPv6 text, IPv4-mapped addresses as ::ffff:a.b.c.d."""
    addr = ipaddress.IPv6Address(packed)
    return f"::ffff:{addr.ipv4_mapped}" if addr.ipv4_mapped else addr.compressed


@dataclass(frozen=True)
class Reg(Node):
    """BPF register r0..r10."""

    n: int

    def to_text(self) -> str:
        return f"$r{self.n}"


@dataclass(frozen=True)
class Mem(Node):
    """`mem(ADDR, SIZE)`: SIZE bytes at ADDR (SIZE 0: auto width)."""

    addr: Expr
    size: int

    def to_text(self) -> str:
        return f"mem({self.addr.to_text()}, {self.size})"


@dataclass(frozen=True)
class Name(Node):
    """A map or C variable, resolved by the caller."""

    name: str

    def to_text(self) -> str:
        return self.name


@dataclass(frozen=True)
class Index(Node):
    """`map[KEY]`: a map lookup."""

    base: Name
    key: Expr

    def to_text(self) -> str:
        return f"{self.base.to_text()}[{self.key.to_text()}]"


@dataclass(frozen=True)
class Unary(Node):
    """Unary operator: '-', '~' or '!' (`not` is parsed as '!')."""

    op: str
    operand: Expr

    def to_text(self) -> str:
        inner = self.operand.to_text()
        return f"{self.op}({inner})" if isinstance(self.operand, Binary) else self.op + inner


@dataclass(frozen=True)
class Binary(Node):
    """Binary operator from PRECEDENCE (`and`/`or` are parsed as '&&'/'||')."""

    op: str
    left: Expr
    right: Expr

    def to_text(self) -> str:
        prec = PRECEDENCE[self.op]
        return f"{_operand_text(self.left, prec, 0)} {self.op} {_operand_text(self.right, prec, 1)}"


def _operand_text(expr: Expr, prec: int, right: int) -> str:
    """Operand text, parenthesized when it binds looser (or equal, on the right)."""
    if isinstance(expr, Binary) and PRECEDENCE[expr.op] < prec + right:
        return f"({expr.to_text()})"
    return expr.to_text()


Expr = Num | Str | IPv4 | IPv6 | Reg | Mem | Name | Index | Unary | Binary
BYTES_LITERALS = (Str, IPv4, IPv6)


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
    results = {
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
