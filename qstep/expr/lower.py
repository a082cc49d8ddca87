"""C expressions at one instruction → the untyped expression language (registers,
``mem()``, u64 operators), which in-guest probes compile and the host evaluates alike.

Each C variable becomes what its DWARF location says at that instruction: a register
(``$r7``), a stack or global address (``mem($r10 - 16, 4)``), or a computed value.
C semantics are spelled out in u64 operations: loads of narrow types are masked and
sign-extended (``(x ^ m) - m``), results are truncated to the C type's width, signed
comparisons flip the sign bit first. What the untyped language cannot express the
same way (signed division, right shift of a signed value, values split across
registers) is refused with a clear error rather than approximated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from qstep.dwarf.location import FRAME_REG, Location, Op, Piece, frame_offset
from qstep.dwarf.types import ARRAY, BASE, ENUM, POINTER, STRUCT, UNION, VOID, CType
from qstep.errors import UsageError
from qstep.expr.ast import (
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
)
from qstep.expr.typed import INT, LONG, ULONG, common_type, promoted, resolve_type

MAX_MEM = 64  # mem() reads at most this many bytes
_UNTYPED = CType(BASE, "unsigned long", 8, 0x07)  # a value of the untyped language


@dataclass(frozen=True)
class VarRef:
    """A C variable at the instruction: its type and location (None: optimized out)."""

    name: str
    type: CType
    location: Location | None
    why_unavailable: str = ""


class LowerEnv(Protocol):
    """What lowering needs about the program at the probed instruction."""

    stack_size: int

    def variable(self, name: str) -> VarRef | None: ...

    def global_address(self, name: str) -> tuple[int, CType] | None: ...

    def find_type(self, name: str) -> CType | None: ...

    def map_value_type(self, name: str) -> CType | None:
        """The C type of map ``name``'s values (None: no such map, or no DWARF type)."""
        ...

    def entry_place(self, n: int) -> Expr | None:
        """Where rN's value at the function's entry still is here (a register or a stack
        slot, as an expression), None when nowhere."""
        ...


@dataclass(frozen=True)
class _Val:
    """A lowered operand: a value (``expr`` is the C value as u64) or, with ``place``, an
    object in memory at the address ``expr``."""

    expr: Expr
    type: CType
    place: bool = False


def _fail(message: str, node: Node) -> UsageError:
    return UsageError(f"{message} (column {node.pos + 1})")


def _num(n: int) -> Num:
    return Num(n & MASK)


def _add(expr: Expr, k: int) -> Expr:
    if k == 0:
        return expr
    if isinstance(expr, Num):
        return _num(expr.value + k)
    return Binary("+", expr, _num(k)) if k > 0 else Binary("-", expr, _num(-k))


def _fit(expr: Expr, t: CType) -> Expr:
    """Truncate to the type's width and sign-extend signed types (u64 two's complement)."""
    bits = t.byte_size * 8
    if bits >= 64 or t.strip().kind == POINTER:
        return expr
    masked: Expr = Binary("&", expr, _num((1 << bits) - 1))
    if not t.is_signed:
        return masked
    sign = _num(1 << (bits - 1))
    return Binary("&", Binary("-", Binary("^", masked, sign), sign), _num(MASK))


def needs_lowering(expr: Expr, env: LowerEnv) -> bool:
    """True if the expression uses C operators or names a C variable or global (else it
    keeps the untyped language's own semantics)."""
    if isinstance(expr, Member | Subscript | Deref | AddrOf | Cast | SizeOf):
        return True
    if isinstance(expr, Name | Index):
        name = expr.name if isinstance(expr, Name) else expr.base.name
        if env.variable(name) is not None or env.global_address(name) is not None:
            return True
        return isinstance(expr, Index) and needs_lowering(expr.key, env)
    if isinstance(expr, Unary):
        return needs_lowering(expr.operand, env)
    if isinstance(expr, Binary):
        return needs_lowering(expr.left, env) or needs_lowering(expr.right, env)
    if isinstance(expr, Mem):
        return needs_lowering(expr.addr, env)
    return False


def lower(expr: Expr, env: LowerEnv) -> Expr:
    """The untyped equivalent of a C expression (map names are left to the caller)."""
    return lower_typed(expr, env)[0]


def lower_typed(expr: Expr, env: LowerEnv) -> tuple[Expr, CType | None]:
    """``lower`` and the C type of the result (None when it is not a C value: registers,
    ``mem()``, maps)."""
    val = _lower(expr, env)
    ctype = None if val.type is _UNTYPED else val.type
    return (_load(val, expr) if val.place else val.expr), ctype


