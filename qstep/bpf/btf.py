"""BTF (`.BTF`) and BTF.ext (`.BTF.ext`) parsing, little endian only.

Layers: `parse_btf` reads raw `BtfType` records; `Btf` adds lookups (`resolve`,
`size_of`, `type_name`, `members`, `find_by_name`). `BtfExt` holds the per-section
func_info/line_info of an object file (insn offsets converted from bytes to
instructions); `decode_line_info`/`decode_func_info` read the kernel's format
(offsets already in instructions). CO-RE relocation records are skipped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from qstep.errors import ObjectError

BTF_MAGIC = 0xEB9F

KIND_NAMES = (
    "UNKN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF", "VOLATILE",
    "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT", "DECL_TAG",
    "TYPE_TAG", "ENUM64",
)
(
    KIND_UNKN, KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD,
    KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO,
    KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64,
) = range(20)

INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
MODIFIERS = frozenset({KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG})
_QUALIFIER_TEXT = {KIND_CONST: "const", KIND_VOLATILE: "volatile", KIND_RESTRICT: "restrict"}
_MAX_DEPTH = 64


@dataclass(frozen=True)
class BtfMember:
    """Struct/union member (bitfield_size 0 = not a bitfield)."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass(frozen=True)
class BtfEnumValue:
    """One enumerator."""

    name: str
    value: int


@dataclass(frozen=True)
class BtfParam:
    """One FUNC_PROTO parameter (type_id 0 with no name = varargs)."""

    name: str
    type_id: int


@dataclass(frozen=True)
class BtfVarSecInfo:
    """One DATASEC entry: a VAR or FUNC placed at offset within the section."""

    type_id: int
    offset: int
    size: int


@dataclass(frozen=True)
class BtfArray:
    """ARRAY payload."""

    type_id: int
    index_type_id: int
    nelems: int


@dataclass
class BtfType:
    """One raw BTF type record; `size_or_type` is size or referenced type per kind."""

    id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int
    int_encoding: int = 0
    int_offset: int = 0
    int_bits: int = 0
    array: BtfArray | None = None
    members: list[BtfMember] = field(default_factory=list)
    enum_values: list[BtfEnumValue] = field(default_factory=list)
    params: list[BtfParam] = field(default_factory=list)
    var_secinfos: list[BtfVarSecInfo] = field(default_factory=list)
    linkage: int = 0
    component_idx: int = -1

    @property
    def kind_name(self) -> str:
        """Kind as bpftool spells it (e.g. 'STRUCT')."""
        return KIND_NAMES[self.kind] if self.kind < len(KIND_NAMES) else f"KIND{self.kind}"

    @property
    def size(self) -> int:
        """Byte size for sized kinds (INT, STRUCT, UNION, ENUM*, FLOAT, DATASEC)."""
        return self.size_or_type

    @property
    def ref(self) -> int:
        """Referenced type id for PTR, modifiers, FUNC, FUNC_PROTO (return), VAR, tags."""
        return self.size_or_type

    @property
    def is_signed(self) -> bool:
        """Signed INT, or ENUM/ENUM64 with the signed flag."""
        if self.kind == KIND_INT:
            return bool(self.int_encoding & INT_SIGNED)
        return self.kind in (KIND_ENUM, KIND_ENUM64) and self.kind_flag


VOID = BtfType(0, KIND_UNKN, "void", 0, False, 0)


