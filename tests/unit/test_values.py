"""qstep.bpf.values: typed map keys/values <-> bytes through BTF."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import clang_bpf
from hypothesis import given, settings
from hypothesis import strategies as st

from qstep.bpf.elf import BpfObject
from qstep.bpf.values import format_value, parse_value, parse_value_sized, split_key_value
from qstep.errors import UsageError

SRC = Path(__file__).parent / "bpf_src"


def compile_bpf(out_dir: Path, name: str) -> Path:
    """Compile tests/unit/bpf_src/NAME.c into out_dir."""
    return clang_bpf(SRC / f"{name}.c", out_dir / f"{name}.o")


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> BpfObject:
    return BpfObject.open(compile_bpf(tmp_path_factory.mktemp("values"), "multi"))


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> BpfObject:
    return BpfObject.open(compile_bpf(tmp_path_factory.mktemp("values"), "kinds"))


def type_id(obj: BpfObject, name: str, kind: str = "STRUCT") -> int:
    t = obj.btf.find_by_name(name, kind)
    assert t is not None
    return t.id


KEY = "{saddr: 10.0.0.1, daddr: 10.0.0.2, sport: 80, dport: 0x1f90, proto: 6, flags: 5, kind: 31}"


def test_struct_key_bytes(multi: BpfObject) -> None:
    data = parse_value(KEY, multi.btf, type_id(multi, "flow_key"))
    assert data == bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 0x1F, 0x90, 6, 5 | (31 << 3), 0, 0])
    assert format_value(data, multi.btf, type_id(multi, "flow_key")) == KEY.replace(
        "0x1f90", "8080")


def test_missing_fields_are_zero(multi: BpfObject) -> None:
    assert parse_value("{proto: 17}", multi.btf, type_id(multi, "flow_key")) == \
        bytes(12) + b"\x11" + bytes(3)
    assert parse_value("{}", multi.btf, type_id(multi, "flow_key")) == bytes(16)


def test_struct_value_strings_ipv6_negative(multi: BpfObject) -> None:
    vid = type_id(multi, "flow_val")
    data = parse_value('{packets: 1, bytes: -1, name: "eth0", addr6: fe80::1}', multi.btf, vid)
    assert data[:8] == struct.pack("<Q", 1) and data[8:16] == b"\xff" * 8
    assert data[16:24] == b"eth0\0\0\0\0"
    assert data[24:] == bytes.fromhex("fe800000000000000000000000000001")
    assert format_value(data, multi.btf, vid) == \
        '{packets: 1, bytes: 18446744073709551615, name: "eth0", addr6: fe80::1}'
    arr = parse_value("{addr6: [1, 2, 3, 0xffffffff]}", multi.btf, vid)
    assert arr[24:] == struct.pack("<4I", 1, 2, 3, 0xFFFFFFFF)
    hexed = parse_value("{name: x:0102030405060708}", multi.btf, vid)
    assert format_value(hexed, multi.btf, vid).count("name: x:0102030405060708") == 1


@pytest.mark.parametrize(("text", "message"), [
    ("{sport: 70000}", "map key: field 'sport': 70000 does not fit in 2 bytes"),
    ("{proto: -129}", "field 'proto': -129 does not fit in 1 bytes"),
    ("{flags: 8}", "field 'flags': 8 does not fit in 3 bits"),
    ("{port: 1}", "unknown field 'port' \\(fields: saddr, daddr, sport, dport, proto, flags, "
                  "kind\\)"),
    ("{saddr: ::1}", "field 'saddr': an IPv6 address does not fit a 4-byte value"),
    ("{saddr: x:0102}", "field 'saddr': 2 hex bytes does not fit a 4-byte value"),
    ("{saddr: x:123}", "bad hex bytes"),
    ("{saddr: [1]}", "field 'saddr': expected an integer, not a \\[...\\] array"),
    ("{proto: tcp}", "'tcp' is not an integer"),
    ("7", "expected \\{field: value, ...\\} for a struct"),
    ("{proto: 1", "expected '}', found end of text"),
    ("{proto: 1} 2", "unexpected '2' after the value"),
    ("{1: 2}", "expected a field name"),
    ('{proto: "x}', "unterminated string"),
])
def test_errors(multi: BpfObject, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_value(text, multi.btf, type_id(multi, "flow_key"), what="map key")


def test_array_and_string_errors(multi: BpfObject) -> None:
    vid = type_id(multi, "flow_val")
    with pytest.raises(UsageError, match="field 'name': string of 9 bytes does not fit in 8"):
        parse_value('{name: "123456789"}', multi.btf, vid)
    with pytest.raises(UsageError, match="5 elements given, the array has 4"):
        parse_value("{addr6: [1, 2, 3, 4, 5]}", multi.btf, vid)
    with pytest.raises(UsageError, match=r"field 'addr6'\[1\]: -1 does not fit|addr6.*\[1\]"):
        parse_value("{addr6: [1, 0x100000000]}", multi.btf, vid)
    with pytest.raises(UsageError, match="a string needs a char array"):
        parse_value('{addr6: "abc"}', multi.btf, vid)
    with pytest.raises(UsageError, match="bad escape"):
        parse_value('{name: "\\q"}', multi.btf, vid)


def test_string_escapes(multi: BpfObject) -> None:
    vid = type_id(multi, "flow_val")
    data = parse_value('{name: "a\\"\\\\\\n\\x41"}', multi.btf, vid)
    assert data[16:24] == b'a"\\\nA\0\0\0'


def test_kinds_enums_unions_floats_anonymous(kinds: BpfObject) -> None:
    sid = type_id(kinds, "shape")
    data = parse_value("{ratio: 1.5, area: -2, size: BIG_HUGE, color: BLUE, v4: 192.168.0.1,"
                       " parts: {lo: 1, hi: 2}, grid: [[1, 2, 3], [4]], cb: 0x10, name: 5}",
                       kinds.btf, sid)
    assert struct.unpack_from("<f", data, 0)[0] == 1.5
    assert struct.unpack_from("<d", data, 8)[0] == -2.0
    assert struct.unpack_from("<Q", data, 16)[0] == 1 << 32
    assert struct.unpack_from("<i", data, 24)[0] == -2
    assert data[28:32] == bytes([192, 168, 0, 1])
    assert struct.unpack_from("<HH", data, 32) == (1, 2)
    assert struct.unpack_from("<6i", data, 36) == (1, 2, 3, 4, 0, 0)
    text = format_value(data, kinds.btf, sid)
    assert text.startswith("{ratio: 1.5, area: -2.0, size: BIG_HUGE, color: BLUE, v4: ")
    assert "grid: [[1, 2, 3], [4, 0, 0]]" in text and "cb: 16" in text
    assert parse_value(text, kinds.btf, sid) == data
    with pytest.raises(UsageError, match="or one of: RED, GREEN, BLUE"):
        parse_value("{color: PURPLE}", kinds.btf, sid)
    with pytest.raises(UsageError, match="floating point"):
        parse_value("{ratio: abc}", kinds.btf, sid)
    with pytest.raises(UsageError, match="out of range for a 4-byte float"):
        parse_value("{ratio: 1e300}", kinds.btf, sid)
    with pytest.raises(UsageError, match="unknown field 'zz'.*v4, bytes, parts"):
        parse_value("{zz: 1}", kinds.btf, sid)


def test_global_data_section_value(multi: BpfObject) -> None:
    bss = multi.find_map(".bss")
    assert bss.value_type_id is not None
    data = parse_value("{hits: 5}", multi.btf, bss.value_type_id)
    assert data == struct.pack("<Q", 5)
    assert format_value(data, multi.btf, bss.value_type_id) == "{hits: 5}"


def test_format_addresses_by_name(multi: BpfObject) -> None:
    u32 = multi.btf.find_by_name("__u32", "TYPEDEF")
    assert u32 is not None
    ip = bytes([10, 1, 2, 3])
    assert format_value(ip, multi.btf, u32.id, name="dst_ip") == "10.1.2.3"
    assert format_value(ip, multi.btf, u32.id, name="count") == str(int.from_bytes(ip, "little"))
    assert format_value(b"\0", multi.btf, u32.id) == "x:00"  # wrong size: raw bytes


def test_parse_value_sized() -> None:
    assert parse_value_sized("0x0102", 4) == bytes([2, 1, 0, 0])
    assert parse_value_sized("-1", 2) == b"\xff\xff"
    assert parse_value_sized("x:deadbeef", 4) == bytes.fromhex("deadbeef")
    assert parse_value_sized("1.2.3.4", 4) == bytes([1, 2, 3, 4])
    assert parse_value_sized("::1", 16) == bytes(15) + b"\1"
    assert parse_value_sized("aa:bb:cc:dd:ee:ff", 6) == bytes.fromhex("aabbccddeeff")
    assert parse_value_sized("0b101", 1) == b"\5"
    assert parse_value_sized("010", 1) == b"\x0a"
    with pytest.raises(UsageError, match="key: 256 does not fit in 1 bytes"):
        parse_value_sized("256", 1, what="key")
    with pytest.raises(UsageError, match="only an integer"):
        parse_value_sized("{a: 1}", 4)
    with pytest.raises(UsageError, match="not an integer"):
        parse_value_sized("eth0", 4)


@pytest.mark.parametrize(("text", "expected"), [
    ("1=2", ("1", "2")),
    (" {a: 1} = {b: 2} ", ("{a: 1}", "{b: 2}")),
    ('{s: "a=b"}={x: [1]}', ('{s: "a=b"}', "{x: [1]}")),
    ('{s: "q\\"="}=3', ('{s: "q\\"="}', "3")),
    ("[1,2]=x:00", ("[1,2]", "x:00")),
])
def test_split_key_value(text: str, expected: tuple[str, str]) -> None:
    assert split_key_value(text) == expected


@pytest.mark.parametrize("text", ["1", "=2", "1=", "{a=1}", '"a=b"'])
def test_split_key_value_errors(text: str) -> None:
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        split_key_value(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('{}[]":,=x0123456789abcdef.-_ \\sportdaddr')),
               max_size=40) | st.text(max_size=20))
def test_fuzz_parse_only_usage_errors(multi: BpfObject, kinds: BpfObject, text: str) -> None:
    targets = [(multi.btf, type_id(multi, "flow_key")), (multi.btf, type_id(multi, "flow_val")),
               (kinds.btf, type_id(kinds, "shape"))]
    for btf, tid in targets:
        try:
            data = parse_value(text, btf, tid)
        except UsageError:
            continue
        assert len(data) == btf.size_of(tid)
    try:
        parse_value_sized(text, 4)
        split_key_value(text)
    except UsageError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=40, max_size=40))
def test_fuzz_format_roundtrip(multi: BpfObject, key: bytes, value: bytes) -> None:
    btf = multi.btf
    for data, tid in ((key, type_id(multi, "flow_key")), (value, type_id(multi, "flow_val"))):
        text = format_value(data, btf, tid)
        again = parse_value(text, btf, tid)
        assert format_value(again, btf, tid) == text
