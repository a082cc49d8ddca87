"""A minimal writer for the cpio "newc" format the kernel unpacks as initramfs."""

from __future__ import annotations

import stat
from dataclasses import dataclass

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member: a regular file, directory or symlink."""

    name: str
    mode: int
    data: bytes = b""


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: Entry) -> bytes:
    name = entry.name.encode() + b"\0"
    fields = [ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, 0, 0, len(name), 0]
    head = NEWC_MAGIC + b"".join(b"%08x" % f for f in fields) + name
    return head + _pad4(len(head))


def write_newc(entries: list[Entry]) -> bytes:
    """Serialise entries (parents before children) into a newc archive."""
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry(TRAILER, 0)], start=1):
        out += _header(ino, entry)
        out += entry.data + _pad4(len(entry.data))
    return bytes(out)


def directory(name: str) -> Entry:
    return Entry(name, stat.S_IFDIR | 0o755)


def regular(name: str, data: bytes, executable: bool = False) -> Entry:
    return Entry(name, stat.S_IFREG | (0o755 if executable else 0o644), data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())
