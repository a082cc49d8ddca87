"""C semantics for expressions over typed values (the debugger's ``print`` with DWARF).

Values are ``qstep.dwarf.values.Value`` (C type + bytes + availability + address).
Integer arithmetic follows C: integer promotions, the usual arithmetic
conversions (int/unsigned int/long/unsigned long, BPF's LP64), signed division
truncating toward zero, pointer arithmetic scaled by the target size. Byte arrays,
structs and scalars compare with IPv4/IPv6/string literals byte for byte (memory
order: ``key.saddr == 10.0.0.1`` for a ``__be32``). Errors name the column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from qstep.dwarf.format import member_value
from qstep.dwarf.types import (
    ARRAY,
    ATE_BOOLEAN,
    ATE_SIGNED,
    ATE_SIGNED_CHAR,
    ATE_UNSIGNED,
    ATE_UNSIGNED_CHAR,
    BASE,
    ENUM,
    POINTER,
    STRUCT,
    UNION,
    VOID,
    CType,
)
from qstep.dwarf.values import Value
from qstep.errors import QstepError, UsageError
from qstep.expr.ast import (
    COMPARISONS,
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
)

INT = CType(BASE, "int", 4, ATE_SIGNED)
UINT = CType(BASE, "unsigned int", 4, ATE_UNSIGNED)
LONG = CType(BASE, "long", 8, ATE_SIGNED)
ULONG = CType(BASE, "unsigned long", 8, ATE_UNSIGNED)
U8 = CType(BASE, "unsigned char", 1, ATE_UNSIGNED_CHAR)
CHAR = CType(BASE, "char", 1, ATE_SIGNED_CHAR)
BUILTIN_TYPES = {t.name: t for t in (
    INT, UINT, LONG, ULONG, U8, CHAR, CType(BASE, "signed char", 1, ATE_SIGNED_CHAR),
    CType(BASE, "short", 2, ATE_SIGNED), CType(BASE, "unsigned short", 2, ATE_UNSIGNED),
    CType(BASE, "long long", 8, ATE_SIGNED), CType(BASE, "unsigned long long", 8, ATE_UNSIGNED),
    CType(BASE, "_Bool", 1, ATE_BOOLEAN), CType(VOID, "void"))}
_ALIASES = {"unsigned": "unsigned int", "signed": "int", "signed int": "int",
            "long int": "long", "unsigned long int": "unsigned long", "short int": "short",
            "unsigned short int": "unsigned short", "long long int": "long long"}
# Program contexts whose field accesses the verifier rewrites (not real memory layouts).
CTX_TYPES = frozenset({"xdp_md", "__sk_buff", "bpf_sock_ops", "sk_msg_md", "sk_reuseport_md",
                       "bpf_sk_lookup", "bpf_sysctl", "bpf_sockopt", "bpf_cgroup_dev_ctx",
                       "bpf_sock_addr", "bpf_sock"})


class TypedEnv(Protocol):
    """What typed evaluation reads."""

    def reg(self, n: int) -> int: ...

    def mem(self, addr: int, size: int) -> bytes: ...

    def variable(self, name: str) -> Value | None:
        """A C variable in scope (or a global); None if there is none of that name."""
        ...

    def find_type(self, name: str) -> CType | None:
        """A named type (``struct x``, a typedef, a base type)."""
        ...


@runtime_checkable
class MapTypedEnv(TypedEnv, Protocol):
    """A TypedEnv that can also read map elements (``stats[key].packets``)."""

    def map_element(self, name: str, key: Value) -> Value | None:
        """The element of map ``name`` under ``key``, typed; None: no map of that name
        (a missing element is a UsageError)."""
        ...


def _fail(message: str, node: Node) -> UsageError:
    return UsageError(f"{message} (column {node.pos + 1})")


def int_value(n: int, ctype: CType) -> Value:
    size = ctype.byte_size
    return Value(ctype, (n & ((1 << (size * 8)) - 1)).to_bytes(size, "little"), (True,) * size)


def bytes_value(data: bytes, elem: CType = U8) -> Value:
    return Value(CType(ARRAY, target=elem, counts=(len(data),)), data, (True,) * len(data))


def uses_c(expr: Expr) -> bool:
    """True if the expression names a variable or uses a C-only operator."""
    if isinstance(expr, Name | Index | Member | Subscript | Deref | AddrOf | Cast | SizeOf):
        return True
    if isinstance(expr, Unary):
        return uses_c(expr.operand)
    if isinstance(expr, Binary):
        return uses_c(expr.left) or uses_c(expr.right)
    if isinstance(expr, Mem):
        return uses_c(expr.addr)
    return False


def evaluate_typed(expr: Expr, env: TypedEnv) -> Value:
    """The typed value of ``expr`` (raises UsageError naming the column)."""
    handler = _HANDLERS.get(type(expr))
    if handler is None:
        raise _fail(f"{expr.to_text()} is not supported here", expr)
    return handler(expr, env)


# -- leaves ---------------------------------------------------------------------------
def _num(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Num)
    n = expr.value
    return int_value(n, INT if n < 1 << 31 else LONG if n < 1 << 63 else ULONG)


def _literal(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Str | IPv4 | IPv6)
    return bytes_value(expr.value, CHAR if isinstance(expr, Str) else U8)


def _reg(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Reg)
    return int_value(env.reg(expr.n), ULONG)


def _mem(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Mem)
    addr = _int(evaluate_typed(expr.addr, env), expr)
    size = expr.size or 8
    data = _read(env, addr, size, expr)
    kinds = {1: U8, 2: BUILTIN_TYPES["unsigned short"], 4: UINT, 8: ULONG}
    if size in kinds:
        return Value(kinds[size], data, (True,) * size, addr)
    return Value(bytes_value(data).type, data, (True,) * size, addr)


def _read(env: TypedEnv, addr: int, size: int, node: Node) -> bytes:
    try:
        return env.mem(addr, size)
    except QstepError as err:
        raise _fail(f"cannot read {size} bytes at {addr:#x}: {err}", node) from None


def _name(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Name)
    found = env.variable(expr.name)
    if found is None:
        raise _fail(f'No symbol "{expr.name}" in current context', expr)
    return found


# -- objects ----------------------------------------------------------------------------
def _load(target: CType, addr: int, env: TypedEnv, node: Node) -> Value:
    size = target.byte_size
    return Value(target, _read(env, addr, size, node), (True,) * size, addr)


def _pointer_target(value: Value, node: Node, what: str) -> CType:
    t = value.type.strip()
    if t.kind != POINTER:
        raise _fail(f"cannot {what} a {value.type.c_name()} (not a pointer)", node)
    target = t.target
    if target is None or target.strip().kind == VOID:
        raise _fail(f"cannot {what} a {value.type.c_name()} (cast it to a typed pointer)",
                    node)
    if target.strip().name in CTX_TYPES and target.strip().kind == STRUCT:
        raise _fail(f"struct {target.strip().name} is a context the kernel rewrites accesses "
                    "to; its memory is a different kernel object", node)
    return target


def _deref_at(value: Value, index: int, env: TypedEnv, node: Node, what: str) -> Value:
    target = _pointer_target(value, node, what)
    addr = _int(value, node) + index * target.byte_size
    if addr == 0:
        raise _fail("the pointer is NULL", node)
    return _load(target, addr & ((1 << 64) - 1), env, node)


def _deref(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Deref)
    value = evaluate_typed(expr.operand, env)
    if value.type.strip().kind == ARRAY:
        return _element(value, 0, expr)
    return _deref_at(value, 0, env, expr, "dereference")


def _member(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Member)
    value = evaluate_typed(expr.base, env)
    if expr.arrow:
        value = _deref_at(value, 0, env, expr, "apply '->' to")
    t = value.type.strip()
    if t.kind not in (STRUCT, UNION):
        hint = " (use ->)" if t.kind == POINTER else ""
        raise _fail(f"{value.type.c_name()} is not a struct or union{hint}", expr)
    m = t.member(expr.name)  # C11: members of anonymous structs/unions too
    if m is None:
        names = ", ".join(n for n, _ in _named_members(t))
        raise _fail(f"{value.type.c_name()} has no member '{expr.name}' (members: {names})",
                    expr)
    return member_value(value, m)


def _named_members(t: CType) -> list[tuple[str, CType]]:
    """The members reachable by name, anonymous structs/unions looked into."""
    out: list[tuple[str, CType]] = []
    for m in t.strip().members:
        if m.name:
            out.append((m.name, m.type))
        elif m.type.strip().kind in (STRUCT, UNION):
            out.extend(_named_members(m.type))
    return out


def _element(value: Value, index: int, node: Node) -> Value:
    t = value.type.strip()
    if not 0 <= index < t.element_count:
        raise _fail(f"index {index} is out of bounds of {value.type.c_name()}", node)
    size = t.element.byte_size
    return value.part(index * size, size, t.element)


def _subscript_value(value: Value, index: int, env: TypedEnv, node: Node) -> Value:
    t = value.type.strip()
    if t.kind == ARRAY and t.element_count == 0 and value.address is not None:
        # a flexible array member (``__u64 args[0]``, ``args[]``): C indexes past its end
        return _load(t.element, (value.address + index * t.element.byte_size) & ((1 << 64) - 1),
                     env, node)
    if t.kind == ARRAY:
        return _element(value, index, node)
    return _deref_at(value, index, env, node, "index")


def _subscript(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Subscript)
    base = evaluate_typed(expr.base, env)
    return _subscript_value(base, _int(evaluate_typed(expr.index, env), expr), env, expr)


def _index(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Index)
    base = env.variable(expr.base.name)
    if base is None and isinstance(env, MapTypedEnv):
        element = env.map_element(expr.base.name, evaluate_typed(expr.key, env))
        if element is not None:
            return element
    if base is None:
        raise _fail(f"{expr.base.name}[...]: no C variable '{expr.base.name}' here (map "
                    "lookups are not available in this context)", expr)
    return _subscript_value(base, _int(evaluate_typed(expr.key, env), expr), env, expr)


def _addr_of(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, AddrOf)
    value = evaluate_typed(expr.operand, env)
    if value.address is None:
        raise _fail(f"cannot take the address of {expr.operand.to_text()}: it is not in "
                    "memory here (a register, a constant or a bitfield)", expr)
    return int_value(value.address, CType(POINTER, size=8, target=value.type))


def resolve_type(name: str, find: Callable[[str], CType | None], node: Node) -> CType:
    """A type name with trailing '*'s, from the object's types or C's base types."""
    base = name.rstrip("* ").strip()
    stars = name.count("*")
    base = _ALIASES.get(base, base)
    found = find(base) or BUILTIN_TYPES.get(base)
    if found is None:
        raise _fail(f"no type named '{base}' in this program", node)
    for _ in range(stars):
        found = CType(POINTER, size=8, target=found)
    return found


def _cast(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Cast)
    target = resolve_type(expr.type_name, env.find_type, expr)
    value = evaluate_typed(expr.operand, env)
    if target.strip().kind not in (BASE, ENUM, POINTER) or not value.type.is_scalar:
        raise _fail(f"cannot cast {value.type.c_name()} to {target.c_name()}", expr)
    return int_value(_int(value, expr), target)


def _sizeof(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, SizeOf)
    if expr.operand is None:
        t = resolve_type(expr.type_name, env.find_type, expr)
    else:
        t = evaluate_typed(expr.operand, env).type
    return int_value(t.byte_size, ULONG)


# -- arithmetic ---------------------------------------------------------------------------
def _int(value: Value, node: Node) -> int:
    if not value.type.is_scalar:
        raise _fail(f"{value.type.c_name()} is not a number", node)
    if not value.available:
        raise _fail("a value in this expression is optimized out here"
                    + (f" ({value.reason})" if value.reason and value.reason != "optimized out"
                       else ""), node)
    return value.as_int()


def promoted(t: CType) -> CType:
    """C's integer promotion (pointers unchanged)."""
    s = t.strip()
    if s.kind == POINTER:
        return s
    size, signed = s.byte_size, t.is_signed
    if size < 4 or (size == 4 and signed):
        return INT
    if size == 4:
        return UINT
    return LONG if signed else ULONG


