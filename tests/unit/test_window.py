"""The host side of the shared window: header, blob placement, consumption counters."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from qstep.agent.protocol import SharedRef
from qstep.agent.window import (
    ATTACHED,
    ENABLED,
    G2H_TAIL,
    H2G_TAIL,
    HEADER_FMT,
    HEADER_SIZE,
    MAGIC,
    HostWindow,
)

SIZE = 1 << 16
RING = (SIZE - HEADER_SIZE) // 2


@pytest.fixture
def window(tmp_path: Path) -> Iterator[HostWindow]:
    win = HostWindow(tmp_path / "window", SIZE)
    yield win
    win.close()


def file_bytes(win: HostWindow) -> bytes:
    return win.path.read_bytes()


def poke(win: HostWindow, offset: int, fmt: str, value: int) -> None:
    """Write a header field as the agent would (through the file, not the host's map)."""
    with open(win.path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def test_the_header_describes_two_rings(window: HostWindow) -> None:
    head = struct.unpack_from(HEADER_FMT, file_bytes(window))
    assert head == (MAGIC, 1, HEADER_SIZE, RING, HEADER_SIZE, HEADER_SIZE + RING)
    assert window.path.stat().st_size == SIZE


def test_put_copies_into_the_host_to_guest_ring(window: HostWindow) -> None:
    ref = window.put(b"A" * 100)
    assert ref == SharedRef(0, 100)
    assert file_bytes(window)[HEADER_SIZE:HEADER_SIZE + 101] == b"A" * 100 + b"\0"
    assert window.put(b"B" * RING) is None  # the agent has not consumed the first blob
    poke(window, H2G_TAIL, "<Q", 100)
    assert window.guest_consumed == 100
    assert window.put(b"B" * RING) == SharedRef(RING, RING)


def test_take_copies_out_of_the_guest_to_host_ring_and_frees_it(window: HostWindow) -> None:
    with open(window.path, "r+b") as f:
        f.seek(HEADER_SIZE + RING + 10)
        f.write(b"reply-bytes")
    assert window.take(SharedRef(RING + 10, 11)) == b"reply-bytes"
    assert struct.unpack_from("<Q", file_bytes(window), G2H_TAIL)[0] == RING + 21
    assert window.host_consumed == RING + 21
    with pytest.raises(ValueError, match="outside"):
        window.take(SharedRef(RING - 5, 10))


def test_attachment_and_enabling_are_header_flags(window: HostWindow) -> None:
    assert not window.attached(2)
    poke(window, ATTACHED, "<I", 2)
    assert window.attached(2) and not window.attached(1)
    window.enable(True)
    assert struct.unpack_from("<I", file_bytes(window), ENABLED)[0] == 1
    window.enable(False)
    assert struct.unpack_from("<I", file_bytes(window), ENABLED)[0] == 0


@pytest.mark.parametrize("size", [12345, 4096])
def test_sizes_must_be_powers_of_two_of_at_least_8k(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        HostWindow(tmp_path / "w", size)