def _lower(expr: Expr, env: LowerEnv) -> _Val:
    handler = _HANDLERS.get(type(expr))
    if handler is None:
        return _Val(expr, _UNTYPED)  # Reg, Mem, literals: already untyped
    return handler(expr, env)


def _load(val: _Val, node: Node) -> Expr:
    """The value of an object in memory (scalars as numbers, others as bytes)."""
    t = val.type
    size = t.byte_size
    if not 0 < size <= MAX_MEM:
        raise _fail(f"{t.c_name()} is {size} bytes; a probe reads at most {MAX_MEM}", node)
    mem = Mem(val.expr, size, pos=node.pos)
    return _fit(mem, t) if t.is_scalar else mem


def _scalar(val: _Val, node: Node) -> Expr:
    if not val.type.is_scalar:
        raise _fail(f"{val.type.c_name()} is not a number", node)
    return _load(val, node) if val.place else val.expr


# -- names ---------------------------------------------------------------------------------
def _name(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, Name)
    var = env.variable(expr.name)
    if var is not None:
        if var.location is None:
            raise _fail(var.why_unavailable or f"{expr.name} is optimized out here", expr)
        return _from_location(var, env, expr)
    glob = env.global_address(expr.name)
    if glob is not None:
        return _Val(_num(glob[0]), glob[1], place=True)
    return _Val(expr, _UNTYPED)  # not a C name: a map, resolved by the caller


def _from_location(var: VarRef, env: LowerEnv, node: Node) -> _Val:
    assert var.location is not None
    stack_size = env.stack_size
    pieces = var.location.pieces
    contiguous = _contiguous_stack(pieces, stack_size)
    if contiguous is not None:
        return _Val(contiguous, var.type, place=True)
    if len(pieces) != 1 or pieces[0].size is not None:
        raise _fail(f"{var.name} is split across registers/stack here ({var.location.describe()}"
                    "); probes cannot read it as one value", node)
    ops = pieces[0].ops
    if len(ops) == 1 and ops[0].name in ("reg", "regx"):
        return _Val(_fit(Reg(ops[0].args[0]), var.type), var.type)
    if ops and ops[-1].name == "stack_value":
        return _Val(_fit(_stack_expr(ops[:-1], env, var.name, node), var.type), var.type)
    if ops and ops[0].name == "implicit_value":
        return _Val(_num(int.from_bytes(ops[0].args[1][:8], "little")), var.type)
    return _Val(_stack_expr(ops, env, var.name, node), var.type, place=True)


def _stack_offset(ops: tuple[Op, ...], stack_size: int) -> int | None:
    """The r10 offset of a plain stack address (fbreg/breg10 [+ plus_uconst])."""
    if not ops or not (ops[0].name == "fbreg" or (ops[0].name == "breg"
                                                  and ops[0].args[0] == FRAME_REG)):
        return None
    if any(o.name != "plus_uconst" for o in ops[1:]):
        return None
    off = frame_offset(ops[0].args[-1], stack_size)
    return None if off is None else off + sum(o.args[0] for o in ops[1:])


def _contiguous_stack(pieces: tuple[Piece, ...], stack_size: int) -> Expr | None:
    """An object split into pieces that all lie in one stack range, in order."""
    if len(pieces) < 2:
        return None
    offsets = [_stack_offset(p.ops, stack_size) for p in pieces]
    first = offsets[0]
    if first is None or any(p.size is None for p in pieces):
        return None
    at = first
    for off, piece in zip(offsets, pieces, strict=True):
        if off != at:
            return None
        at += piece.size or 0
    return _add(Reg(FRAME_REG), first)


_BINOPS = {"plus": "+", "minus": "-", "mul": "*", "and": "&", "or": "|", "xor": "^",
           "shl": "<<", "shr": ">>"}


