"""qstep.dwarf.format and qstep.dwarf.values on types and bytes built by hand."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from qstep.dwarf.format import check_format, decode, format_value
from qstep.dwarf.location import Location, Op, Piece
from qstep.dwarf.types import (
    ARRAY,
    ATE_SIGNED,
    ATE_SIGNED_CHAR,
    ATE_UNSIGNED,
    ATE_UNSIGNED_CHAR,
    BASE,
    CONST,
    ENUM,
    POINTER,
    STRUCT,
    TYPEDEF,
    CType,
    Member,
)
from qstep.dwarf.values import Value, read_value, unavailable
from qstep.errors import UsageError

U8 = CType(BASE, "unsigned char", 1, ATE_UNSIGNED_CHAR)
CHAR = CType(BASE, "char", 1, ATE_SIGNED_CHAR)
U16 = CType(BASE, "unsigned short", 2, ATE_UNSIGNED)
U32 = CType(BASE, "unsigned int", 4, ATE_UNSIGNED)
INT = CType(BASE, "int", 4, ATE_SIGNED)
BE32 = CType(TYPEDEF, "__be32", target=CType(TYPEDEF, "__u32", target=U32))
BYTE = CType(TYPEDEF, "__u8", target=U8)
ACTION = CType(ENUM, "action", 4, ATE_UNSIGNED, enumerators=[("ACT_DROP", 1), ("ACT_PASS", 2)])
META = CType(STRUCT, "meta", 8, members=[
    Member("len", U32, 0), Member("version", BYTE, 0, 32, 4), Member("ihl", BYTE, 0, 36, 4),
    Member("ttl", BYTE, 5), Member("delta", CType(BASE, "short", 2, ATE_SIGNED), 0, 48, 3)])


def val(t: CType, data: bytes) -> Value:
    return Value(t, data, (True,) * len(data))


def test_scalars_enums_and_ips() -> None:
    assert format_value(val(INT, struct.pack("<i", -5))) == "-5"
    assert format_value(val(INT, struct.pack("<i", -5)), fmt="x") == "0xfffffffb"
    assert format_value(val(U32, struct.pack("<I", 7)), fmt="t") == "111"
    assert format_value(val(CHAR, b"A")) == "65 'A'"
    assert format_value(val(BYTE, b"A")) == "65"
    assert format_value(val(ACTION, struct.pack("<I", 2))) == "ACT_PASS"
    assert format_value(val(ACTION, struct.pack("<I", 9))) == "9 (not an enumerator of enum action)"
    addr = bytes([10, 0, 0, 1])
    assert format_value(val(BE32, addr), "saddr") == "10.0.0.1"
    assert format_value(val(BE32, addr), "count") == str(int.from_bytes(addr, "little"))
    assert format_value(val(U32, addr), fmt="i") == "10.0.0.1"
    v6 = CType(ARRAY, target=BYTE, counts=(16,))
    assert format_value(val(v6, bytes(15) + b"\1"), "dstv6") == "::1"
    words = CType(ARRAY, target=BE32, counts=(4,))  # __be32 dstv6[4]
    packed = ipaddress.ip_address("2001:db8::2").packed
    assert format_value(val(words, packed), "dstv6") == "2001:db8::2"
    assert format_value(val(words, packed), "hits") == "{3087860000, 0, 0, 33554432}"
    mac = CType(ARRAY, target=BYTE, counts=(6,))
    assert format_value(val(mac, bytes.fromhex("020000000a02")), "mac") == "02:00:00:00:0a:02"
    with pytest.raises(UsageError):
        format_value(val(U16, b"\0\0"), fmt="i")
    with pytest.raises(UsageError):
        check_format("q")


def test_structs_bitfields_arrays_strings_pointers() -> None:
    data = struct.pack("<IBBh", 1500, 0x54, 64, -3 & 0x7)
    assert format_value(val(META, data)) == (
        "{len = 1500, version = 4, ihl = 5, ttl = 64, delta = -3}")
    assert decode(val(META, data)) == {"len": 1500, "version": 4, "ihl": 5, "ttl": 64,
                                       "delta": -3}
    name = CType(ARRAY, target=CHAR, counts=(8,))
    assert format_value(val(name, b"qstep\0\0\0")) == '"qstep"'
    grid = CType(ARRAY, target=U16, counts=(2, 3))
    assert format_value(val(grid, struct.pack("<6H", 1, 2, 3, 4, 5, 6))) == (
        "{{1, 2, 3}, {4, 5, 6}}")
    ptr = CType(POINTER, size=8, target=CType(CONST, target=META))
    assert format_value(val(ptr, struct.pack("<Q", 0xFFFF8880DEAD0000))) == (
        "(const struct meta *) 0xffff8880dead0000")


def test_unavailable_parts() -> None:
    assert format_value(unavailable(U32)) == "<optimized out>"
    half = Value(META, bytes(8), (True,) * 4 + (False,) * 4, None, "optimized out")
    assert format_value(half) == ("{len = 0, version = <optimized out>, ihl = <optimized out>,"
                                  " ttl = <optimized out>, delta = <optimized out>}")


class State:
    stack_size = 16

    def reg(self, n: int) -> int:
        return {1: 0x1122334455667788, 10: 0x1000}[n]

    def mem(self, addr: int, size: int) -> bytes:
        return bytes((addr + i) & 0xFF for i in range(size))

    def entry_reg(self, n: int) -> int | None:
        return 0xAB if n == 2 else None


PAIR = CType(STRUCT, "pair", 8, members=[Member("lo", U32, 0), Member("hi", U32, 4)])


def loc(*pieces: tuple[int | None, tuple[Op, ...]]) -> Location:
    return Location(tuple(Piece(size, ops) for size, ops in pieces))


def test_read_value_pieces_conventions_and_entry_values() -> None:
    # clang-19: fbreg +4 is r10 - 16 + 4; the fixed convention writes fbreg -12.
    old = read_value(loc((None, (Op("fbreg", (4,)),))), U32, State())
    new = read_value(loc((None, (Op("fbreg", (-12,)),))), U32, State())
    assert old.address == new.address == 0x1000 - 12
    assert old.data == new.data == bytes([0xF4, 0xF5, 0xF6, 0xF7])
    split = read_value(loc((4, (Op("reg", (1,)),)), (4, ())), PAIR, State())
    assert format_value(split) == "{lo = 1432778632, hi = <optimized out>}"
    assert split.reason == "optimized out"
    const = read_value(loc((None, (Op("lit", (7,)), Op("stack_value")))), U32, State())
    assert decode(const) == 7
    conv = read_value(loc((None, (Op("breg", (1, 0)), Op("convert", (16, False)),
                                  Op("convert", (32, False)), Op("stack_value")))), U32, State())
    assert decode(conv) == 0x7788
    entry = read_value(loc((None, (Op("entry_value", ((Op("reg", (2,)),),)),
                                   Op("stack_value")))), U32, State())
    assert decode(entry) == 0xAB
    missing = read_value(loc((None, (Op("entry_value", ((Op("reg", (3,)),),)),
                                     Op("stack_value")))), U32, State())
    assert format_value(missing).startswith("<unavailable: needs r3 at the function's entry")
    assert loc((4, (Op("reg", (9,)),)), (4, ())).describe(16) == "{r9:4, ?:4}"
    assert loc((None, (Op("fbreg", (4,)),))).describe(16) == "[r10-12]"


def test_parts_described_at_one_stack_slot_are_not_shown() -> None:
    """clang-19 kept describing a spilled struct member at a slot it reused for another
    member (pktwalk.bpf.c's w.vlan[1] and w.udp_len at fp-8): neither is shown."""
    trio = CType(STRUCT, "trio", 6, members=[Member("a", U16, 0), Member("b", U16, 2),
                                             Member("c", U16, 4)])
    slot = (Op("breg", (10, -8)),)
    shared = read_value(loc((2, (Op("breg", (10, -16)),)), (2, slot), (2, slot)), trio, State())
    why = "its bytes 2-3 and 4-5 are described at one stack slot (0xff8): the compiler reused it"
    assert format_value(shared) == (f"{{a = 61936, b = <unavailable: {why}>, "
                                    f"c = <unavailable: {why}>}}")
    assert shared.reason == why
    apart = read_value(loc((2, (Op("breg", (10, -16)),)), (2, slot),
                           (2, (Op("breg", (10, -4)),))), trio, State())
    assert format_value(apart) == "{a = 61936, b = 63992, c = 65020}"  # bytes of 0xff0...

