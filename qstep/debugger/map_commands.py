"""``print MAP``, ``print MAP[KEY]`` and ``info maps`` while stopped, from guest memory,
shown as ``qstep run`` shows map contents (the object's BTF)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from qstep.agent.replies import MapInfo
from qstep.bpf.uapi import MapType
from qstep.bpf.values import parse_value, parse_value_sized
from qstep.debugger.guestmaps import ARRAYS, GuestMaps
from qstep.debugger.source_commands import SourceCommands
from qstep.dwarf.types import POINTER
from qstep.dwarf.values import Value
from qstep.errors import UsageError
from qstep.loaded import LoadedProgram
from qstep.render import format_map_value, map_entries_text

Result = tuple[str, dict[str, Any]]
_C_KEY = re.compile(r"\s*[A-Za-z_*&(]")  # a key that reads as a C expression
_NAME = re.compile(r"\s*([A-Za-z_]\w*)\s*")
_SUFFIX = re.compile(r"(\s*(\.\s*[A-Za-z_]\w*|\[[^\]]*\]))+\s*")


class MapReader(Protocol):
    """Where map contents come from: guest memory while stopped, else the agent."""

    prog: LoadedProgram

    def info(self, name: str) -> MapInfo | None: ...

    def entries(self, info: MapInfo) -> list[tuple[bytes, bytes]]: ...

    def lookup(self, info: MapInfo, key: bytes) -> bytes | None: ...


def key_bytes(info: MapInfo, key: Value, where: str) -> bytes:
    """A C value as a key of ``info``: an integer (little-endian, key_size bytes) or an
    object of exactly the key's size."""
    if not key.available:
        raise UsageError(f"{where}: the key is not available here ({key.reason})")
    if key.type.strip().kind == POINTER:
        raise UsageError(f"{where}: the key is a pointer ({key.type.c_name()}); use the "
                         "object it points to")
    if key.type.is_scalar:
        return (key.as_int() & ((1 << (8 * info.key_size)) - 1)).to_bytes(info.key_size,
                                                                           "little")
    if len(key.data) != info.key_size:
        raise UsageError(f"{where}: the key is {key.type.c_name()} ({len(key.data)} bytes); "
                         f"{info.name} has {info.key_size}-byte keys")
    return key.data


def split_map_expr(text: str) -> tuple[str, str | None, str] | None:
    """``NAME``, ``NAME[KEY]`` or ``NAME[KEY]SUFFIX`` (members and indexes, e.g.
    ``.packets`` or ``.hits[2]``): (name, key text, suffix: what follows ``]``); None
    for anything else.
    The key may hold brackets and braces (``vip_map[{addr: {v4: 10.0.0.10}}]``)."""
    found = _NAME.match(text)
    if found is None:
        return None
    rest = text[found.end():]
    if not rest:
        return found.group(1), None, ""
    if not rest.startswith("["):
        return None
    depth = 0
    for i, char in enumerate(rest):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if depth == 0:
            suffix = rest[i + 1:]
            if suffix.strip() and not _SUFFIX.fullmatch(suffix):
                return None
            return found.group(1), rest[1:i], suffix.rstrip()
    return None


def _type_name(info: MapInfo) -> str:
    try:
        return MapType(info.type).name.lower()
    except ValueError:
        return f"type {info.type}"


