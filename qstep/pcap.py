"""Frames from pcap capture files (tcpdump, Wireshark's "pcap" format; not pcapng)."""

from __future__ import annotations

import struct
from pathlib import Path

from qstep.errors import UsageError

MAGICS = {0xA1B2C3D4: "<", 0xD4C3B2A1: ">", 0xA1B23C4D: "<", 0x4D3CB2A1: ">"}  # us, ns
LINKTYPE_ETHERNET = 1
GLOBAL_HEADER = 24
RECORD_HEADER = 16


def read_pcap(path: Path) -> list[bytes]:
    """Every frame of an Ethernet pcap file, in order (captured bytes only)."""
    data = path.read_bytes()
    if len(data) < GLOBAL_HEADER:
        raise UsageError(f"{path}: not a pcap file (shorter than its 24-byte header)")
    order = MAGICS.get(struct.unpack_from("<I", data)[0])
    if order is None:
        raise UsageError(f"{path}: not a pcap file (pcapng is not read: save it as pcap)")
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF
    if linktype != LINKTYPE_ETHERNET:
        raise UsageError(f"{path}: link type {linktype}, qstep reads Ethernet (1) captures")
    frames: list[bytes] = []
    off = GLOBAL_HEADER
    while off < len(data):
        if off + RECORD_HEADER > len(data):
            raise UsageError(f"{path}: truncated record header at byte {off}")
        captured = struct.unpack_from(order + "I", data, off + 8)[0]
        start = off + RECORD_HEADER
        if start + captured > len(data):
            raise UsageError(f"{path}: frame {len(frames) + 1} is cut short at byte {start}")
        frames.append(data[start:start + captured])
        off = start + captured
    return frames


def pcap_frame(path: Path, number: int | None) -> bytes:
    """Frame ``number`` (1-based, as Wireshark counts); without a number, the only one."""
    frames = read_pcap(path)
    if number is None:
        if len(frames) != 1:
            raise UsageError(f"{path} holds {len(frames)} frames; pick one with "
                             f"{path.name}#N (1..{len(frames)})")
        return frames[0]
    if not 1 <= number <= len(frames):
        raise UsageError(f"{path} has no frame {number} (it holds {len(frames)})")
    return frames[number - 1]
