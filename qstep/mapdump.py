"""A map's contents as the agent's ``dump`` reports them, and how to show them
without overstating: what was not read, or cannot be, is said."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qstep.agent.replies import MapDump, MapInfo
from qstep.bpf.btf import Btf
from qstep.bpf.elf import BpfObject
from qstep.bpf.uapi import MapType
from qstep.errors import UsageError
from qstep.render import format_map_value

QUEUE_TYPES = frozenset({MapType.QUEUE, MapType.STACK})
RECORD_TYPES = frozenset({MapType.RINGBUF, MapType.PERF_EVENT_ARRAY})


def limits_text(info: MapInfo, dump: MapDump) -> list[str]:
    """The lines that say what the listing does not show."""
    lines = []
    if dump.read_entries is not None:
        lines.append(f"    ({dump.zero_entries} all-zero entries not shown; "
                     f"{dump.read_entries} of {info.max_entries} entries read)")
    if dump.truncated and dump.read_entries is not None:
        lines.append(f"    (reading stopped at the agent's limit: entries from index "
                     f"{dump.read_entries} on were not read)")
    elif dump.truncated:
        shown = len(dump.records) if info.type in RECORD_TYPES else len(dump.entries)
        lines.append(f"    (listing stopped after {shown}: the rest was not read)")
    if dump.unlisted:
        lines.append(f"    (cannot list: {dump.unlisted})")
    return lines


def body_text(info: MapInfo, dump: MapDump, btf: Btf) -> list[str] | None:
    """Lines for the map types that are not key → value tables, else None."""
    if info.type in RECORD_TYPES:
        lost = [f"    ({dump.lost} records lost)"] if dump.lost else []
        return [f"    record {record_text(r, info.btf_value_type_id, btf)}"
                for r in dump.records] + lost or (
            ["    (no records since the last read)"] if not dump.unlisted else [])
    if info.type in QUEUE_TYPES:
        order = "front first" if info.type == MapType.QUEUE else "top first"
        values = [format_map_value(v, info.btf_value_type_id, btf) for _, v in dump.entries]
        return [f"    [{order}] " + ", ".join(values)] if values else ["    (empty)"]
    return None


def record_text(record: bytes, type_id: int, btf: Btf) -> str:
    """A ring buffer / perf record, typed when the user named its type (``--record-type``);
    bytes beyond the type (perf's padding) are shown after it."""
    size = btf.size_of(type_id) if type_id else 0
    if not size or len(record) < size:
        return format_map_value(record, 0, btf)
    rest = record[size:]
    return format_map_value(record[:size], type_id, btf) + (f" +x:{rest.hex()}" if rest else "")


def with_record_types(maps: dict[str, MapInfo], btf: Btf, given: list[str]) -> dict[str, MapInfo]:
    """``MAP=TYPE`` (e.g. ``events=struct event``): the record type of ring buffers and
    perf event arrays, which BTF does not say."""
    fixed = dict(maps)
    for text in given:
        name, _, type_text = text.partition("=")
        info = maps.get(name.strip())
        if info is None or info.type not in RECORD_TYPES:
            records = ", ".join(sorted(n for n, i in maps.items() if i.type in RECORD_TYPES))
            raise UsageError(f"--record-type {text}: '{name}' is not a ring buffer or perf "
                             f"event array of the program (those: {records or 'none'})")
        kind, _, type_name = type_text.strip().rpartition(" ")
        found = btf.find_by_name(type_name, kind.upper() or None) if type_name else None
        if found is None:
            raise UsageError(f"--record-type {text}: no type '{type_text.strip()}' in the "
                             "object's BTF (a type only local variables use is not in BTF)")
        fixed[name.strip()] = replace(info, btf_value_type_id=found.id)
    return fixed


def notes_json(info: MapInfo, dump: MapDump, btf: Btf | None = None) -> dict[str, Any]:
    """What ``run --json`` adds beside a map's entries (empty when nothing)."""
    notes: dict[str, Any] = {}
    if info.type in RECORD_TYPES and not dump.unlisted:
        notes["records_hex"] = [r.hex() for r in dump.records]
        if info.btf_value_type_id and btf is not None:
            notes["records"] = [record_text(r, info.btf_value_type_id, btf)
                                for r in dump.records]
    if dump.lost:
        notes["lost"] = dump.lost
    if info.type in QUEUE_TYPES:
        notes["order"] = "front first" if info.type == MapType.QUEUE else "top first"
    if dump.read_entries is not None:
        notes["zero_entries"] = dump.zero_entries
        notes["read_entries"] = dump.read_entries
    if dump.truncated:
        notes["truncated"] = True
    if dump.unlisted:
        notes["unlisted"] = dump.unlisted
    return notes



def with_declared_types(obj: BpfObject, maps: dict[str, MapInfo]) -> dict[str, MapInfo]:
    """The maps with the key/value types the object declares where the kernel kept
    none (it takes no BTF for queues, stacks, bloom filters, map-in-map, ...)."""
    declared = {m.name: m for m in obj.maps}
    fixed = {}
    for name, info in maps.items():
        d = declared.get(name)
        if d is not None and not (info.btf_key_type_id or info.btf_value_type_id):
            info = replace(info, btf_key_type_id=d.key_type_id or 0,
                           btf_value_type_id=d.value_type_id or 0)
        fixed[name] = info
    return fixed