class MapCommands:
    """The map commands of one debugged program."""

    def __init__(self, maps: GuestMaps, source: SourceCommands | None,
                 running: MapReader | None = None,
                 stopped: Callable[[], bool] = lambda: True) -> None:
        """``maps`` reads guest memory while ``stopped()``; ``running`` (the agent)
        answers otherwise (before ``run``, after the program exited)."""
        self.stopped_maps = maps
        self._running = running
        self._stopped = stopped
        self._source = source

    @property
    def running(self) -> bool:
        """Whether maps can be read now while the VM runs (through the agent)."""
        return self._running is not None

    @property
    def maps(self) -> MapReader:
        """The reader for the VM's state now."""
        if self._stopped() or self._running is None:
            return self.stopped_maps
        return self._running

    def _key(self, info: MapInfo, text: str) -> bytes:
        """The key's bytes: a literal of the key's BTF type, or a C expression (an index,
        or an object of the key's size such as ``pkt->vip``)."""
        try:
            if info.btf_key_type_id:
                return parse_value(text, self.maps.prog.btf, info.btf_key_type_id, "key")
            return parse_value_sized(text, info.key_size, "key")
        except UsageError as err:
            if self._source is None or not _C_KEY.match(text):
                raise UsageError(f"{info.name}[{text}]: {err}") from None
        try:
            value = self._source.resolve(text)
        except UsageError as err:  # columns of the whole MAP[KEY] text
            at = len(info.name) + 1
            shown = re.sub(r"\(column (\d+)\)$", lambda m: f"(column {int(m[1]) + at})",
                           str(err).removeprefix(f"{text.strip()}: "))
            raise UsageError(f"{info.name}[{text}]: {shown}") from None
        if value is None:
            raise UsageError(f"{info.name}[{text}]: expected a key")
        return key_bytes(info, value, f"{info.name}[{text}]")

    def print(self, text: str, fmt: str = "") -> Result | None:
        """``MAP``, ``MAP[KEY]`` or ``MAP[KEY].member...``; None when ``text`` does not
        name a map."""
        found = split_map_expr(text)
        info = self.maps.info(found[0]) if found else None
        if found is None or info is None:
            return None
        name, key_text, suffix = found
        if self._source is not None and self._source.lookup(name) is not None:
            return None  # a C variable of that name hides the map
        if suffix:
            return self._print_part(info, key_text or "", suffix, fmt, text)
        if fmt:
            raise UsageError(f"print/{fmt} {text.strip()}: formats do not apply to maps (they "
                             "print as qstep run shows them)")
        btf = self.maps.prog.btf
        if key_text is None:
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
        key = self._key(info, key_text.strip())
        value = self.maps.lookup(info, key)
        key_text = format_map_value(key, info.btf_key_type_id, btf)
        if value is None:
            return (f"{info.name}[{key_text}]: no such element",
                    {"map": info.name, "key": key_text, "value": None})
        shown = format_map_value(value, info.btf_value_type_id, btf)
        return shown, {"map": info.name, "key": key_text, "value": shown}

    def _typed(self, info: MapInfo, key: bytes, where: str, key_text: str) -> Value:
        """The element under ``key``, typed by the object's DWARF."""
        if self._source is None:
            raise UsageError(f"{where}: members of map values need the object's DWARF")
        ctype = self._source.view.model.find_type(
            self.maps.prog.btf.type_name(info.btf_value_type_id))
        if not info.btf_value_type_id or ctype is None or ctype.byte_size != info.value_size:
            raise UsageError(f"{where}: the value type of map {info.name} is not known to "
                             "the object's DWARF")
        value = self.maps.lookup(info, key)
        if value is None:
            raise UsageError(f"{where}: {info.name} has no element {key_text}")
        return Value(ctype, value, (True,) * len(value))

    def element(self, name: str, key: Value) -> Value | None:
        """``MAP[KEY]`` inside a C expression: KEY a C value (an integer, or an object of
        the key's size); None when ``name`` is no map."""
        info = self.maps.info(name)
        if info is None:
            return None
        raw = key_bytes(info, key, f"{name}[...]")
        shown = format_map_value(raw, info.btf_key_type_id, self.maps.prog.btf)
        return self._typed(info, raw, f"{name}[{shown}]", shown)

    def _print_part(self, info: MapInfo, key_text: str, suffix: str, fmt: str,
                    text: str) -> Result:
        """A member or element of a map element, typed by the object's DWARF."""
        element = self._typed(info, self._key(info, key_text.strip()), text.strip(),
                              key_text.strip())
        assert self._source is not None
        # The element stands in for ``MAP[KEY]`` under a name as long, so that errors
        # give the columns of the text as typed.
        prefix = text[:len(text.rstrip()) - len(suffix)]
        lead = len(prefix) - len(prefix.lstrip())
        name = " " * lead + "_" * (len(prefix) - lead)
        return self._source.print_part(fmt, element, name, suffix, text)

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
