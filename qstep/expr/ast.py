"""Expression AST shared by INSPECT_SPECs and the debugger's `print`/`x`.

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
resolved by the environment. The C nodes (`Member`, `Subscript`, `Deref`, `AddrOf`,
`Cast`, `SizeOf`) need C types: `qstep.expr.typed` evaluates them with DWARF.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Member(Node):
    """`base.name` or `base->name` (a C struct/union member)."""

    base: Expr
    name: str
    arrow: bool = False

    def to_text(self) -> str:
        return f"{_postfix_text(self.base)}{'->' if self.arrow else '.'}{self.name}"


@dataclass(frozen=True)
class Subscript(Node):
    """`base[index]` on something other than a bare name (C array or pointer indexing)."""

    base: Expr
    index: Expr

    def to_text(self) -> str:
        return f"{_postfix_text(self.base)}[{self.index.to_text()}]"


@dataclass(frozen=True)
class Deref(Node):
    """`*operand` (C pointer dereference)."""

    operand: Expr

    def to_text(self) -> str:
        return "*" + _prefix_text(self.operand)


@dataclass(frozen=True)
class AddrOf(Node):
    """`&operand` (the address of a C object in memory)."""

    operand: Expr

    def to_text(self) -> str:
        return "&" + _prefix_text(self.operand)


@dataclass(frozen=True)
class Cast(Node):
    """`(TYPE)operand`: a conversion to a C type of the object (e.g. `struct x *`)."""

    type_name: str
    operand: Expr

    def to_text(self) -> str:
        return f"({self.type_name}){_prefix_text(self.operand)}"


@dataclass(frozen=True)
class SizeOf(Node):
    """`sizeof(TYPE)` (type_name set) or `sizeof EXPR`."""

    type_name: str = ""
    operand: Expr | None = None

    def to_text(self) -> str:
        if self.operand is not None:
            return f"sizeof({self.operand.to_text()})"
        return f"sizeof({self.type_name})"


C_NODES = (Member, Subscript, Deref, AddrOf, Cast, SizeOf)


def _postfix_text(expr: Expr) -> str:
    simple = isinstance(expr, Name | Index | Member | Subscript | Reg | Num)
    return expr.to_text() if simple else f"({expr.to_text()})"


def _prefix_text(expr: Expr) -> str:
    return expr.to_text() if not isinstance(expr, Binary) else f"({expr.to_text()})"


def _operand_text(expr: Expr, prec: int, right: int) -> str:
    """Operand text, parenthesized when it binds looser (or equal, on the right)."""
    if isinstance(expr, Binary) and PRECEDENCE[expr.op] < prec + right:
        return f"({expr.to_text()})"
    return expr.to_text()


Expr = (Num | Str | IPv4 | IPv6 | Reg | Mem | Name | Index | Unary | Binary | Member | Subscript
        | Deref | AddrOf | Cast | SizeOf)
BYTES_LITERALS = (Str, IPv4, IPv6)
