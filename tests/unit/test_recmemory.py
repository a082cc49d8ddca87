"""Map values along a recording (qstep.probe.recmemory.RecordedMaps): pure logic."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from qstep.bpf.uapi import MapType
from qstep.probe.recmemory import NotRecorded, RecordedMaps


def info(map_type: int, key_size: int, value_size: int, max_entries: int) -> Any:
    return SimpleNamespace(type=map_type, key_size=key_size, value_size=value_size,
                           max_entries=max_entries, id=1)


def k(n: int, size: int = 4) -> bytes:
    return n.to_bytes(size, "little")


def maps(**dumps: list[tuple[bytes, bytes]] | None) -> RecordedMaps:
    prog: Any = SimpleNamespace(maps={
        "arr": info(MapType.ARRAY, 4, 12, 4),  # 12-byte values: a 16-byte stride
        "hash": info(MapType.HASH, 8, 8, 16),
        "pcpu": info(MapType.PERCPU_ARRAY, 4, 8, 2)})
    return RecordedMaps(prog, dumps)


def test_one_array_lookup_places_every_element() -> None:
    m = maps(arr=[(k(i), bytes(12)) for i in range(4)])
    m.learn(m.maps["arr"], k(1), 0x1010)  # element 1 at 0x1010: element 0 at 0x1000
    m.store(0x1000 + 2 * 16 + 4, 4, 0xAABBCCDD)  # element 2, bytes 4..7
    assert m.lookup("arr", k(2)) == bytes(4) + k(0xAABBCCDD) + bytes(4)
    assert m.byte(0x1000 + 2 * 16 + 5) == 0xCC
    assert m.byte(0x1000 + 12) is None  # padding between elements: not a value
    assert m.lookup("arr", k(4)) is None  # past max_entries: absent, as a lookup says


def test_hash_values_follow_their_key_until_replaced() -> None:
    m = maps(hash=[(k(7, 8), k(1, 8))])
    h = m.maps["hash"]
    assert m.lookup("hash", k(8, 8)) is None
    m.learn(h, k(7, 8), 0x2000)
    m.store(0x2000, 8, 5)
    assert m.lookup("hash", k(7, 8)) == k(5, 8)
    m.forget(h, k(7, 8))  # an update replaced the element: its old place is not it
    m.store(0x2000, 8, 9)
    assert m.lookup("hash", k(7, 8)) == k(5, 8)
    assert m.byte(0x2000) is None


def test_what_disagrees_or_may_have_changed_is_not_known() -> None:
    m = maps(arr=[(k(i), bytes(12)) for i in range(4)], hash=[(k(7, 8), k(1, 8))])
    m.learn(m.maps["arr"], k(0), 0x1000)
    m.check_load(0x1000, 4, 0)  # agrees
    assert m.lookup("arr", k(0)) == bytes(12)
    m.check_load(0x1000, 4, 3)  # the program read something else: unmodelled change
    with pytest.raises(NotRecorded, match="map arr: the program read 0x1000"):
        m.lookup("arr", k(0))
    m.learn(m.maps["hash"], k(7, 8), 0x2000)
    m.poison_pointed([0x5000, 0x2004], "a call at insn 3 got a pointer into it")
    with pytest.raises(NotRecorded, match="map hash: a call at insn 3 got a pointer"):
        m.lookup("hash", k(7, 8))


def test_maps_not_followed_are_never_guessed() -> None:
    m = maps(arr=None, pcpu=[(k(0), bytes(8))])
    with pytest.raises(NotRecorded, match="map arr: its contents could not be dumped"):
        m.lookup("arr", k(0))
    with pytest.raises(NotRecorded, match="map pcpu: recordings follow hash, LRU hash and "
                       "array maps only"):
        m.lookup("pcpu", k(0))
    with pytest.raises(NotRecorded, match="map hash is not followed"):
        m.lookup("hash", k(0, 8))
