"""Host side of the shared-memory window: a file QEMU maps into the guest.

QEMU exposes the file as the BAR2 of an ivshmem-plain PCI device; the agent maps
that BAR through sysfs. Large blobs of requests and replies travel through it
and the serial line carries ``s:POS:LEN`` references (docs/agent-protocol.md).

Layout (little-endian): a 4096-byte header, then the host→guest ring, then the
guest→host ring, each ``ring_size`` bytes.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from qstep.agent.protocol import SharedRef
from qstep.agent.ring import RingProducer, ring_offset

MAGIC = b"QSTEPWIN"
LAYOUT = 1
HEADER_SIZE = 4096
HEADER_FMT = "<8sIIQQQ"  # magic, layout, header size, ring size, h2g offset, g2h offset
H2G_TAIL = 64    # u64, written by the agent: host→guest blobs consumed up to here
G2H_TAIL = 128   # u64, written by the host: guest→host blobs consumed up to here
ATTACHED = 192   # u32, written by the agent: its protocol version once it mapped the window
ENABLED = 196    # u32, written by the host: 1 = the agent may put reply blobs here


class HostWindow:
    """Creates the window file, writes its header and moves blobs in and out."""

    def __init__(self, path: Path, size: int) -> None:
        if size & (size - 1) or size < 2 * HEADER_SIZE:
            raise ValueError(f"window size {size} is not a power of two >= 8 KiB")
        self.path, self.size = path, size
        self.ring_size = (size - HEADER_SIZE) // 2
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        struct.pack_into(HEADER_FMT, self._map, 0, MAGIC, LAYOUT, HEADER_SIZE,
                         self.ring_size, HEADER_SIZE, HEADER_SIZE + self.ring_size)
        self._out = RingProducer(self.ring_size)

    def attached(self, version: int) -> bool:
        """True once an agent speaking ``version`` has mapped the window."""
        return bool(self._u32(ATTACHED) == version)

    def enable(self, on: bool) -> None:
        """Let the agent put reply blobs in the window (or make it send them as hex)."""
        struct.pack_into("<I", self._map, ENABLED, int(on))

    def put(self, data: bytes) -> SharedRef | None:
        """Copy ``data`` into the host→guest ring; None if it does not fit now."""
        pos = self._out.place(len(data), self._u64(H2G_TAIL))
        if pos is None:
            return None
        start = HEADER_SIZE + pos % self.ring_size
        self._map[start:start + len(data)] = data
        return SharedRef(pos, len(data))

    def take(self, ref: SharedRef) -> bytes:
        """Copy a guest→host blob out and free its space; ValueError if ``ref`` is bad."""
        start = HEADER_SIZE + self.ring_size + ring_offset(ref, self.ring_size)
        data = self._map[start:start + ref.length]
        struct.pack_into("<Q", self._map, G2H_TAIL, ref.pos + ref.length)
        return data

    @property
    def guest_consumed(self) -> int:
        """Ring position up to which the agent has taken the host's blobs."""
        return self._u64(H2G_TAIL)

    @property
    def host_consumed(self) -> int:
        """Ring position up to which the host has taken the agent's blobs."""
        return self._u64(G2H_TAIL)

    def unlink(self) -> None:
        """Remove the file once both sides have mapped it: the memory lives on in the
        mappings and goes away with them, even if the host is killed."""
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._map.close()

    def _u32(self, offset: int) -> int:
        value: int = struct.unpack_from("<I", self._map, offset)[0]
        return value

    def _u64(self, offset: int) -> int:
        value: int = struct.unpack_from("<Q", self._map, offset)[0]
        return value
