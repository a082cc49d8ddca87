"""Typed values as C-like text (gdb style) and as plain Python data.

Structs ``{a = 1, b = {c = 2}}``, arrays ``{1, 2, 3}``, char arrays as strings,
enums by name, pointers ``(struct counters *) 0xffff...``; IPv4/IPv6 addresses
where the format asks (``/i``) or the name and type say so (a ``__be32`` or
16-byte field named like an address: ``saddr``, ``dst``, ``vip``...). Bytes DWARF
cannot provide print as ``<optimized out>``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from qstep.bpf.values import MAC_WORDS, names_an_address
from qstep.dwarf.types import ARRAY, BASE, ENUM, POINTER, STRUCT, UNION, VOID, CType, Member
from qstep.dwarf.values import Value
from qstep.errors import UsageError

FORMATS = "xduotcai"
UNAVAILABLE = "<optimized out>"
MAX_ELEMENTS = 200


def check_format(fmt: str) -> str:
    if fmt and (len(fmt) != 1 or fmt not in FORMATS):
        raise UsageError(f"unknown print format '/{fmt}': use one of /x /d /u /o /t /c /a /i")
    return fmt


def format_value(v: Value, name: str = "", fmt: str = "") -> str:
    """C-like text of a value; ``name`` (the variable or member) guides IP display."""
    if v.unavailable:
        return UNAVAILABLE if v.reason in ("", "optimized out") else f"<unavailable: {v.reason}>"
    t = v.type.strip()
    if t.kind in (STRUCT, UNION):
        return _aggregate(v, t, fmt)
    if t.kind == ARRAY:
        return _array(v, t, name, fmt)
    if not v.available:
        return UNAVAILABLE
    if t.kind == POINTER:
        return _pointer(v, fmt)
    if t.kind == ENUM:
        return _enum(v, t, fmt)
    if t.kind == BASE:
        return _scalar(v, name, fmt)
    return v.data.hex()


def _is_ip(v: Value, name: str, fmt: str) -> bool:
    size = len(v.data)
    if size not in (4, 16):
        return False
    if fmt == "i":
        return True
    if fmt:
        return False
    big = "be32" in _typedef_names(v.type) or size == 16
    return bool(name) and names_an_address(name, big)


def _words(name: str) -> set[str]:
    return set(re.findall(r"[a-z]+", name.lower()))


def _typedef_names(t: CType) -> str:
    names = []
    while t.target is not None and t.kind != POINTER:
        names.append(t.name)
        t = t.target
    return " ".join(names)


def _ip(data: bytes) -> str:
    return str(ipaddress.ip_address(data))


def _scalar(v: Value, name: str, fmt: str) -> str:
    if _is_ip(v, name, fmt):
        return _ip(v.data)
    if fmt == "i":
        raise UsageError("/i needs a 4-byte (IPv4) or 16-byte (IPv6) value")
    value = v.as_int()
    if v.type.strip().encoding == 0x02 and not fmt:  # DW_ATE_boolean
        return "true" if value else "false"
    if v.type.is_char and not fmt:
        return f"{value} {_char(value & 0xFF)}"
    return _int_text(value, len(v.data), fmt)


def _int_text(value: int, size: int, fmt: str) -> str:
    unsigned = value & ((1 << (size * 8)) - 1)
    if fmt in ("x", "a"):
        return hex(unsigned)
    if fmt == "o":
        return "0" + format(unsigned, "o") if unsigned else "0"
    if fmt == "t":
        return format(unsigned, "b")
    if fmt == "u":
        return str(unsigned)
    if fmt == "c":
        return f"{value} {_char(unsigned & 0xFF)}"
    if fmt == "d" and unsigned >> (size * 8 - 1):
        return str(unsigned - (1 << (size * 8)))
    return str(value)


_ESCAPES = {0: "\\000", 7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f",
            13: "\\r", 39: "\\'", 34: '\\"', 92: "\\\\"}


def _char(byte: int) -> str:
    if byte in _ESCAPES:
        return f"'{_ESCAPES[byte]}'"
    return f"'{chr(byte)}'" if 32 <= byte < 127 else f"'\\{byte:03o}'"


def _enum(v: Value, t: CType, fmt: str) -> str:
    value = v.as_int()
    if fmt:
        return _int_text(value, len(v.data), fmt)
    for name, num in t.enumerators:
        if num == value:
            return name
    return f"{value} (not an enumerator of {t.c_name()})"


def _pointer(v: Value, fmt: str) -> str:
    value = int.from_bytes(v.data, "little")
    if fmt and fmt not in ("x", "a"):
        return _int_text(value, 8, fmt)
    return f"({v.type.c_name()}) {value:#x}" if value else f"({v.type.c_name()}) 0x0"


def member_value(v: Value, m: Member) -> Value:
    """The value of member ``m`` of struct/union value ``v`` (a bitfield extracted)."""
    if not m.bit_size:
        size = m.type.byte_size
        return v.part(m.offset, size, m.type)
    start = m.offset * 8 + m.bit_offset
    first, last = start // 8, (start + m.bit_size + 7) // 8
    valid = all(v.valid[first:last])
    raw = int.from_bytes(v.data[first:last], "little") >> (start % 8)
    raw &= (1 << m.bit_size) - 1
    if m.type.is_signed and raw >> (m.bit_size - 1):
        raw -= 1 << m.bit_size
    size = m.type.byte_size
    data = (raw & ((1 << (size * 8)) - 1)).to_bytes(size, "little")
    return Value(m.type, data, (valid,) * size, None, v.reason)


def members(v: Value) -> list[tuple[str, Value]]:
    """(name, value) of each member of a struct/union value (bitfields extracted)."""
    return [(m.name, member_value(v, m)) for m in v.type.strip().members]


def elements(v: Value) -> list[Value]:
    """The elements of an array value."""
    t = v.type.strip()
    elem = t.element
    size = elem.byte_size
    return [v.part(i * size, size, elem) for i in range(min(t.element_count, MAX_ELEMENTS))]


def _aggregate(v: Value, t: CType, fmt: str) -> str:
    parts = [f"{n or '<anonymous>'} = {format_value(mv, n, fmt)}" for n, mv in members(v)]
    return "{" + ", ".join(parts) + "}"


def _array(v: Value, t: CType, name: str, fmt: str) -> str:
    elem = t.element
    if elem.is_char and not fmt and v.available:
        text = _string(v.data)
        if text is not None:
            return text
    if (elem.strip().kind == BASE and len(v.data) in (4, 16) and v.available
            and _is_ip(v, name, fmt)):
        return _ip(v.data)  # __u8[16], __be32[4]: the bytes in network order
    if fmt == "i" and len(v.data) in (4, 16) and v.available:
        return _ip(v.data)
    if len(v.data) == 6 and not fmt and v.available and _words(name) & MAC_WORDS:
        return ":".join(f"{b:02x}" for b in v.data)
    items = [format_value(e, "", fmt) for e in elements(v)]
    if t.element_count > MAX_ELEMENTS:
        items.append("...")
    return "{" + ", ".join(items) + "}"


def _string(data: bytes) -> str | None:
    text = data.split(b"\0", 1)[0]
    tail = data[len(text):]
    if tail.strip(b"\0"):
        return None
    return '"' + "".join(_char(b)[1:-1] if b != 39 else "'" for b in text) + '"'


def decode(v: Value) -> Any:
    """Plain data for tools: ints, enum names, dicts for structs, lists for arrays;
    None for what is unavailable."""
    t = v.type.strip()
    if t.kind in (STRUCT, UNION):
        return {n: decode(mv) for n, mv in members(v)}
    if t.kind == ARRAY:
        return [decode(e) for e in elements(v)]
    if not v.available or t.kind == VOID:
        return None
    if t.kind == ENUM:
        value = v.as_int()
        return next((n for n, num in t.enumerators if num == value), value)
    if t.kind == POINTER:
        return int.from_bytes(v.data, "little")
    return v.as_int()
