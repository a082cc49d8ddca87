"""The recorder's binary log: boundary records (registers) and memory accesses.

Every record starts with a little-endian u64 header whose low byte is the kind
(images/recorder/qstep-recorder.c describes the format).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from qstep.errors import GuestError

# The registers a boundary record holds, in order (the plugin's REG_NAMES).
REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r13", "r14",
             "r15")
_BOUNDARY = struct.Struct(f"<{2 + len(REG_NAMES)}Q")
_MEM = struct.Struct("<4Q")
_WIDE = struct.Struct("<5Q")
_VECTOR = struct.Struct("<3Q")


@dataclass(frozen=True)
class Boundary:
    """Registers before the x86 instruction at a BPF instruction's first JIT byte."""

    pc: int
    regs: dict[str, int]


@dataclass(frozen=True)
class MemAccess:
    """One load or store by an in-range x86 instruction (``old``: the bytes a store
    replaced, when the plugin could read them first)."""

    pc: int
    addr: int
    size: int
    store: bool
    value: int
    old: int | None = None


@dataclass(frozen=True)
class OldValue:
    """What the next store at ``pc`` is about to overwrite."""

    pc: int
    addr: int
    size: int
    value: int


@dataclass(frozen=True)
class Vector:
    """An interrupt or exception delivered before the in-range instruction at ``pc``,
    with the RFLAGS the CPU pushed (logged when armed with the IDT's address)."""

    pc: int
    vector: int
    pushed_flags: int


LogRecord = Boundary | MemAccess
_Raw = Boundary | MemAccess | OldValue | Vector


def parse_log(data: bytes) -> list[LogRecord]:
    """Decode a whole log; a torn or unknown record is a ``GuestError``.

    An ``OldValue`` is folded into the store that follows it at the same pc and address.
    ``Vector`` records are left out (``parse_with_vectors`` keeps them).
    """
    return [r for r in parse_with_vectors(data) if not isinstance(r, Vector)]


def parse_with_vectors(data: bytes) -> list[LogRecord | Vector]:
    """``parse_log`` with the ``Vector`` records in their places."""
    records: list[_Raw] = []
    off = 0
    while off < len(data):
        kind = data[off]
        try:
            if kind == ord("B"):
                words = _BOUNDARY.unpack_from(data, off)
                off += _BOUNDARY.size
                records.append(Boundary(words[1], dict(zip(REG_NAMES, words[2:], strict=True))))
            elif kind in (ord("M"), ord("W")):
                rec = _MEM if kind == ord("M") else _WIDE
                words = rec.unpack_from(data, off)
                off += rec.size
                value = words[3] | (words[4] << 64 if kind == ord("W") else 0)
                records.append(MemAccess(words[1], words[2], 1 << ((words[0] >> 8) & 0xFF),
                                         bool((words[0] >> 16) & 1), value))
            elif kind == ord("O"):
                words = _MEM.unpack_from(data, off)
                off += _MEM.size
                records.append(OldValue(words[1], words[2], 1 << ((words[0] >> 8) & 0xFF),
                                        words[3]))
            elif kind == ord("V"):
                words = _VECTOR.unpack_from(data, off)
                off += _VECTOR.size
                records.append(Vector(words[1], (words[0] >> 8) & 0xFF, words[2]))
            else:
                raise GuestError(f"recorder log: unknown record kind {kind:#x} at {off}")
        except struct.error:
            raise GuestError(f"recorder log: record cut short at byte {off}") from None
    return _with_old_values(records)


def _with_old_values(records: list[_Raw]) -> list[LogRecord | Vector]:
    out: list[LogRecord | Vector] = []
    pending: OldValue | None = None
    for rec in records:
        if isinstance(rec, OldValue):
            pending = rec
            continue
        if (isinstance(rec, MemAccess) and rec.store and pending is not None
                and (pending.pc, pending.addr, pending.size) == (rec.pc, rec.addr, rec.size)):
            rec = replace(rec, old=pending.value)
            pending = None
        out.append(rec)
    return out
