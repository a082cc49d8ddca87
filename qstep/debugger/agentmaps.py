"""Maps read through the agent, when the VM runs (before ``run``, after the program
exited): the same answers as ``qstep.debugger.guestmaps`` reads from guest memory
while stopped, for every map type the agent can list.

Per-CPU values are CPU 0's (qstep guests have one CPU), as while stopped; slots of
a huge array the agent did not send (all zero) read as zeros.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from qstep.agent.replies import MapDump, MapInfo
from qstep.debugger.guestmaps import ARRAYS, LIST_LIMIT, PERCPU
from qstep.errors import UsageError
from qstep.loaded import LoadedProgram


@runtime_checkable
class MapDumper(Protocol):
    """What lists a map in the guest (``qstep.session.Session``)."""

    def dump_map_id(self, map_id: int) -> MapDump:
        """The entries of a map, by id."""
        ...


class AgentMaps:
    """The program's maps as the agent lists them."""

    def __init__(self, prog: LoadedProgram, dumper: MapDumper) -> None:
        self.prog = prog
        self._dumper = dumper

    def info(self, name: str) -> MapInfo | None:
        return self.prog.maps.get(name)

    def _dump(self, info: MapInfo) -> MapDump:
        dump = self._dumper.dump_map_id(info.id)
        if dump.unlisted:
            raise UsageError(f"map {info.name}: {dump.unlisted}")
        return dump

    def _value(self, info: MapInfo, value: bytes) -> bytes:
        return value[:info.value_size] if info.type in PERCPU else value

    def entries(self, info: MapInfo) -> list[tuple[bytes, bytes]]:
        """Every (key, value): array slots (the first ``LIST_LIMIT``), else the elements."""
        dump = self._dump(info)
        if info.type not in ARRAYS:
            return [(k, self._value(info, v)) for k, v in dump.entries]
        count = min(info.max_entries, LIST_LIMIT)
        found = {int.from_bytes(k[:4], "little"): v for k, v in dump.entries}
        return [(i.to_bytes(4, "little"), self._value(info, found.get(i, bytes(info.value_size))))
                for i in range(count)]

    def lookup(self, info: MapInfo, key: bytes) -> bytes | None:
        """The value stored under ``key`` (None: no such element)."""
        dump = self._dump(info)
        if info.type in ARRAYS:
            index = int.from_bytes(key[:4], "little")
            if not 0 <= index < info.max_entries:
                return None
            found = next((v for k, v in dump.entries if k[:4] == key[:4]), None)
            if found is None and dump.truncated:
                raise UsageError(f"map {info.name}: the agent's listing stopped before "
                                 f"slot {index}")
            return self._value(info, found if found is not None else bytes(info.value_size))
        found = next((v for k, v in dump.entries if k == key), None)
        if found is None and dump.truncated:
            raise UsageError(f"map {info.name}: the agent's listing stopped early; the key "
                             "may be among the entries it did not list")
        return self._value(info, found) if found is not None else None
