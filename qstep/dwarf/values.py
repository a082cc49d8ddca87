"""Reading a variable's bytes from its DWARF location on a stopped program."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qstep.dwarf.location import Location, MachineState, PieceValue, Unavailable, evaluate_piece
from qstep.dwarf.types import CType
from qstep.errors import QstepError

OPTIMIZED_OUT = "optimized out"


@dataclass(frozen=True)
class Value:
    """Bytes of an object of ``type``; ``valid[i]`` says whether byte i is known."""

    type: CType
    data: bytes
    valid: tuple[bool, ...]
    address: int | None = None  # the whole object is in memory there
    reason: str = ""  # why some bytes are unknown

    @property
    def available(self) -> bool:
        return all(self.valid)

    @property
    def unavailable(self) -> bool:
        return not any(self.valid)

    def part(self, offset: int, size: int, ctype: CType) -> Value:
        """A sub-object (member, element) of this value."""
        addr = self.address + offset if self.address is not None else None
        return Value(ctype, self.data[offset:offset + size], self.valid[offset:offset + size],
                     addr, self.reason)

    def as_int(self) -> int:
        """The bytes as a little-endian integer, signed if the type is."""
        value = int.from_bytes(self.data, "little")
        bits = len(self.data) * 8
        if self.type.is_signed and bits and value >> (bits - 1):
            value -= 1 << bits
        return value


def unavailable(ctype: CType, reason: str = OPTIMIZED_OUT) -> Value:
    size = ctype.byte_size
    return Value(ctype, bytes(size), (False,) * size, None, reason)


def in_memory(ctype: CType, address: int, state: MachineState) -> Value:
    """An object at a known address (globals, ``*ptr``)."""
    size = ctype.byte_size
    try:
        return Value(ctype, state.mem(address, size), (True,) * size, address)
    except QstepError as err:
        return Value(ctype, bytes(size), (False,) * size, address,
                     f"cannot read memory at {address:#x}: {err}")


def read_value(loc: Location | None, ctype: CType, state: MachineState) -> Value:
    """The value of a variable of type ``ctype`` at ``loc`` (None: optimized out)."""
    if loc is None:
        return unavailable(ctype)
    size = ctype.byte_size
    data, valid = bytearray(), []
    reasons: list[str] = []
    addrs: list[int | None] = []
    spans: list[tuple[int, int, int]] = []  # (memory address, size, offset in the value)
    for piece in loc.pieces:
        want = piece.size if piece.size is not None else size - len(data)
        chunk, ok, addr = _piece_bytes(piece.ops, want, state, reasons)
        addrs.append(None if addr is None else addr - len(data))
        if addr is not None:
            spans.append((addr, want, len(data)))
        data += chunk
        valid += ok
    _drop_shared_slots(spans, valid, reasons)
    # In memory as a whole when every piece is memory, contiguous from one start.
    whole = len(data) >= size and all(a == addrs[0] for a in addrs)
    address = addrs[0] if addrs and whole else None
    data, valid = data[:size], valid[:size]
    missing = size - len(data)
    data += bytes(missing)
    valid += [False] * missing
    return Value(ctype, bytes(data), tuple(valid), address, "; ".join(dict.fromkeys(reasons)))


def _drop_shared_slots(spans: list[tuple[int, int, int]], valid: list[bool],
                       reasons: list[str]) -> None:
    """Two parts of one variable said to be at overlapping memory: the compiler reused
    a stack slot and kept describing the older part there (clang-19 does, for spilled
    scalar-replaced structs). At most one of them is current, and DWARF does not say
    which: neither is shown."""
    for i, (a, n, off) in enumerate(spans):
        for b, m, off2 in spans[i + 1:]:
            if a < b + m and b < a + n:
                for start, length in ((off, n), (off2, m)):
                    valid[start:start + length] = [False] * length
                reasons.append(f"its bytes {off}-{off + n - 1} and {off2}-{off2 + m - 1} are "
                               f"described at one stack slot ({max(a, b):#x}): the compiler "
                               "reused it")


def _piece_bytes(ops: tuple[Any, ...], want: int, state: MachineState,
                 reasons: list[str]) -> tuple[bytes, list[bool], int | None]:
    try:
        pv = evaluate_piece(ops, state)
        if pv.kind == "mem":
            return state.mem(pv.value, want), [True] * want, pv.value
        raw = _raw(pv)
    except Unavailable as why:
        reasons.append(str(why))
        return bytes(want), [False] * want, None
    except QstepError as err:
        reasons.append(str(err))
        return bytes(want), [False] * want, None
    chunk = raw[:want]
    ok = [True] * len(chunk) + [False] * (want - len(chunk))
    if len(chunk) < want:
        reasons.append(f"only {len(chunk)} of {want} bytes are in a register")
    return chunk + bytes(want - len(chunk)), ok, None


def _raw(pv: PieceValue) -> bytes:
    if pv.kind == "bytes":
        return pv.data
    return pv.value.to_bytes(8, "little")
