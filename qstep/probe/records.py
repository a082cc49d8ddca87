"""Ring buffer records written by generated probes (layout: docs/probes.md) and their decoding.

A record is a 16-byte header (u32 probe_id, u32 flags, u64 hit) followed by one field
per print item, each padded to 8 bytes. `RecordLayout` is produced by the code
generator; `decode_record` turns a record back into one value per print item.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from qstep.errors import QstepError
from qstep.expr.ast import Expr

HEADER = struct.Struct("<IIQ")
FLAG_STOP = 1
MAX_ITEM_FLAGS = 30  # items 0..29 have an error bit (1 + index) in flags

FieldKind = Literal["literal", "u64", "bytes", "lookup", "array"]


def pad8(n: int) -> int:
    """`n` rounded up to a multiple of 8."""
    return (n + 7) & ~7


@dataclass(frozen=True)
class Field:
    """Where one print item's data sits in a record.

    kind: `literal` (no data; the host prints the item), `u64`, `bytes` (`size`
    bytes), `lookup` (u64 found, then `size` value bytes), `array` (u64 count, then
    `count` values of `size` bytes each). `offset` is from the record start.
    """

    kind: FieldKind
    item: Expr
    offset: int
    size: int = 8
    count: int = 0
    map_name: str = ""

    @property
    def span(self) -> int:
        """Bytes the field occupies in the record (padding included)."""
        if self.kind == "literal":
            return 0
        if self.kind in ("u64", "bytes"):
            return pad8(self.size)
        return 8 + pad8(self.size * max(self.count, 1))


@dataclass(frozen=True)
class RecordLayout:
    """The fields of one probe's records, one per print item in spec order."""

    probe_id: int
    fields: tuple[Field, ...]

    @property
    def size(self) -> int:
        """Record size in bytes."""
        return HEADER.size + sum(f.span for f in self.fields)


@dataclass(frozen=True)
class MapValue:
    """`map[KEY]` (one entry; `found`) or a whole array map (all entries)."""

    name: str
    found: bool
    entries: tuple[bytes, ...]
    whole: bool = False

    @property
    def value(self) -> bytes | None:
        """The looked-up value, None if the key was not found."""
        return self.entries[0] if self.found and self.entries else None


@dataclass(frozen=True)
class ProbeHit:
    """One decoded record; `values[i]` belongs to print item i."""

    probe_id: int
    hit: int
    flags: int
    values: list[int | bytes | MapValue]

    @property
    def stop(self) -> bool:
        """The probe requested a stop."""
        return bool(self.flags & FLAG_STOP)

    def failed(self, item: int) -> bool:
        """True if item `item` could not be read (its value is zeros)."""
        return item < MAX_ITEM_FLAGS and bool(self.flags >> (1 + item) & 1)


class RecordError(QstepError):
    """A record that does not match its layout."""


def decode_record(blob: bytes, layout: RecordLayout) -> ProbeHit:
    """Decode one ring buffer record."""
    if len(blob) < layout.size:
        raise RecordError(f"probe record: {len(blob)} bytes, expected {layout.size}")
    probe_id, flags, hit = HEADER.unpack_from(blob)
    if probe_id != layout.probe_id:
        raise RecordError(f"probe record: probe id {probe_id}, expected {layout.probe_id}")
    return ProbeHit(probe_id, hit, flags, [_value(blob, f) for f in layout.fields])


def _value(blob: bytes, field: Field) -> int | bytes | MapValue:
    at = field.offset
    if field.kind == "literal":
        value = getattr(field.item, "value", b"")
        return value if isinstance(value, bytes) else b""
    if field.kind == "u64":
        return int.from_bytes(blob[at:at + 8], "little")
    if field.kind == "bytes":
        return blob[at:at + field.size]
    head = int.from_bytes(blob[at:at + 8], "little")
    size, data = field.size, blob[at + 8:at + field.span]
    if field.kind == "lookup":
        return MapValue(field.map_name, head == 1, (data[:size],))
    count = min(head, field.count)
    entries = tuple(data[i * size:(i + 1) * size] for i in range(count))
    return MapValue(field.map_name, True, entries, whole=True)