def _stack_expr(ops: tuple[Op, ...], env: LowerEnv, name: str, node: Node) -> Expr:
    """A DWARF stack program as one expression (its top of stack)."""
    stack: list[Expr] = []
    stack_size = env.stack_size
    for op in ops:
        if op.name in ("lit", "const"):
            stack.append(_num(op.args[0]))
        elif op.name == "fbreg" or (op.name == "breg" and op.args[0] == FRAME_REG):
            off = frame_offset(op.args[-1], stack_size)
            assert off is not None
            stack.append(_add(Reg(FRAME_REG), off))
        elif op.name == "breg":
            stack.append(_add(Reg(op.args[0]), op.args[1]))
        elif op.name == "plus_uconst" and stack:
            stack.append(_add(stack.pop(), op.args[0]))
        elif op.name in _BINOPS and len(stack) >= 2:
            right, left = stack.pop(), stack.pop()
            stack.append(Binary(_BINOPS[op.name], left, right))
        elif op.name == "entry_value":
            stack.append(_entry_value(op, env, name, node))
        elif op.name == "convert" and stack:
            bits, signed = op.args
            stack.append(_fit(stack.pop(), CType(BASE, "", bits // 8 or 8,
                                                 0x05 if signed else 0x07)))
        else:
            raise _fail(f"{name}'s location here (DW_OP_{op.name}) cannot be read by a probe",
                        node)
    if len(stack) != 1:
        raise _fail(f"{name}'s location here is malformed", node)
    return stack[0]


def _entry_value(op: Op, env: LowerEnv, name: str, node: Node) -> Expr:
    """``DW_OP_entry_value(DW_OP_regN)``: where the probed function still keeps rN."""
    inner = op.args[0]
    if len(inner) != 1 or inner[0].name not in ("reg", "regx"):
        raise _fail(f"{name}'s location here (DW_OP_entry_value of an expression) cannot be "
                    "read by a probe", node)
    place = env.entry_place(inner[0].args[0])
    if place is None:
        raise _fail(f"{name} needs r{inner[0].args[0]} at its function's entry "
                    "(DW_OP_entry_value), which no register or stack slot keeps here", node)
    return place


# -- objects --------------------------------------------------------------------------------
def _target(val: _Val, node: Node, what: str) -> CType:
    t = val.type.strip()
    if t.kind != POINTER or t.target is None or t.target.strip().kind == VOID:
        raise _fail(f"cannot {what} a {val.type.c_name()}", node)
    return t.target


def _map_element(index: Index, env: LowerEnv) -> _Val | None:
    """``MAP[KEY]`` as an object in memory: at ``&MAP[KEY]`` (the value the probe's own
    lookup returns), typed by the map's value type; None when it is no such map."""
    lowered = _index(index, env)
    vtype = env.map_value_type(index.base.name)
    if lowered.type is not _UNTYPED or vtype is None:
        return None
    return _Val(AddrOf(lowered.expr, pos=index.pos), vtype, place=True)


