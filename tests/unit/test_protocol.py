import pytest

from qstep.agent.protocol import Reply, SharedRef, encode_request, parse_reply_line


def test_request_encoding_of_each_token_kind() -> None:
    assert encode_request(7, "load", b"\x01\xff", "prog_a", 3) == b"7 load x:01ff prog_a 3\n"
    assert encode_request(1, "run", b"") == b"1 run x:\n"


@pytest.mark.parametrize("bad", ["two words", "x:ab", "", "semi;colon"])
def test_words_that_could_break_framing_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        encode_request(1, "load", bad)


def test_reply_lines_decode_ints_blobs_and_words() -> None:
    line = parse_reply_line("3 map stats 12 2 4 16 16 0 5")
    assert (line.seq, line.key) == (3, "map")
    assert line.values == ["stats", 12, 2, 4, 16, 16, 0, 5]
    assert parse_reply_line("3 data_out x:00ff").values == [b"\x00\xff"]
    assert parse_reply_line("3 data_out x:").values == [b""]


def test_err_keeps_the_raw_message() -> None:
    line = parse_reply_line("9 err unknown program 'x'; available: a, b")
    assert line.key == "err" and line.rest == "unknown program 'x'; available: a, b"


def test_malformed_line_is_rejected() -> None:
    with pytest.raises(ValueError):
        parse_reply_line("READY")


def test_reply_accessors() -> None:
    reply = Reply(1, [("retval", [3]), ("data_out", [b"ab"]), ("entry", [b"k", b"v"]),
                      ("entry", [b"k2", b"v2"])])
    assert reply.int("retval") == 3
    assert reply.blob("data_out") == b"ab"
    assert reply.all("entry") == [[b"k", b"v"], [b"k2", b"v2"]]
    with pytest.raises(KeyError):
        reply.get("missing")
    with pytest.raises(TypeError):
        reply.blob("retval")


def test_shared_window_references_encode_and_decode() -> None:
    assert encode_request(2, "put", "/tmp/f", SharedRef(4096, 70)) == b"2 put /tmp/f s:4096:70\n"
    assert parse_reply_line("2 data s:8192:100 x:01").values == [SharedRef(8192, 100), b"\x01"]


@pytest.mark.parametrize("text", ["s:", "s:1", "s:1:", "s:x:2", "s:1:2:3"])
def test_malformed_references_stay_words(text: str) -> None:
    assert parse_reply_line(f"1 name {text}").values == [text]


def test_words_that_look_like_references_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_request(1, "find_prog", "name", "s:1:2")
