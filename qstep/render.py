"""Human-readable rendering of run results, packets and maps."""

from __future__ import annotations

from qstep.agent.replies import MapInfo
from qstep.bpf import values
from qstep.bpf.btf import Btf
from qstep.bpf.uapi import MapType

ARRAY_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})


def hexdump(data: bytes, width: int = 16) -> list[str]:
    return [f"  {off:04x}: {data[off:off + width].hex(' ')}" for off in range(0, len(data), width)]


def packet_diff(before: bytes, after: bytes) -> list[str]:
    """Changed byte ranges, or a note that nothing changed."""
    if before == after:
        return [f"unchanged ({len(after)} bytes)"]
    lines = []
    if len(before) != len(after):
        lines.append(f"length {len(before)} -> {len(after)} bytes")
    common = min(len(before), len(after))
    pos = 0
    while pos < common:
        if before[pos] == after[pos]:
            pos += 1
            continue
        end = pos
        while end < common and before[end] != after[end]:
            end += 1
        lines.append(f"offset {pos:#06x}: {before[pos:end].hex(' ')} -> {after[pos:end].hex(' ')}")
        pos = end
    if len(before) != len(after):
        lines.append("packet after the run:")
        lines.extend(hexdump(after))
    return lines


def format_map_value(data: bytes, type_id: int, btf: Btf) -> str:
    if type_id:
        try:
            return values.format_value(data, btf, type_id)
        except Exception:  # noqa: BLE001 - never let display hide the bytes
            pass
    return "x:" + data.hex()


def map_entries_text(info: MapInfo, entries: list[tuple[bytes, bytes]], btf: Btf,
                     show_zero: bool = False, quiet_empty: str | None = None) -> list[str]:
    """One line per entry; all-zero array slots are summarised unless ``show_zero``;
    no "(empty)" line when ``quiet_empty`` says why nothing is listed."""
    lines = []
    hidden = 0
    for key, value in entries:
        if info.type in ARRAY_TYPES and not show_zero and not any(value):
            hidden += 1
            continue
        k = format_map_value(key, info.btf_key_type_id, btf)
        v = format_map_value(value, info.btf_value_type_id, btf)
        lines.append(f"    {k} = {v}")
    if hidden:
        lines.append(f"    ({hidden} all-zero entries not shown)")
    if not entries and not quiet_empty:
        lines.append("    (empty)")
    return lines