def common_type(a: CType, b: CType) -> CType:
    """The usual arithmetic conversions (LP64)."""
    a, b = promoted(a), promoted(b)
    if a.byte_size != b.byte_size:
        return a if a.byte_size > b.byte_size else b
    return a if not a.is_signed else b


def _unary(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Unary)
    value = evaluate_typed(expr.operand, env)
    n = _int(value, expr)
    if expr.op == "!":
        return int_value(int(n == 0), INT)
    t = promoted(value.type)
    return int_value(-n if expr.op == "-" else ~n, t)


def _binary(expr: Expr, env: TypedEnv) -> Value:
    assert isinstance(expr, Binary)
    if expr.op in ("&&", "||"):
        left = _int(evaluate_typed(expr.left, env), expr) != 0
        if left == (expr.op == "||"):
            return int_value(int(left), INT)
        return int_value(int(_int(evaluate_typed(expr.right, env), expr) != 0), INT)
    a, b = evaluate_typed(expr.left, env), evaluate_typed(expr.right, env)
    if expr.op in COMPARISONS:
        return int_value(int(_compare(expr, a, b)), INT)
    pointer = _pointer_arith(expr, a, b)
    if pointer is not None:
        return pointer
    t = common_type(a.type, b.type)
    x, y = _convert(_int(a, expr), t), _convert(_int(b, expr), t)
    return int_value(_arith(expr, x, y, t), t)


