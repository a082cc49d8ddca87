"""Typed agent replies, and the function table built from them (dropped subprograms)."""

from __future__ import annotations

import struct

import pytest

from qstep.agent.protocol import Reply, Token
from qstep.agent.replies import (
    InfoRecords,
    LoadInfo,
    ProgInfo,
    decode_dump,
    decode_load,
    decode_prog_info,
    several_ids,
)
from qstep.bpf.btf import KIND_FUNC, Btf, BtfType
from qstep.errors import GuestError
from qstep.loaded import libbpf_functions, record_ranges

NAMES = ["main", "used", "dead", "tail"]


def btf() -> Btf:
    """Type ids 1..4 are FUNCs named as in NAMES."""
    types = [BtfType(0, 0, "", 0, False, 0)]
    types += [BtfType(i + 1, KIND_FUNC, n, 0, False, 0) for i, n in enumerate(NAMES)]
    return Btf(types, b"\0")


def reply(*lines: tuple[str, list[Token]]) -> Reply:
    return Reply(1, list(lines))


def test_load_and_info_replies_become_records() -> None:
    load = decode_load(reply(("handle", [3]), ("prog_id", [12]), ("prog_type", [6]),
                             ("insns", [bytes(16)]), ("line_info_rec_size", [16]),
                             ("line_info", [b""]), ("func_info_rec_size", [8]),
                             ("func_info", [struct.pack("<II", 0, 1)]),
                             ("map", ["stats", 5, 2, 4, 16, 16, 0, 7])))
    assert (load.handle, load.prog_id, load.prog_type, len(load.insns)) == (3, 12, 6, 16)
    assert [f.name for f in load.func_info.funcs(btf())] == ["main"]
    assert load.maps["stats"].id == 5 and load.maps["stats"].btf_value_type_id == 7
    info = decode_prog_info(reply(
        ("id", [12]), ("type", [6]), ("name", ["main"]), ("tag", [bytes.fromhex("00ff")]),
        ("xlated", [bytes(8)]), ("jited", [b"\xc3"]),
        ("jited_ksyms", [struct.pack("<Q", 0xFFFFFFFFC0000000)]),
        ("jited_func_lens", [struct.pack("<I", 1)]), ("kline_info_rec_size", [16]),
        ("kline_info", [struct.pack("<IIII", 0, 1, 2, 0)]),
        ("jited_line_info", [struct.pack("<Q", 0xFFFFFFFFC0000000)]),
        ("map_ids", [struct.pack("<2I", 5, 9)])))
    assert (info.prog_id, info.tag, info.map_ids) == (12, "00ff", [5, 9])
    assert info.jited_ksyms == [0xFFFFFFFFC0000000] and info.func_info is None
    assert [(k.insn_off, k.line_col) for k in info.kernel_lines()] == [(0, 0)]


def test_malformed_map_line_is_a_guest_error() -> None:
    with pytest.raises(GuestError, match="malformed map line"):
        decode_load(reply(("handle", [1]), ("prog_id", [1]), ("prog_type", [6]),
                          ("insns", [b""]), ("map", ["stats", 1, 2])))


def test_dump_keeps_entries_and_truncation() -> None:
    dump = decode_dump(reply(("entry", [b"k", b"v"]), ("entry", [b"k2", b"v2"]),
                             ("truncated", [1])))
    assert dump.entries == [(b"k", b"v"), (b"k2", b"v2")] and dump.truncated


def test_several_ids_reads_only_that_error() -> None:
    assert several_ids("several programs with name x: ids 4, 17") == [4, 17]
    assert several_ids("no program with name x; loaded: 4:x") == []


def prog_info(spans: list[tuple[int, int]], lens: list[int]) -> ProgInfo:
    """A kernel report for the live functions ``spans`` (original index ranges): one
    synthetic line record per instruction, 8 bytes of x86 each."""
    base = 0xFFFFFFFFC0000000
    addrs: list[int] = []
    lines: list[bytes] = []
    ksyms: list[int] = []
    for start, end in spans:
        ksyms.append(base + 8 * len(addrs))
        for index in range(start, end):
            lines.append(struct.pack("<IIII", len(lines), 0, 0, index))
            addrs.append(base + 8 * len(addrs))
    return ProgInfo(1, 6, "main", "", bytes(8 * len(addrs)), bytes(8 * len(addrs)),
                    ksyms, lens, InfoRecords(b"".join(lines), 16), addrs, [])


def load_info(starts: list[int]) -> LoadInfo:
    funcs = b"".join(struct.pack("<II", s, i + 1) for i, s in enumerate(starts))
    return LoadInfo(1, 1, 6, bytes(80), InfoRecords(), InfoRecords(funcs, 8), {})


def test_a_dropped_subprogram_is_removed_and_the_rest_keep_their_addresses() -> None:
    # main 0..3, used 4..5, dead 6..7 (dropped), tail 8..9
    load = load_info([0, 4, 6, 8])
    info = prog_info([(0, 4), (4, 6), (8, 10)], [32, 16, 16])
    live, removed = libbpf_functions(load, info, btf(), 10)
    assert [(f.name, f.start_insn, f.end_insn) for f in live] == [
        ("main", 0, 4), ("used", 4, 6), ("tail", 8, 10)]
    assert [f.addr - 0xFFFFFFFFC0000000 for f in live] == [0, 32, 48]
    assert [(f.name, f.start_insn, f.end_insn, f.removed) for f in removed] == [
        ("dead", 6, 8, True)]
    ranges = record_ranges([k.line_col for k in info.kernel_lines()], info, live)
    assert ranges[8] == (0xFFFFFFFFC0000000 + 48, 0xFFFFFFFFC0000000 + 56)
    assert 6 not in ranges


def test_nothing_dropped_pairs_in_order() -> None:
    info = prog_info([(0, 4), (4, 6), (6, 8), (8, 10)], [32, 16, 16, 16])
    live, removed = libbpf_functions(load_info([0, 4, 6, 8]), info, btf(), 10)
    assert [f.name for f in live] == NAMES and removed == []


def test_fewer_functions_without_line_info_to_tell_which_is_refused() -> None:
    info = prog_info([(0, 4), (4, 6), (8, 10)], [32, 16, 16])
    bare = ProgInfo(**{**info.__dict__, "kline_info": InfoRecords(), "jited_line_info": []})
    with pytest.raises(GuestError, match="kernel reports 3 JIT functions for 4"):
        libbpf_functions(load_info([0, 4, 6, 8]), bare, btf(), 10)
