"""pcap capture files as packet sources (written here with the format's own layout)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from qstep.errors import UsageError
from qstep.userinput import read_packet

FRAMES = [bytes(range(60)), bytes(range(1, 80)), b"\xff" * 14]


def write_pcap(path: Path, frames: list[bytes], order: str = "<", linktype: int = 1) -> Path:
    data = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for n, frame in enumerate(frames):
        data += struct.pack(order + "IIII", 1700000000 + n, 0, len(frame), len(frame)) + frame
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("order", ["<", ">"])
def test_frames_by_number_in_either_byte_order(tmp_path: Path, order: str) -> None:
    path = write_pcap(tmp_path / "c.pcap", FRAMES, order)
    assert [read_packet(f"{path}#{n}") for n in (1, 2, 3)] == FRAMES
    one = write_pcap(tmp_path / "one.pcap", FRAMES[:1], order)
    assert read_packet(str(one)) == FRAMES[0]


def test_bad_captures_say_what_is_wrong(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "c.pcap", FRAMES)
    with pytest.raises(UsageError, match=r"holds 3 frames; pick one with c\.pcap#N \(1\.\.3\)"):
        read_packet(str(path))
    with pytest.raises(UsageError, match=r"has no frame 4 \(it holds 3\)"):
        read_packet(f"{path}#4")
    with pytest.raises(UsageError, match=r"expected FILE\.pcap#N"):
        read_packet(f"{path}#x")
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UsageError, match=r"frame 3 is cut short"):
        read_packet(f"{cut}#1")
    with pytest.raises(UsageError, match=r"link type 105, qstep reads Ethernet"):
        read_packet(str(write_pcap(tmp_path / "wifi.pcap", FRAMES, linktype=105)))
    ng = tmp_path / "x.pcap"
    ng.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))
    with pytest.raises(UsageError, match=r"pcapng is not read"):
        read_packet(str(ng))
