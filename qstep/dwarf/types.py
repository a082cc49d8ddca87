"""C types of a DWARF compile unit: base, struct/union (with bitfields), array, pointer,
enum, typedef, const/volatile, void and function types, built lazily from DIEs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qstep.errors import ObjectError

BASE, STRUCT, UNION, ENUM, POINTER, ARRAY, TYPEDEF, CONST, VOLATILE, VOID, FUNC = (
    "base", "struct", "union", "enum", "pointer", "array", "typedef", "const", "volatile",
    "void", "func")
_TAG_KIND = {
    "DW_TAG_base_type": BASE, "DW_TAG_structure_type": STRUCT, "DW_TAG_union_type": UNION,
    "DW_TAG_enumeration_type": ENUM, "DW_TAG_pointer_type": POINTER,
    "DW_TAG_array_type": ARRAY, "DW_TAG_typedef": TYPEDEF, "DW_TAG_const_type": CONST,
    "DW_TAG_volatile_type": VOLATILE, "DW_TAG_subroutine_type": FUNC,
    "DW_TAG_restrict_type": TYPEDEF, "DW_TAG_atomic_type": TYPEDEF,
}
# DW_ATE_* encodings.
ATE_BOOLEAN, ATE_FLOAT, ATE_SIGNED, ATE_SIGNED_CHAR, ATE_UNSIGNED, ATE_UNSIGNED_CHAR = (
    0x02, 0x04, 0x05, 0x06, 0x07, 0x08)
POINTER_SIZE = 8


@dataclass
class Member:
    """A struct/union member; ``bit_size`` is 0 unless it is a bitfield."""

    name: str
    type: CType
    offset: int  # bytes from the start of the aggregate
    bit_offset: int = 0  # bits from ``offset * 8`` (little-endian numbering)
    bit_size: int = 0


@dataclass(eq=False, repr=False)
class CType:
    """One C type. ``target`` is the pointee, element, aliased or qualified type."""

    kind: str
    name: str = ""
    size: int = 0
    encoding: int = 0
    target: CType | None = None
    members: list[Member] = field(default_factory=list)
    counts: tuple[int | None, ...] = ()  # array dimensions, outermost first
    enumerators: list[tuple[str, int]] = field(default_factory=list)

    # -- structure ------------------------------------------------------
    def strip(self) -> CType:
        """This type without typedefs and qualifiers."""
        t = self
        while t.kind in (TYPEDEF, CONST, VOLATILE) and t.target is not None:
            t = t.target
        return t

    @property
    def byte_size(self) -> int:
        t = self.strip()
        if t.kind == ARRAY:
            return t.element_count * t.element.byte_size
        if t.kind == POINTER:
            return POINTER_SIZE
        return t.size

    @property
    def element(self) -> CType:
        """Element type of an array (one dimension peeled off)."""
        assert self.kind == ARRAY and self.target is not None
        if len(self.counts) > 1:
            return CType(ARRAY, target=self.target, counts=self.counts[1:])
        return self.target

    @property
    def element_count(self) -> int:
        return self.counts[0] or 0 if self.counts else 0

    @property
    def is_signed(self) -> bool:
        t = self.strip()
        if t.kind == ENUM:
            return t.encoding == ATE_SIGNED or any(v < 0 for _, v in t.enumerators)
        return t.kind == BASE and t.encoding in (ATE_SIGNED, ATE_SIGNED_CHAR)

    @property
    def is_char(self) -> bool:
        """A C ``char`` spelled as such (``__u8``, a typedef, prints as a number)."""
        t = self
        while t.kind in (CONST, VOLATILE) and t.target is not None:
            t = t.target
        return t.kind == BASE and t.size == 1 and t.encoding in (ATE_SIGNED_CHAR,
                                                                  ATE_UNSIGNED_CHAR)

    @property
    def is_scalar(self) -> bool:
        return self.strip().kind in (BASE, ENUM, POINTER)

    def member(self, name: str) -> Member | None:
        """A member by name, looking into anonymous structs/unions (offsets added)."""
        for m in self.strip().members:
            if m.name == name:
                return m
            if not m.name and m.type.strip().kind in (STRUCT, UNION):
                inner = m.type.member(name)
                if inner is not None:
                    return Member(inner.name, inner.type, m.offset + inner.offset,
                                  inner.bit_offset, inner.bit_size)
        return None

    # -- names --------------------------------------------------------------
    def c_name(self) -> str:
        """The type as C spells it: ``const struct pkt_meta *``, ``__u32[4]``."""
        return declaration(self, "")

    def __str__(self) -> str:
        return self.c_name()

    def __repr__(self) -> str:
        return f"CType({self.kind}: {self.c_name()})"


def _head(t: CType) -> str:
    if t.kind in (STRUCT, UNION, ENUM):
        return f"{t.kind} {t.name}" if t.name else f"{t.kind} {{...}}"
    if t.kind == VOID:
        return "void"
    return t.name or "?"


def declaration(t: CType, inner: str) -> str:
    """C declarator text of ``t`` around ``inner`` (a name, or '' for an abstract type)."""
    if t.kind in (CONST, VOLATILE):
        word = "const" if t.kind == CONST else "volatile"
        target = t.target or CType(VOID)
        if target.kind == POINTER:
            return declaration(target, f"{word} {inner}".rstrip() if inner else word)
        return f"{word} {declaration(target, inner)}"
    if t.kind == POINTER:
        target = t.target or CType(VOID)
        star = "*" + inner
        if target.kind in (ARRAY, FUNC):
            star = f"({star})"
        return declaration(target, star)
    if t.kind == ARRAY:
        dims = "".join(f"[{c}]" if c is not None else "[]" for c in t.counts)
        return declaration(t.target or CType(VOID), inner + dims)
    if t.kind == FUNC:
        return declaration(t.target or CType(VOID), f"{inner}({', '.join(t.name.split(','))})"
                           if t.name else f"{inner}()")
    head = _head(t)
    if not inner:
        return head
    return f"{head} {inner}" if not inner.startswith("[") else head + inner


def ptype_text(t: CType, indent: str = "") -> str:
    """gdb's ``ptype``: the type with its outermost struct/union/enum body expanded."""
    base = t
    suffix_type: CType | None = None
    while base.kind in (POINTER, ARRAY, TYPEDEF, CONST, VOLATILE) and base.target is not None:
        if base.kind != TYPEDEF:
            suffix_type = suffix_type or t
        base = base.target
    if base.kind not in (STRUCT, UNION, ENUM):
        return declaration(t if t.kind != TYPEDEF else t.strip(), "")
    body = _body(base, indent)
    if suffix_type is None:
        return body
    rest = declaration(_replace_base(t, CType(BASE, name="@")), "")
    return rest.replace("@", body, 1)