class _Reader:
    """Little-endian cursor over a bytes buffer."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def take(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ObjectError("BTF: truncated record")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values


def string_at(strings: bytes, off: int) -> str:
    """NUL-terminated string at `off` of a BTF string section."""
    if off < 0 or off >= len(strings):
        return ""
    end = strings.find(b"\0", off)
    return strings[off : end if end >= 0 else len(strings)].decode("utf-8", "replace")


def _read_kind_data(t: BtfType, r: _Reader, strings: bytes) -> None:
    kind, vlen = t.kind, t.vlen
    if kind == KIND_INT:
        (v,) = r.take("I")
        t.int_encoding, t.int_offset, t.int_bits = (v >> 24) & 0xF, (v >> 16) & 0xFF, v & 0xFF
    elif kind == KIND_ARRAY:
        t.array = BtfArray(*r.take("III"))
    elif kind in (KIND_STRUCT, KIND_UNION):
        for _ in range(vlen):
            name_off, type_id, off = r.take("III")
            bits, boff = (off >> 24, off & 0xFFFFFF) if t.kind_flag else (0, off)
            t.members.append(BtfMember(string_at(strings, name_off), type_id, boff, bits))
    elif kind == KIND_ENUM:
        for _ in range(vlen):
            name_off, val = r.take("Ii" if t.kind_flag else "II")
            t.enum_values.append(BtfEnumValue(string_at(strings, name_off), val))
    elif kind == KIND_ENUM64:
        for _ in range(vlen):
            name_off, lo, hi = r.take("III")
            val = lo | (hi << 32)
            if t.kind_flag and val >= 1 << 63:
                val -= 1 << 64
            t.enum_values.append(BtfEnumValue(string_at(strings, name_off), val))
    elif kind == KIND_FUNC_PROTO:
        for _ in range(vlen):
            name_off, type_id = r.take("II")
            t.params.append(BtfParam(string_at(strings, name_off), type_id))
    elif kind == KIND_VAR:
        (t.linkage,) = r.take("I")
    elif kind == KIND_DATASEC:
        t.var_secinfos = [BtfVarSecInfo(*r.take("III")) for _ in range(vlen)]
    elif kind == KIND_DECL_TAG:
        (t.component_idx,) = r.take("i")
    elif kind == KIND_FUNC:
        t.linkage = vlen
    elif kind not in (KIND_PTR, KIND_FWD, KIND_FLOAT, KIND_TYPE_TAG) and kind not in MODIFIERS:
        raise ObjectError(f"BTF: type [{t.id}] has unknown kind {kind}")


def _parse_header(data: bytes) -> tuple[int, int, int, int, int]:
    if len(data) < 24:
        raise ObjectError("BTF: section too small for its header")
    magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != BTF_MAGIC:
        raise ObjectError(f"BTF: bad magic {magic:#x} (only little-endian BTF is supported)")
    if version != 1:
        raise ObjectError(f"BTF: unsupported version {version}")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    return hdr_len, type_off, type_len, str_off, str_len


def parse_btf(data: bytes) -> tuple[list[BtfType], bytes]:
    """Raw layer: (types indexed by id, with VOID at 0; string section bytes)."""
    hdr_len, type_off, type_len, str_off, str_len = _parse_header(data)
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    if len(strings) != str_len or hdr_len + type_off + type_len > len(data):
        raise ObjectError("BTF: type or string section beyond the end of .BTF")
    r = _Reader(data[: hdr_len + type_off + type_len], hdr_len + type_off)
    types: list[BtfType] = [VOID]
    while r.pos < len(r.data):
        name_off, info, size_or_type = r.take("III")
        t = BtfType(
            id=len(types),
            kind=(info >> 24) & 0x1F,
            name=string_at(strings, name_off),
            vlen=info & 0xFFFF,
            kind_flag=bool(info >> 31),
            size_or_type=size_or_type,
        )
        _read_kind_data(t, r, strings)
        types.append(t)
    return types, strings


class Btf:
    """Parsed `.BTF`: types by id, strings, and C-level queries."""

    def __init__(self, types: list[BtfType], strings: bytes) -> None:
        self.types = types
        self.strings = strings

    @classmethod
    def parse(cls, data: bytes) -> Btf:
        """Parse a `.BTF` section."""
        return cls(*parse_btf(data))

    def string_at(self, off: int) -> str:
        """String at `off` of the string section."""
        return string_at(self.strings, off)

    def type_by_id(self, type_id: int) -> BtfType:
        """Type record by id (0 is void)."""
        if not 0 <= type_id < len(self.types):
            raise ObjectError(f"BTF: no type with id {type_id}")
        return self.types[type_id]

    def resolve(self, type_id: int) -> BtfType:
        """Skip typedef/const/volatile/restrict/type_tag to the underlying type."""
        t = self.type_by_id(type_id)
        for _ in range(_MAX_DEPTH):
            if t.kind not in MODIFIERS:
                return t
            t = self.type_by_id(t.ref)
        raise ObjectError(f"BTF: type [{type_id}]: modifier chain too long")

    def resolve_id(self, type_id: int) -> int:
        """Id of `resolve(type_id)`."""
        return self.resolve(type_id).id

    def size_of(self, type_id: int, _depth: int = 0) -> int:
        """Size in bytes (pointers are 8; void, functions and forwards are 0)."""
        if _depth > _MAX_DEPTH:
            raise ObjectError(f"BTF: type [{type_id}]: nesting too deep")
        t = self.resolve(type_id)
        if t.kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT,
                      KIND_DATASEC):
            return t.size
        if t.kind == KIND_PTR:
            return 8
        if t.kind == KIND_ARRAY and t.array is not None:
            return t.array.nelems * self.size_of(t.array.type_id, _depth + 1)
        if t.kind == KIND_VAR:
            return self.size_of(t.ref, _depth + 1)
        return 0

    def typedef_names(self, type_id: int) -> list[str]:
        """Names of the typedefs crossed while resolving `type_id` (outermost first)."""
        names: list[str] = []
        t = self.type_by_id(type_id)
        for _ in range(_MAX_DEPTH):
            if t.kind not in MODIFIERS:
                break
            if t.kind == KIND_TYPEDEF:
                names.append(t.name)
            t = self.type_by_id(t.ref)
        return names

    def members(self, type_id: int) -> list[BtfMember]:
        """Members of a struct/union with bitfields made explicit (old and new encodings)."""
        t = self.resolve(type_id)
        if t.kind not in (KIND_STRUCT, KIND_UNION):
            raise ObjectError(f"BTF: type [{type_id}] is not a struct or union")
        if t.kind_flag:
            return list(t.members)
        out = []
        for m in t.members:
            mt = self.resolve(m.type_id)
            if mt.kind == KIND_INT and (mt.int_offset or mt.int_bits != mt.size * 8):
                m = BtfMember(m.name, m.type_id, m.bit_offset + mt.int_offset, mt.int_bits)
            out.append(m)
        return out

    def find_by_name(self, name: str, kind: int | str | None = None) -> BtfType | None:
        """First type named `name`, optionally of `kind` (number or name like 'STRUCT')."""
        want = KIND_NAMES.index(kind.upper()) if isinstance(kind, str) else kind
        for t in self.types[1:]:
            if t.name == name and (want is None or t.kind == want):
                return t
        return None

    def type_name(self, type_id: int) -> str:
        """C-like spelling, e.g. 'struct flow_key', 'const char *', '__u32[4]'."""
        return self._declare(type_id, "", 0).strip()

    def _declare(self, type_id: int, inner: str, depth: int) -> str:
        """C declarator text of `type_id` around `inner` (e.g. '*', '[4]')."""
        if depth > _MAX_DEPTH:
            return "..." + inner
        t = self.type_by_id(type_id)
        k = t.kind
        if k == KIND_PTR:
            target = self.type_by_id(t.ref)
            wrap = target.kind in (KIND_ARRAY, KIND_FUNC_PROTO)
            return self._declare(t.ref, f"(*{inner})" if wrap else f"*{inner}", depth + 1)
        if k == KIND_ARRAY and t.array is not None:
            return self._declare(t.array.type_id, f"{inner}[{t.array.nelems}]", depth + 1)
        if k == KIND_FUNC_PROTO:
            args = ", ".join(self._declare(p.type_id, "", depth + 1).strip() if p.type_id
                             else "..." for p in t.params)
            return self._declare(t.ref, f"{inner}({args or 'void'})", depth + 1)
        if k in _QUALIFIER_TEXT and self.type_by_id(t.ref).kind == KIND_PTR:
            qualified = f" {_QUALIFIER_TEXT[k]}" + (f" {inner}" if inner else "")
            return self._declare(t.ref, qualified, depth + 1)
        if k in _QUALIFIER_TEXT:
            base = self._declare(t.ref, "", depth + 1).strip()
            return _join(f"{_QUALIFIER_TEXT[k]} {base}", inner)
        if k == KIND_TYPE_TAG:
            return self._declare(t.ref, inner, depth + 1)
        return _join(self._base_name(t), inner)

    def _base_name(self, t: BtfType) -> str:
        name = t.name or "(anon)"
        if t.kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FWD):
            tag = {KIND_STRUCT: "struct", KIND_UNION: "union"}.get(t.kind, "enum")
            if t.kind == KIND_FWD:
                tag = "union" if t.kind_flag else "struct"
            return f"{tag} {name}"
        return name


def _join(base: str, inner: str) -> str:
    if not inner:
        return base
    return f"{base}{inner}" if inner.startswith("[") else f"{base} {inner}"


@dataclass(frozen=True)
class FuncInfo:
    """func_info record; insn_off is in instructions."""

    insn_off: int
    type_id: int
    name: str


@dataclass(frozen=True)
class LineInfo:
    """line_info record; insn_off is in instructions, col is line_col & 0x3ff."""

    insn_off: int
    file_name: str
    line_text: str
    line: int
    col: int


def _line_record(btf: Btf, insn_off: int, file_off: int, line_off: int, line_col: int) -> LineInfo:
    return LineInfo(insn_off, btf.string_at(file_off), btf.string_at(line_off), line_col >> 10,
                    line_col & 0x3FF)


def _func_record(btf: Btf, insn_off: int, type_id: int) -> FuncInfo:
    name = btf.types[type_id].name if 0 <= type_id < len(btf.types) else ""
    return FuncInfo(insn_off, type_id, name)


def _records(blob: bytes, rec_size: int, min_size: int, fmt: str) -> list[tuple[int, ...]]:
    if rec_size < min_size:
        raise ObjectError(f"BTF.ext: record size {rec_size} is smaller than {min_size}")
    count = len(blob) // rec_size
    return [struct.unpack_from("<" + fmt, blob, i * rec_size) for i in range(count)]


def decode_line_info(blob: bytes, rec_size: int, btf: Btf) -> list[LineInfo]:
    """Kernel-format line_info (insn_off already in instructions)."""
    return [_line_record(btf, *rec) for rec in _records(blob, rec_size, 16, "IIII")]


def decode_func_info(blob: bytes, rec_size: int, btf: Btf) -> list[FuncInfo]:
    """Kernel-format func_info (insn_off already in instructions)."""
    return [_func_record(btf, *rec) for rec in _records(blob, rec_size, 8, "II")]


def _ext_blocks(data: bytes, btf: Btf, fmt: str) -> dict[str, list[tuple[int, ...]]]:
    """Split one BTF.ext subsection into {section name: [records as `fmt` tuples]}."""
    if not data:
        return {}
    r = _Reader(data)
    (rec_size,) = r.take("I")
    out: dict[str, list[tuple[int, ...]]] = {}
    while r.pos < len(data):
        name_off, num = r.take("II")
        end = r.pos + num * rec_size
        if end > len(data):
            raise ObjectError("BTF.ext: truncated info block")
        recs = _records(data[r.pos : end], rec_size, struct.calcsize("<" + fmt), fmt)
        out.setdefault(btf.string_at(name_off), []).extend(recs)
        r.pos = end
    return out


@dataclass(frozen=True)
class CoreRelo:
    """One CO-RE relocation: the root type (object BTF id), access string, kind."""

    insn_off: int  # in instructions
    type_id: int
    access: str
    kind: int


class BtfExt:
    """Parsed `.BTF.ext`: per-section func_info, line_info and CO-RE relocations
    (offsets in instructions)."""

    def __init__(self, func_info: dict[str, list[FuncInfo]],
                 line_info: dict[str, list[LineInfo]],
                 core_relos: dict[str, list[CoreRelo]] | None = None) -> None:
        self.func_info = func_info
        self.line_info = line_info
        self.core_relos = core_relos or {}

    @classmethod
    def parse(cls, data: bytes, btf: Btf) -> BtfExt:
        """Parse `.BTF.ext` of an object file (insn_off stored in bytes)."""
        if len(data) < 24:
            raise ObjectError("BTF.ext: section too small for its header")
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise ObjectError(f"BTF.ext: bad magic {magic:#x}")
        if version != 1:
            raise ObjectError(f"BTF.ext: unsupported version {version}")
        fi_off, fi_len, li_off, li_len = struct.unpack_from("<IIII", data, 8)
        if max(hdr_len + fi_off + fi_len, hdr_len + li_off + li_len) > len(data):
            raise ObjectError("BTF.ext: func_info or line_info truncated (beyond the section)")
        fi = data[hdr_len + fi_off : hdr_len + fi_off + fi_len]
        li = data[hdr_len + li_off : hdr_len + li_off + li_len]
        func_info = {sec: [_func_record(btf, off // 8, tid) for off, tid in recs]
                     for sec, recs in _ext_blocks(fi, btf, "II").items()}
        line_info = {sec: [_line_record(btf, off // 8, f, s, lc) for off, f, s, lc in recs]
                     for sec, recs in _ext_blocks(li, btf, "IIII").items()}
        return cls(func_info, line_info, _core_relos(data, hdr_len, btf))


def _core_relos(data: bytes, hdr_len: int, btf: Btf) -> dict[str, list[CoreRelo]]:
    """The core_relo subsection (headers of 32+ bytes), {} when there is none."""
    if hdr_len < 32 or len(data) < 32:
        return {}
    off, length = struct.unpack_from("<II", data, 24)
    if hdr_len + off + length > len(data):
        raise ObjectError("BTF.ext: core_relo truncated (beyond the section)")
    blocks = _ext_blocks(data[hdr_len + off : hdr_len + off + length], btf, "IIII")
    return {sec: [CoreRelo(insn // 8, tid, btf.string_at(acc), kind)
                  for insn, tid, acc, kind in recs] for sec, recs in blocks.items()}
