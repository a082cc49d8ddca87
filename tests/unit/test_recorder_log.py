import struct

import pytest

from qstep.errors import GuestError
from qstep.recorder.log import REG_NAMES, Boundary, MemAccess, parse_log


def boundary(pc: int, base: int) -> bytes:
    return struct.pack(f"<{2 + len(REG_NAMES)}Q", ord("B"), pc,
                       *(base + i for i in range(len(REG_NAMES))))


def test_boundary_and_memory_records_decode_in_order() -> None:
    data = (boundary(0xFFFFFFFFC0001000, 100)
            + struct.pack("<4Q", ord("M") | 2 << 8 | 1 << 16, 0xFFFFFFFFC0001004, 0x1000, 7)
            + struct.pack("<5Q", ord("W") | 4 << 8, 0xFFFFFFFFC0001008, 0x2000, 1, 2))
    b, store, wide = parse_log(data)
    assert isinstance(b, Boundary) and b.pc == 0xFFFFFFFFC0001000
    assert b.regs["rax"] == 100 and b.regs["rsp"] == 107 and b.regs["r15"] == 111
    assert store == MemAccess(0xFFFFFFFFC0001004, 0x1000, 4, True, 7)
    assert wide == MemAccess(0xFFFFFFFFC0001008, 0x2000, 16, False, 1 | 2 << 64)


def test_a_torn_or_unknown_record_is_an_error() -> None:
    with pytest.raises(GuestError, match="cut short at byte 0"):
        parse_log(boundary(1, 2)[:-8])
    with pytest.raises(GuestError, match="unknown record kind 0x51"):
        parse_log(b"Q" + bytes(7))


def test_an_old_value_record_goes_into_the_store_that_follows() -> None:
    data = (struct.pack("<4Q", ord("O") | 3 << 8, 0x10, 0x2000, 0x1111)
            + struct.pack("<4Q", ord("M") | 3 << 8 | 1 << 16, 0x10, 0x2000, 0x2222)
            + struct.pack("<4Q", ord("M") | 3 << 8 | 1 << 16, 0x14, 0x2000, 0x3333))
    first, second = parse_log(data)
    assert first == MemAccess(0x10, 0x2000, 8, True, 0x2222, old=0x1111)
    assert second.old is None  # no old-value record for that store