def _replace_base(t: CType, new: CType) -> CType:
    if t.kind in (STRUCT, UNION, ENUM, BASE, VOID) or t.target is None:
        return new
    if t.kind == TYPEDEF:
        return _replace_base(t.target, new)
    return CType(t.kind, t.name, t.size, t.encoding, _replace_base(t.target, new), t.members,
                 t.counts, t.enumerators)


def _body(t: CType, indent: str) -> str:
    head = _head(t)
    if t.kind == ENUM:
        items = ", ".join(f"{n} = {v}" for n, v in t.enumerators)
        return f"{head} {{{items}}}"
    lines = [f"{head} {{"]
    for m in t.members:
        bits = f" : {m.bit_size}" if m.bit_size else ""
        lines.append(f"{indent}    {declaration(m.type, m.name)}{bits};")
    lines.append(f"{indent}}}")
    return "\n".join(lines)


class TypeTable:
    """Types of one object by DIE offset, built on first use (cycles through pointers ok)."""

    def __init__(self) -> None:
        self._by_offset: dict[int, CType] = {}
        # Called with each type once built (qstep.dwarf.corerelo: CO-RE layouts).
        self.on_built: Callable[[CType], None] | None = None

    def from_attr(self, die: Any, attr: str = "DW_AT_type") -> CType:
        """The type a DIE refers to (``void`` when it has no such attribute)."""
        if attr not in die.attributes:
            return CType(VOID)
        return self.of(die.get_DIE_from_attribute(attr))

    def of(self, die: Any) -> CType:
        cached = self._by_offset.get(die.offset)
        if cached is not None:
            return cached
        kind = _TAG_KIND.get(die.tag)
        if kind is None:
            raise ObjectError(f"DWARF: unsupported type DIE {die.tag} at {die.offset:#x}")
        t = CType(kind, die_name(die), die.attributes.get("DW_AT_byte_size", _NONE).value or 0)
        self._by_offset[die.offset] = t
        self._fill(t, die)
        if self.on_built is not None:
            self.on_built(t)
        return t

    def _fill(self, t: CType, die: Any) -> None:
        if t.kind == BASE:
            t.encoding = die.attributes["DW_AT_encoding"].value
        elif t.kind in (STRUCT, UNION):
            t.members = [self._member(c) for c in die.iter_children()
                         if c.tag == "DW_TAG_member"]
        elif t.kind == ENUM:
            t.target = self.from_attr(die) if "DW_AT_type" in die.attributes else None
            t.encoding = (t.target.strip().encoding if t.target is not None
                          else ATE_UNSIGNED)
            t.enumerators = [(die_name(c), c.attributes["DW_AT_const_value"].value)
                             for c in die.iter_children() if c.tag == "DW_TAG_enumerator"]
        elif t.kind == ARRAY:
            t.target = self.from_attr(die)
            t.counts = tuple(_count(c) for c in die.iter_children()
                             if c.tag == "DW_TAG_subrange_type")
        elif t.kind == FUNC:
            t.target = self.from_attr(die)
            t.name = ",".join(self.from_attr(c).c_name() for c in die.iter_children()
                              if c.tag == "DW_TAG_formal_parameter")
        else:
            t.target = self.from_attr(die)
            if t.kind == POINTER:
                t.size = POINTER_SIZE

    def _member(self, die: Any) -> Member:
        mtype = self.from_attr(die)
        attrs = die.attributes
        if "DW_AT_data_bit_offset" in attrs:
            bit = attrs["DW_AT_data_bit_offset"].value
            return Member(die_name(die), mtype, 0, bit, attrs["DW_AT_bit_size"].value)
        offset = attrs["DW_AT_data_member_location"].value if (
            "DW_AT_data_member_location" in attrs) else 0
        if not isinstance(offset, int):
            raise ObjectError(f"DWARF: member {die_name(die)} has a computed location")
        bits = attrs["DW_AT_bit_size"].value if "DW_AT_bit_size" in attrs else 0
        return Member(die_name(die), mtype, offset, 0, bits)


class _NoAttr:
    value = None


_NONE = _NoAttr()


def die_name(die: Any) -> str:
    """DW_AT_name as text ('' when absent)."""
    attr = die.attributes.get("DW_AT_name")
    if attr is None:
        return ""
    value = attr.value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _count(die: Any) -> int | None:
    attrs = die.attributes
    if "DW_AT_count" in attrs and isinstance(attrs["DW_AT_count"].value, int):
        return int(attrs["DW_AT_count"].value)
    if "DW_AT_upper_bound" in attrs and isinstance(attrs["DW_AT_upper_bound"].value, int):
        lower = attrs["DW_AT_lower_bound"].value if "DW_AT_lower_bound" in attrs else 0
        return int(attrs["DW_AT_upper_bound"].value) - int(lower) + 1
    return None