def _member(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, Member)
    element = _map_element(expr.base, env) if isinstance(expr.base, Index) else None
    base = element or _lower(expr.base, env)
    if expr.arrow:
        base = _Val(_scalar(base, expr), _target(base, expr, "apply '->' to"), place=True)
    t = base.type.strip()
    if t.kind not in (STRUCT, UNION):
        raise _fail(f"{base.type.c_name()} is not a struct or union", expr)
    m = t.member(expr.name)
    if m is None:
        raise _fail(f"{base.type.c_name()} has no member '{expr.name}'", expr)
    if not base.place:
        raise _fail(f"{expr.to_text()}: the struct is not in memory here", expr)
    if not m.bit_size:
        return _Val(_add(base.expr, m.offset), m.type, place=True)
    start = m.offset * 8 + m.bit_offset
    unit = m.type.byte_size
    word = Mem(_add(base.expr, start // 8 // unit * unit), unit, pos=expr.pos)
    shifted = Binary(">>", word, _num(start - start // 8 // unit * unit * 8))
    field = Binary("&", shifted, _num((1 << m.bit_size) - 1))
    if m.type.is_signed:
        sign = _num(1 << (m.bit_size - 1))
        field = Binary("&", Binary("-", Binary("^", field, sign), sign), _num(MASK))
    return _Val(field, m.type)


def _element(base: _Val, index: Expr, node: Node) -> _Val:
    t = base.type.strip()
    if t.kind == ARRAY and base.place:
        elem = t.element
        start = base.expr
    elif t.kind == POINTER:
        elem = _target(base, node, "index")
        start = _scalar(base, node)
    else:
        raise _fail(f"cannot index a {base.type.c_name()}", node)
    size = elem.byte_size
    if isinstance(index, Num):
        if t.kind == ARRAY and index.value >= t.element_count:
            raise _fail(f"index {index.value} is out of bounds of {base.type.c_name()}", node)
        return _Val(_add(start, index.value * size), elem, place=True)
    return _Val(Binary("+", start, Binary("*", index, _num(size))), elem, place=True)


def _subscript(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, Subscript)
    return _element(_lower(expr.base, env), _scalar(_lower(expr.index, env), expr), expr)


def _index(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, Index)
    if env.variable(expr.base.name) is None and env.global_address(expr.base.name) is None:
        key = lower(expr.key, env) if needs_lowering(expr.key, env) else expr.key
        return _Val(Index(expr.base, key, pos=expr.pos), _UNTYPED)  # a map lookup
    base = _lower(expr.base, env)
    return _element(base, _scalar(_lower(expr.key, env), expr), expr)


def _deref(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, Deref)
    val = _lower(expr.operand, env)
    if val.type.strip().kind == ARRAY:
        return _element(val, _num(0), expr)
    return _Val(_scalar(val, expr), _target(val, expr, "dereference"), place=True)


def _addr_of(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, AddrOf)
    val = _lower(expr.operand, env)
    if not val.place:
        raise _fail(f"cannot take the address of {expr.operand.to_text()}: it is not in "
                    "memory here", expr)
    return _Val(val.expr, CType(POINTER, size=8, target=val.type))


def _cast(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, Cast)
    target = resolve_type(expr.type_name, env.find_type, expr)
    val = _lower(expr.operand, env)
    if target.strip().kind not in (BASE, ENUM, POINTER):
        raise _fail(f"cannot cast {val.type.c_name()} to {target.c_name()}", expr)
    return _Val(_fit(_scalar(val, expr), target), target)


def _sizeof(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, SizeOf)
    if expr.operand is None:
        t = resolve_type(expr.type_name, env.find_type, expr)
    else:
        t = _lower(expr.operand, env).type
    return _Val(_num(t.byte_size), ULONG)


# -- operators --------------------------------------------------------------------------------
def _literal(expr: Expr, env: LowerEnv) -> _Val:
    if isinstance(expr, Num):
        n = expr.value
        return _Val(expr, INT if n < 1 << 31 else LONG if n < 1 << 63 else ULONG)
    return _Val(expr, ULONG)


def _is_bytes(val: _Val, expr: Expr) -> bool:
    return isinstance(expr, Str | IPv4 | IPv6) or val.type.strip().kind in (ARRAY, STRUCT,
                                                                              UNION)


def _unary(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, Unary)
    val = _lower(expr.operand, env)
    operand = _scalar(val, expr)
    if expr.op == "!":
        return _Val(Unary("!", operand, pos=expr.pos), INT)
    t = promoted(val.type)
    return _Val(_fit(Unary(expr.op, operand, pos=expr.pos), t), t)


def _binary(expr: Expr, env: LowerEnv) -> _Val:
    assert isinstance(expr, Binary)
    a, b = _lower(expr.left, env), _lower(expr.right, env)
    if expr.op in ("&&", "||"):
        return _Val(Binary(expr.op, _scalar(a, expr), _scalar(b, expr), pos=expr.pos), INT)
    if expr.op in COMPARISONS and (_is_bytes(a, expr.left) or _is_bytes(b, expr.right)):
        left = _load(a, expr) if a.place else a.expr
        right = _load(b, expr) if b.place else b.expr
        return _Val(Binary(expr.op, left, right, pos=expr.pos), INT)
    x, y = _scalar(a, expr), _scalar(b, expr)
    pa, pb = a.type.strip().kind == POINTER, b.type.strip().kind == POINTER
    if pa and pb and expr.op == "-":
        raise _fail("pointer differences are not supported in probes", expr)
    if (pa or pb) and expr.op in ("+", "-") and not (pa and pb):
        ptr, other = (a, y) if pa else (b, x)
        step = _num(_target(ptr, expr, "do arithmetic on").byte_size or 1)
        base = x if pa else y
        return _Val(Binary(expr.op, base, Binary("*", other, step)), ptr.type)
    t = common_type(a.type, b.type) if not (pa or pb) else ULONG
    if expr.op in COMPARISONS:
        if t.is_signed:
            flip = _num(1 << 63)
            x, y = Binary("^", x, flip), Binary("^", y, flip)
        return _Val(Binary(expr.op, x, y, pos=expr.pos), INT)
    if t.is_signed and expr.op in ("/", "%", ">>"):
        raise _fail(f"'{expr.op}' on signed {t.c_name()} values is not supported in probes "
                    "(cast the operands to unsigned)", expr)
    return _Val(_fit(Binary(expr.op, x, y, pos=expr.pos), t), t)


_HANDLERS: dict[type, Callable[[Expr, LowerEnv], _Val]] = {
    Name: _name, Member: _member, Subscript: _subscript, Index: _index, Deref: _deref,
    AddrOf: _addr_of, Cast: _cast, SizeOf: _sizeof, Unary: _unary, Binary: _binary,
    Num: _literal,
}
