"""Typed map keys and values: text <-> bytes through BTF.

Syntax::

    value := int | ipv4 | ipv6 | mac | enumerator
           | '{' [field ':' value (',' field ':' value)*] '}'
           | '[' value (',' value)* ']' | 'x:' hex | '"' string '"'

- int: decimal, ``0x`` hex or ``0b`` binary, negative allowed; it must fit in the
  type's size (two's complement: -2**(n-1) .. 2**n - 1), bitfields likewise in bits.
  Stored little-endian, except when the typedef chain has ``__be16/__be32/__be64``.
- ipv4 (``10.0.0.1``) fits any 4-byte type, ipv6 (``fe80::1``) any 16-byte type,
  mac (``aa:bb:cc:dd:ee:ff``) any 6-byte type; bytes are in network order.
- ``x:0011ff`` gives the raw bytes; their count must equal the type's size.
- ``{...}``: struct/union fields by name (members of anonymous struct/union members
  too); missing fields are zero. ``[...]``: array elements, missing ones zero.
- ``"text"`` fills a char array, zero padded (escapes: ``\\" \\\\ \\n \\t \\0 \\xNN``).
- enumerator: the name of a value of the field's enum type; float types take a
  decimal number (``1.5``).
- A global-data section (DATASEC, e.g. the ``.bss`` map's value) is written like a
  struct whose fields are its variables: ``{hits: 5}``.

`format_value` prints the same syntax: integers in decimal, enums by name, char
arrays as strings when printable, other byte arrays as ``x:hex``, a union as its
first largest member, and a 4/16-byte
field whose name has a word ``addr``, ``ip``, ``ipv``, ``src``, ``dst``, ``saddr``,
``daddr`` or ``vip`` (e.g. ``saddr``, ``dst_ip``, ``addr6``) as an IPv4/IPv6 address;
a 6-byte field whose name has a word ``mac``, ``eth``, ``hwaddr`` or ``haddr`` as a MAC.
Errors raise `UsageError` naming where, e.g. ``map key: field 'port': 70000 does not
fit in 2 bytes``.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

from qstep.bpf.btf import (
    INT_BOOL,
    KIND_ARRAY,
    KIND_DATASEC,
    KIND_ENUM,
    KIND_ENUM64,
    KIND_FLOAT,
    KIND_INT,
    KIND_PTR,
    KIND_STRUCT,
    KIND_UNION,
    KIND_VAR,
    Btf,
    BtfMember,
    BtfType,
)
from qstep.errors import UsageError

BIG_ENDIAN_TYPEDEFS = frozenset({"__be16", "__be32", "__be64"})
IP_WORDS = frozenset({"addr", "ip", "ipv", "src", "dst", "saddr", "daddr", "vip"})
MAC_WORDS = frozenset({"mac", "eth", "hwaddr", "haddr"})
NOT_ADDRESS_WORDS = frozenset({"num", "id", "idx", "index", "count", "cnt", "len", "port",
                               "flags", "pos", "slot"})
_DELIMS = set(",{}[]\"= \t\r\n")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "0": "\0"}
_MAX_DEPTH = 32

# ---- parsing text into a tree ----------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """Parsed value: kind is atom, str, struct or array."""

    kind: str
    text: str = ""
    fields: tuple[tuple[str, Node], ...] = ()
    items: tuple[Node, ...] = ()


class _Parser:
    """Recursive-descent parser for the value syntax."""

    def __init__(self, text: str, what: str) -> None:
        self.text, self.pos, self.what = text, 0, what

    def error(self, message: str) -> UsageError:
        return UsageError(f"{self.what}: {message} (at column {self.pos + 1} of {self.text!r})")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            found = repr(self.peek()) if self.peek() else "end of text"
            raise self.error(f"expected {ch!r}, found {found}")
        self.pos += 1

    def parse_all(self) -> Node:
        node = self.value(0)
        if self.peek():
            raise self.error(f"unexpected {self.peek()!r} after the value")
        return node

    def value(self, depth: int) -> Node:
        if depth > _MAX_DEPTH:
            raise self.error("nesting too deep")
        ch = self.peek()
        if ch == "{":
            return self.struct(depth)
        if ch == "[":
            return self.array(depth)
        if ch == '"':
            return Node("str", self.string())
        return Node("atom", self.atom())

    def struct(self, depth: int) -> Node:
        self.expect("{")
        fields: list[tuple[str, Node]] = []
        while self.peek() != "}":
            name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", self.text[self.pos :])
            if not name:
                raise self.error("expected a field name")
            self.pos += name.end()
            self.expect(":")
            fields.append((name.group(), self.value(depth + 1)))
            if self.peek() != ",":
                break
            self.pos += 1
        self.expect("}")
        return Node("struct", fields=tuple(fields))

    def array(self, depth: int) -> Node:
        self.expect("[")
        items: list[Node] = []
        while self.peek() != "]":
            items.append(self.value(depth + 1))
            if self.peek() != ",":
                break
            self.pos += 1
        self.expect("]")
        return Node("array", items=tuple(items))

    def atom(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _DELIMS:
            self.pos += 1
        if start == self.pos:
            found = repr(self.peek()) if self.peek() else "end of text"
            raise self.error(f"expected a value, found {found}")
        return self.text[start : self.pos]

    def string(self) -> str:
        self.expect('"')
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch == "\\":
                out.append(self.escape())
            else:
                out.append(ch)
        raise self.error("unterminated string")

    def escape(self) -> str:
        ch = self.text[self.pos : self.pos + 1]
        self.pos += 1
        if ch in _ESCAPES:
            return _ESCAPES[ch]
        if ch == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", self.text[self.pos : self.pos + 2]):
            self.pos += 2
            return chr(int(self.text[self.pos - 2 : self.pos], 16))
        raise self.error(f"bad escape '\\{ch}' in string")


# ---- atoms -----------------------------------------------------------------------------


def _parse_int(text: str) -> int | None:
    if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|0[bB][01]+)", text):
        return int(text, 0)
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text, 10)
    return None


def _parse_addr(text: str) -> bytes | None:
    """Network-order bytes of an IPv4, IPv6 or MAC literal, else None."""
    if re.fullmatch(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}", text):
        return bytes(int(p, 16) for p in re.split("[:-]", text))
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", text) or ":" in text:
        try:
            return ipaddress.ip_address(text).packed
        except ValueError:
            return None
    return None


def _parse_hex(text: str, where: str) -> bytes | None:
    if not text.lower().startswith("x:"):
        return None
    digits = text[2:].replace("_", "")
    if len(digits) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", digits):
        raise UsageError(f"{where}: bad hex bytes {text!r} (need an even number of hex digits)")
    return bytes.fromhex(digits)


def _int_bytes(value: int, size: int, big: bool, where: str) -> bytes:
    if size <= 0:
        raise UsageError(f"{where}: cannot write an integer into a {size}-byte value")
    if not -(1 << (size * 8 - 1)) <= value < 1 << (size * 8):
        raise UsageError(f"{where}: {value} does not fit in {size} bytes")
    return (value % (1 << (size * 8))).to_bytes(size, "big" if big else "little")


def _raw_atom(text: str, size: int, where: str) -> bytes | None:
    """Bytes of a hex/address atom for any type of `size` bytes, else None."""
    raw = _parse_hex(text, where)
    if raw is None:
        raw = _parse_addr(text)
        if raw is None:
            return None
        kind = {4: "an IPv4 address", 16: "an IPv6 address", 6: "a MAC address"}[len(raw)]
    else:
        kind = f"{len(raw)} hex bytes"
    if len(raw) != size:
        raise UsageError(f"{where}: {kind} does not fit a {size}-byte value")
    return raw


# ---- encoding against BTF --------------------------------------------------------------


def _join(where: str, part: str) -> str:
    return f"{where}: {part}"


class _Encoder:
    """Encodes a parsed `Node` as bytes of a BTF type."""

    def __init__(self, btf: Btf) -> None:
        self.btf = btf

    def encode(self, node: Node, type_id: int, where: str) -> bytes:
        t = self.btf.resolve(type_id)
        size = self.btf.size_of(type_id)
        if node.kind == "atom":
            raw = _raw_atom(node.text, size, where)
            if raw is not None:
                return raw
        if t.kind in (KIND_INT, KIND_PTR, KIND_ENUM, KIND_ENUM64):
            return self.scalar(node, type_id, t, size, where)
        if t.kind == KIND_FLOAT:
            return self.float(node, size, where)
        if t.kind in _RECORD_KINDS:
            return self.record(node, t, size, where)
        if t.kind == KIND_ARRAY:
            return self.array(node, t, size, where)
        raise UsageError(f"{where}: cannot write a value of type '{self.btf.type_name(type_id)}'")

    def scalar(self, node: Node, type_id: int, t: BtfType, size: int, where: str) -> bytes:
        value = self.int_value(node, t, where)
        big = bool(BIG_ENDIAN_TYPEDEFS & set(self.btf.typedef_names(type_id)))
        return _int_bytes(value, size, big, where)

    def int_value(self, node: Node, t: BtfType, where: str) -> int:
        if node.kind != "atom":
            raise UsageError(f"{where}: expected an integer, not a {_describe(node)}")
        value = _parse_int(node.text)
        if t.int_encoding & INT_BOOL:
            value = {"true": 1, "false": 0}.get(node.text, value)
            if value not in (0, 1):
                raise UsageError(f"{where}: a bool takes true, false, 1 or 0, not {node.text!r}")
        if value is not None:
            return value
        for ev in t.enum_values:
            if ev.name == node.text:
                return ev.value
        names = ", ".join(ev.name for ev in t.enum_values)
        hint = f" or one of: {names}" if names else ""
        raise UsageError(f"{where}: {node.text!r} is not an integer{hint}")

    def float(self, node: Node, size: int, where: str) -> bytes:
        fmt = {4: "<f", 8: "<d"}.get(size)
        try:
            value = float(node.text) if node.kind == "atom" else None
        except ValueError:
            value = None
        if fmt is None or value is None:
            raise UsageError(f"{where}: expected a {size}-byte floating point number")
        try:
            return struct.pack(fmt, value)
        except OverflowError:
            raise UsageError(f"{where}: {node.text} is out of range for a {size}-byte float") \
                from None

    def record(self, node: Node, t: BtfType, size: int, where: str) -> bytes:
        if node.kind != "struct":
            kind = {KIND_STRUCT: "struct", KIND_UNION: "union"}.get(t.kind, "data section")
            raise UsageError(f"{where}: expected {{field: value, ...}} for a {kind}")
        out = bytearray(size)
        for name, sub in node.fields:
            here = _join(where, f"field '{name}'")
            bit_offset, member = self.find_member(t, name, where)
            if member.bitfield_size:
                _put_bits(out, bit_offset, member.bitfield_size,
                          self.bitfield(sub, member, here), here)
                continue
            data = self.encode(sub, member.type_id, here)
            start = bit_offset // 8
            out[start : start + len(data)] = data
        return bytes(out)

    def bitfield(self, node: Node, member: BtfMember, where: str) -> int:
        value = self.int_value(node, self.btf.resolve(member.type_id), where)
        bits = member.bitfield_size
        if not -(1 << (bits - 1)) <= value < 1 << bits:
            raise UsageError(f"{where}: {value} does not fit in {bits} bits")
        return value % (1 << bits)

    def find_member(self, t: BtfType, name: str, where: str) -> tuple[int, BtfMember]:
        found = _lookup_member(self.btf, t, name, 0, 0)
        if found is None:
            valid = ", ".join(_member_names(self.btf, t, 0)) or "none"
            raise UsageError(f"{where}: unknown field '{name}' (fields: {valid})")
        return found

    def array(self, node: Node, t: BtfType, size: int, where: str) -> bytes:
        assert t.array is not None
        elem_id, count = t.array.type_id, t.array.nelems
        elem_size = self.btf.size_of(elem_id)
        if node.kind == "str":
            return self.string(node.text, elem_size, size, where)
        if node.kind != "array":
            raise UsageError(f"{where}: expected [v, ...] for an array of {count}")
        if len(node.items) > count:
            raise UsageError(f"{where}: {len(node.items)} elements given, the array has {count}")
        out = bytearray(size)
        for i, item in enumerate(node.items):
            out[i * elem_size : (i + 1) * elem_size] = self.encode(item, elem_id, f"{where}[{i}]")
        return bytes(out)

    def string(self, text: str, elem_size: int, size: int, where: str) -> bytes:
        data = text.encode("utf-8")
        if elem_size != 1:
            raise UsageError(f"{where}: a string needs a char array")
        if len(data) > size:
            raise UsageError(f"{where}: string of {len(data)} bytes does not fit in {size}")
        return data.ljust(size, b"\0")


_RECORD_KINDS = (KIND_STRUCT, KIND_UNION, KIND_DATASEC)


def _fields(btf: Btf, t: BtfType) -> list[BtfMember]:
    """Members of a struct/union, or the variables of a DATASEC as members."""
    if t.kind != KIND_DATASEC:
        return btf.members(t.id)
    out = []
    for vsi in t.var_secinfos:
        var = btf.type_by_id(vsi.type_id)
        if var.kind == KIND_VAR:
            out.append(BtfMember(var.name, var.ref, vsi.offset * 8))
    return out


def _lookup_member(btf: Btf, t: BtfType, name: str, base: int,
                   depth: int) -> tuple[int, BtfMember] | None:
    """(absolute bit offset, member) of `name`, looking into anonymous members too."""
    if depth > _MAX_DEPTH:
        return None
    members = _fields(btf, t)
    for m in members:
        if m.name == name:
            return base + m.bit_offset, m
    for m in members:
        inner = btf.resolve(m.type_id)
        if not m.name and inner.kind in (KIND_STRUCT, KIND_UNION):
            found = _lookup_member(btf, inner, name, base + m.bit_offset, depth + 1)
            if found is not None:
                return found
    return None


def _member_names(btf: Btf, t: BtfType, depth: int) -> list[str]:
    names: list[str] = []
    for m in _fields(btf, t):
        inner = btf.resolve(m.type_id)
        if m.name:
            names.append(m.name)
        elif inner.kind in (KIND_STRUCT, KIND_UNION) and depth < _MAX_DEPTH:
            names.extend(_member_names(btf, inner, depth + 1))
    return names


def _put_bits(out: bytearray, bit_offset: int, bits: int, value: int, where: str) -> None:
    first, last = bit_offset // 8, (bit_offset + bits - 1) // 8
    if last >= len(out):
        raise UsageError(f"{where}: bitfield lies outside the value")
    window = int.from_bytes(out[first : last + 1], "little")
    shift = bit_offset - first * 8
    window &= ~(((1 << bits) - 1) << shift)
    window |= value << shift
    out[first : last + 1] = window.to_bytes(last - first + 1, "little")


def _describe(node: Node) -> str:
    return {"str": "string", "struct": "{...} struct", "array": "[...] array"}.get(node.kind,
                                                                                  "value")


def parse_value(text: str, btf: Btf, type_id: int, what: str = "value") -> bytes:
    """Bytes of the BTF type `type_id` described by `text`; `what` prefixes errors."""
    node = _Parser(text, what).parse_all()
    return _Encoder(btf).encode(node, type_id, what)


def parse_value_sized(text: str, size: int, what: str = "value") -> bytes:
    """Bytes of an untyped `size`-byte value: int (little endian), x:hex, ip or mac."""
    node = _Parser(text, what).parse_all()
    if node.kind != "atom":
        raise UsageError(f"{what}: without BTF only an integer, x:hex, IP or MAC is accepted")
    raw = _raw_atom(node.text, size, what)
    if raw is not None:
        return raw
    value = _parse_int(node.text)
    if value is None:
        raise UsageError(f"{what}: {node.text!r} is not an integer, x:hex, IP or MAC address")
    return _int_bytes(value, size, False, what)


def split_key_value(text: str) -> tuple[str, str]:
    """Split ``KEY=VALUE`` on the first '=' outside brackets and strings."""
    depth, in_str, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "=" and depth == 0:
            key, value = text[:i].strip(), text[i + 1 :].strip()
            if key and value:
                return key, value
            break
    raise UsageError(f"expected KEY=VALUE, got {text!r}")


# ---- formatting ------------------------------------------------------------------------


def _words(name: str) -> set[str]:
    return set(re.findall(r"[a-z]+", name.lower()))


def names_an_address(name: str, big_endian: bool) -> bool:
    """True if a field of this name holds an IP address (e.g. ``dst``, ``saddr``, ``dstv6``).

    Counters and indexes named after an address (``vip_num``, ``src_port``) do not.
    """
    words = _words(name)
    if words & NOT_ADDRESS_WORDS:
        return False
    if words & IP_WORDS:
        return True
    return big_endian and any(name.lower().startswith(w) for w in IP_WORDS)


def _format_addr(data: bytes, name: str, big_endian: bool = False) -> str | None:
    if len(data) in (4, 16) and names_an_address(name, big_endian or len(data) == 16):
        return str(ipaddress.ip_address(data))
    if len(data) == 6 and _words(name) & MAC_WORDS:
        return ":".join(f"{b:02x}" for b in data)
    return None


def _format_string(data: bytes) -> str | None:
    text = data.split(b"\0", 1)[0]
    if len(text) < len(data) and data[len(text) :].strip(b"\0"):
        return None
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not decoded.isprintable():
        return None
    return '"' + decoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Formatter:
    """Prints bytes of a BTF type in the value syntax."""

    def __init__(self, btf: Btf) -> None:
        self.btf = btf

    def format(self, data: bytes, type_id: int, name: str, depth: int) -> str:
        t = self.btf.resolve(type_id)
        big = bool(BIG_ENDIAN_TYPEDEFS & set(self.btf.typedef_names(type_id)))
        if t.kind == KIND_ARRAY and t.array is not None:
            big = big or bool(BIG_ENDIAN_TYPEDEFS & set(self.btf.typedef_names(t.array.type_id)))
        addr = None if t.kind == KIND_UNION else _format_addr(data, name, big)
        if addr is not None:
            return addr
        if depth > _MAX_DEPTH:
            return "x:" + data.hex()
        if t.kind in (KIND_INT, KIND_PTR, KIND_ENUM, KIND_ENUM64):
            return self.scalar(data, type_id, t)
        if t.kind == KIND_FLOAT and len(data) in (4, 8):
            return repr(struct.unpack("<f" if len(data) == 4 else "<d", data)[0])
        if t.kind in _RECORD_KINDS:
            return self.record(data, t, depth, name)
        if t.kind == KIND_ARRAY:
            return self.array(data, t, name, depth)
        return "x:" + data.hex()

    def scalar(self, data: bytes, type_id: int, t: BtfType) -> str:
        big = bool(BIG_ENDIAN_TYPEDEFS & set(self.btf.typedef_names(type_id)))
        value = int.from_bytes(data, "big" if big else "little", signed=t.is_signed)
        mask = (1 << (8 * len(data))) - 1
        for ev in t.enum_values:
            if ev.value & mask == value & mask:
                return ev.name
        return str(value)

    def record(self, data: bytes, t: BtfType, depth: int, name: str = "") -> str:
        members = _fields(self.btf, t)
        if t.kind == KIND_UNION and members:
            members = [self._union_member(data, members)]
        parts = []
        for m in members:
            # A union's members are read in the union's context: addr.v4 is an address.
            context = name if t.kind == KIND_UNION else ""
            text = self.member(data, m, depth, context)
            if m.name:
                parts.append(f"{m.name}: {text}")
            elif text.startswith("{") and len(text) > 2:
                parts.append(text[1:-1])
        return "{" + ", ".join(parts) + "}"

    def _union_member(self, data: bytes, members: list[BtfMember]) -> BtfMember:
        """The smallest member that still covers every non-zero byte."""
        used = max((i + 1 for i, b in enumerate(data) if b), default=0)
        sized = sorted(members, key=lambda m: self.btf.size_of(m.type_id))
        return next((m for m in sized if self.btf.size_of(m.type_id) >= used), sized[-1])

    def member(self, data: bytes, m: BtfMember, depth: int, context: str = "") -> str:
        if m.bitfield_size:
            first = m.bit_offset // 8
            window = int.from_bytes(data[first : first + 16], "little")
            value = (window >> (m.bit_offset - first * 8)) & ((1 << m.bitfield_size) - 1)
            if self.btf.resolve(m.type_id).is_signed and value >> (m.bitfield_size - 1):
                value -= 1 << m.bitfield_size
            return str(value)
        start, size = m.bit_offset // 8, self.btf.size_of(m.type_id)
        name = f"{context}.{m.name}" if context else m.name
        return self.format(data[start : start + size], m.type_id, name, depth + 1)

    def array(self, data: bytes, t: BtfType, name: str, depth: int) -> str:
        assert t.array is not None
        elem = self.btf.resolve(t.array.type_id)
        elem_size = self.btf.size_of(elem.id)
        if elem_size == 1 and elem.kind == KIND_INT:
            is_char = bool(elem.int_encoding & 2) or elem.name == "char"
            text = _format_string(data) if is_char else None
            return text if text is not None else "x:" + data.hex()
        if elem_size == 0:
            return "[]"
        items = [self.format(data[i : i + elem_size], t.array.type_id, "", depth + 1)
                 for i in range(0, len(data), elem_size)]
        return "[" + ", ".join(items) + "]"


def format_value(data: bytes, btf: Btf, type_id: int, name: str = "") -> str:
    """Text (the `parse_value` syntax) of `data` as BTF type `type_id`.

    `name` is the field or variable name used for the IP/MAC display rule.
    """
    size = btf.size_of(type_id)
    if len(data) != size:
        return "x:" + data.hex()
    return _Formatter(btf).format(data, type_id, name, 0)
