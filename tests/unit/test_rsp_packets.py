"""The GDB remote protocol codec (framing, run-length decoding, stop replies): no VM."""

from __future__ import annotations

import pytest

from qstep.target import open_target
from qstep.target.packets import (
    PacketError,
    PacketReader,
    StopReply,
    decode_body,
    frame,
    parse_stop_reply,
    thread_pid,
)


def test_frame_escapes_and_checksums() -> None:
    assert frame(b"g") == b"$g#67"
    assert frame(b"a#b") == b"$a}\x03b#%02x" % (sum(b"a}\x03b") & 0xFF)


@pytest.mark.parametrize("body, payload", [
    (b"0* ", b"0000"),  # ' ' = 3 repeats
    (b"ab*\"c", b"abbbbbbc"),  # '"' = 5 repeats
    (b"x}]y", b"x}y"),  # escaped '}'
    (b"}\x03}\x04}\x0a", b"#$*"),
    (b"12*!", b"122222"),  # "!" = 4 repeats
])
def test_decode_runs_then_escapes(body: bytes, payload: bytes) -> None:
    assert decode_body(body) == payload


@pytest.mark.parametrize("body", [b"*!", b"ab}", b"a*"])
def test_bad_bodies_raise(body: bytes) -> None:
    with pytest.raises(PacketError):
        decode_body(body)


def test_reader_skips_acks_and_joins_split_packets() -> None:
    reader = PacketReader()
    whole = frame(b"T05thread:01;")
    reader.feed(b"++" + whole[:9])
    assert reader.next_packet() is None
    reader.feed(whole[9:-1])  # cut inside the checksum
    assert reader.next_packet() is None
    reader.feed(whole[-1:] + b"+$OK#9a")
    assert reader.next_packet() == b"T05thread:01;"
    assert reader.next_packet() == b"OK"
    assert reader.next_packet() is None
    reader.feed(b"$OK#00")
    with pytest.raises(PacketError, match="checksum"):
        reader.next_packet()


@pytest.mark.parametrize("payload, reply", [
    (b"T05thread:01;", StopReply("T", 5, thread="01")),
    (b"S02", StopReply("S", 2)),
    (b"T05thread:01;watch:ffff888005557520;",
     StopReply("T", 5, "write", 0xFFFF888005557520, "01")),
    (b"T05thread:p01.01;rwatch:10;", StopReply("T", 5, "read", 0x10, "p01.01")),
    (b"T05awatch:20;thread:p0a.01;", StopReply("T", 5, "access", 0x20, "p0a.01")),
    (b"W00", StopReply("W", 0)),
    (b"X09", StopReply("X", 9)),
])
def test_parse_stop_replies(payload: bytes, reply: StopReply) -> None:
    assert parse_stop_reply(payload) == reply


def test_thread_pid() -> None:
    assert thread_pid("p0a.01") == 10 and thread_pid("01") is None and thread_pid(None) is None


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="rsp, gdb"):
        open_target("lldb", "/nonexistent")
