"""``print MAP``, ``print MAP[KEY]`` and ``info maps`` while stopped, from guest memory,
shown as ``qstep run`` shows map contents (the object's BTF)."""

from __future__ import annotations

import re
from typing import Any

from qstep.agent.replies import MapInfo
from qstep.bpf.uapi import MapType
from qstep.bpf.values import parse_value, parse_value_sized
from qstep.debugger.guestmaps import ARRAYS, GuestMaps
from qstep.debugger.source_commands import SourceCommands
from qstep.errors import UsageError
from qstep.render import format_map_value, map_entries_text

Result = tuple[str, dict[str, Any]]
_MAP_EXPR = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\[(.*)\])?\s*", re.DOTALL)


def _type_name(info: MapInfo) -> str:
    try:
        return MapType(info.type).name.lower()
    except ValueError:
        return f"type {info.type}"


class MapCommands:
    """The map commands of one debugged program."""

    def __init__(self, maps: GuestMaps, source: SourceCommands | None) -> None:
        self.maps = maps
        self._source = source

    def _key(self, info: MapInfo, text: str) -> bytes:
        """The key's bytes: a literal of the key's BTF type, or for arrays a C expression."""
        try:
            if info.btf_key_type_id:
                return parse_value(text, self.maps.prog.btf, info.btf_key_type_id, "key")
            return parse_value_sized(text, info.key_size, "key")
        except UsageError as err:
            if self._source is None or info.type not in ARRAYS:
                raise UsageError(f"{info.name}[{text}]: {err}") from None
        number = self._source.number(text)
        if number is None:
            raise UsageError(f"{info.name}[{text}]: expected an index")
        return (number & 0xFFFFFFFF).to_bytes(4, "little")

    def print(self, text: str, fmt: str = "") -> Result | None:
        """``MAP`` or ``MAP[KEY]``; None when ``text`` does not name a map."""
        found = _MAP_EXPR.fullmatch(text)
        info = self.maps.info(found.group(1)) if found else None
        if found is None or info is None:
            return None
        if self._source is not None and self._source.lookup(found.group(1)) is not None:
            return None  # a C variable of that name hides the map
        if fmt:
            raise UsageError(f"print/{fmt} {text.strip()}: formats do not apply to maps (they "
                             "print as qstep run shows them)")
        btf = self.maps.prog.btf
        if found.group(2) is None:
            entries = self.maps.entries(info)
            lines = map_entries_text(info, entries, btf)
            if len(entries) < info.max_entries and info.type in ARRAYS:
                lines.append(f"    (listing stopped after {len(entries)} of {info.max_entries} "
                             f"slots; print {info.name}[N] reads any slot)")
            return "\n".join([f"{info.name}:"] + lines), {
                "map": info.name, "truncated": len(entries) < info.max_entries and
                info.type in ARRAYS,
                "entries": [{"key": format_map_value(k, info.btf_key_type_id, btf),
                             "value": format_map_value(v, info.btf_value_type_id, btf)}
                            for k, v in entries if any(v) or info.type not in ARRAYS]}
        key = self._key(info, found.group(2).strip())
        value = self.maps.lookup(info, key)
        key_text = format_map_value(key, info.btf_key_type_id, btf)
        if value is None:
            return (f"{info.name}[{key_text}]: no such element",
                    {"map": info.name, "key": key_text, "value": None})
        shown = format_map_value(value, info.btf_value_type_id, btf)
        return shown, {"map": info.name, "key": key_text, "value": shown}

    def info_maps(self) -> Result:
        """The program's maps: type, key/value size, entries."""
        rows = sorted(self.maps.prog.maps.values(), key=lambda i: i.name)
        lines = [f"{i.name:<16} {_type_name(i):<19} key {i.key_size:>3}  "
                 f"value {i.value_size:>4}  max_entries {i.max_entries}  (id {i.id})"
                 for i in rows]
        return "\n".join(lines) or "no maps", {"maps": [
            {"name": i.name, "type": _type_name(i), "key_size": i.key_size,
             "value_size": i.value_size, "max_entries": i.max_entries, "id": i.id}
            for i in rows]}