def _convert(n: int, t: CType) -> int:
    bits = t.byte_size * 8
    n &= (1 << bits) - 1
    return n - (1 << bits) if t.is_signed and n >> (bits - 1) else n


def _arith(expr: Binary, x: int, y: int, t: CType) -> int:
    op = expr.op
    if op in ("/", "%"):
        if y == 0:
            raise _fail("division by zero", expr)
        q = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
        return q if op == "/" else x - q * y
    if op in ("<<", ">>"):
        if not 0 <= y < t.byte_size * 8:
            raise _fail(f"shift count {y} is out of range for {t.c_name()}", expr)
        return x << y if op == "<<" else x >> y
    ops: dict[str, Callable[[int, int], int]] = {
        "+": lambda p, q: p + q, "-": lambda p, q: p - q, "*": lambda p, q: p * q,
        "&": lambda p, q: p & q, "|": lambda p, q: p | q, "^": lambda p, q: p ^ q}
    return ops[op](x, y)


def _pointer_arith(expr: Binary, a: Value, b: Value) -> Value | None:
    pa, pb = a.type.strip().kind == POINTER, b.type.strip().kind == POINTER
    if not (pa or pb) or expr.op not in ("+", "-"):
        return None
    if pa and pb:
        if expr.op == "+":
            raise _fail("cannot add two pointers", expr)
        size = _step(a.type)
        return int_value((_int(a, expr) - _int(b, expr)) // size, LONG)
    ptr, other = (a, b) if pa else (b, a)
    if expr.op == "-" and not pa:
        raise _fail("cannot subtract a pointer from a number", expr)
    delta = _int(other, expr) * _step(ptr.type)
    return int_value(_int(ptr, expr) + (delta if expr.op == "+" else -delta), ptr.type)


def _step(ptr: CType) -> int:
    target = ptr.strip().target
    size = target.byte_size if target is not None else 0
    return size or 1


def _is_bytes(v: Value) -> bool:
    return v.type.strip().kind in (ARRAY, STRUCT, UNION)


def _compare(expr: Binary, a: Value, b: Value) -> bool:
    if _is_bytes(a) or _is_bytes(b):
        return _compare_bytes(expr, a, b)
    t = common_type(a.type, b.type)
    x, y = _convert(_int(a, expr), t), _convert(_int(b, expr), t)
    results = {"==": x == y, "!=": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}
    return results[expr.op]


def _compare_bytes(expr: Binary, a: Value, b: Value) -> bool:
    if expr.op not in ("==", "!="):
        raise _fail(f"'{expr.op}' cannot order {a.type.c_name()} and {b.type.c_name()}", expr)
    if not (_is_bytes(a) and _is_bytes(b)) and not isinstance(expr.left, _BYTE_LITERALS) and \
            not isinstance(expr.right, _BYTE_LITERALS):
        raise _fail(f"cannot compare {a.type.c_name()} with {b.type.c_name()}", expr)
    if len(a.data) != len(b.data):
        raise _fail(f"cannot compare {len(a.data)} bytes ({a.type.c_name()}) with "
                    f"{len(b.data)} bytes ({b.type.c_name()})", expr)
    if not (a.available and b.available):
        raise _fail("a value in this comparison is optimized out here", expr)
    return (a.data == b.data) == (expr.op == "==")


_BYTE_LITERALS = (Str, IPv4, IPv6)
_HANDLERS: dict[type, Callable[[Expr, TypedEnv], Value]] = {
    Num: _num, Str: _literal, IPv4: _literal, IPv6: _literal, Reg: _reg, Mem: _mem,
    Name: _name, Index: _index, Member: _member, Subscript: _subscript, Deref: _deref,
    AddrOf: _addr_of, Cast: _cast, SizeOf: _sizeof, Unary: _unary, Binary: _binary,
}
