"""The DAP adapter's pure parts: message framing, hit conditions, log messages,
launch configurations."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from qstep.dap.breakpoints import HitCondition, LogMessage, UserBreakpoint
from qstep.dap.codec import ProtocolError, encode_message, read_message
from qstep.dap.launch import parse_config
from qstep.errors import UsageError

EXAMPLE = Path(__file__).parents[2] / "examples" / "l4lb"


def test_framing_round_trip_and_utf8_length() -> None:
    message = {"seq": 1, "type": "event", "event": "output", "body": {"output": "é→"}}
    wire = encode_message(message) + encode_message({"seq": 2, "type": "request"})
    body = json.dumps(message, separators=(",", ":")).encode()
    assert wire.startswith(b"Content-Length: %d\r\n\r\n" % len(body))
    stream = io.BytesIO(wire)
    assert read_message(stream) == message
    assert read_message(stream) == {"seq": 2, "type": "request"}
    assert read_message(stream) is None


@pytest.mark.parametrize("wire, error", [
    (b"Content-Type: x\r\n\r\n{}", "without Content-Length"),
    (b"Content-Length: -3\r\n\r\n", "bad Content-Length"),
    (b"Content-Length: 10\r\n\r\n{}", "ended inside a message (2 of 10 bytes)"),
    (b"Content-Length: 2\r\n\r\n[]", "not an object with a 'type'"),
    (b"Content-Length: 3\r\n\r\n{x}", "not JSON"),
    (b"Content-Length: 2\n\n{}", "not ended by CRLF"),
    (b"Content-Length: 2\r\n", "ended inside a header block"),
])
def test_framing_errors(wire: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error.replace("(", r"\(").replace(")", r"\)")):
        read_message(io.BytesIO(wire))


@pytest.mark.parametrize("text, acting", [
    ("3", [3]), ("== 3", [3]), (">= 4", [4, 5, 6]), ("> 4", [5, 6]), ("< 3", [1, 2]),
    ("<= 2", [1, 2]), ("% 2", [2, 4, 6]),
])
def test_hit_conditions(text: str, acting: list[int]) -> None:
    cond = HitCondition.parse(text)
    assert [n for n in range(1, 7) if cond.holds(n)] == acting


@pytest.mark.parametrize("text", ["", "x", ">> 2", "% 0", "-1"])
def test_bad_hit_conditions(text: str) -> None:
    with pytest.raises(UsageError, match="hit condition"):
        HitCondition.parse(text)


def test_condition_then_hit_condition() -> None:
    bp = UserBreakpoint(1, condition="c", hit_condition=HitCondition.parse("2"))
    truths = iter([True, False, True, True])
    acted = [bp.acts(lambda _: next(truths)) for _ in range(4)]
    assert acted == [False, False, True, False]  # the 2nd hit whose condition held
    assert bp.hits == 3


def test_log_message() -> None:
    log = LogMessage.parse("vip {vip_num} slot {{ {slot} }}")
    assert log.parts == (("vip ", False), ("vip_num", True), (" slot { ", False),
                         ("slot", True), (" }", False))
    values = {"vip_num": "2", "slot": "8"}
    assert log.render(values.__getitem__) == "vip 2 slot { 8 }"

    def failing(expr: str) -> str:
        raise UsageError(f"no symbol {expr}")
    assert LogMessage.parse("x={x}").render(failing) == "x=<no symbol x>"


@pytest.mark.parametrize("text", ["{", "a {} b", "b }"])
def test_bad_log_messages(text: str) -> None:
    with pytest.raises(UsageError, match="log message"):
        LogMessage.parse(text)


def test_launch_config(tmp_path: Path) -> None:
    obj = tmp_path / "prog.o"
    obj.write_bytes(b"")
    config = parse_config("launch", {
        "type": "qstep", "request": "launch", "name": "x", "program": "prog.o",
        "cwd": str(tmp_path), "packets": [str(EXAMPLE / "packets" / "ipv4_novip.hex"), "00ff"],
        "maps": str(EXAMPLE / "maps.txt"), "map": ["stats 1={packets: 2}"],
        "set": ["verbose=1"], "progType": "xdp", "kernel": "6.12", "stopOnEntry": True})
    args = config.args
    assert (args.object, args.kernel, args.accel, args.prog_type) == (obj, "6.12", "tcg", 6)
    assert args.map == [("stats", "1={packets: 2}")] and args.set == ["verbose=1"]
    assert config.packets[1] == "00ff" and config.stop_on_entry is True


def test_attach_config(tmp_path: Path) -> None:
    config = parse_config("attach", {"select": "pinned", "value": "/sys/fs/bpf/lb",
                                     "guestFiles": ["lb.o:/tmp/lb.o"], "cwd": str(tmp_path),
                                     "guestCommands": ["loader"], "packets": ["00"]})
    args = config.args
    assert (args.object, args.selector_value) == ("pinned", "/sys/fs/bpf/lb")
    assert args.guest_file == [f"{tmp_path}/lb.o:/tmp/lb.o"] and args.guest_cmd == ["loader"]


@pytest.mark.parametrize("request_, config, error", [
    ("launch", {"packets": ["00"]}, "'program' .* is required"),
    ("launch", {"program": "nope.o", "packets": ["00"]}, "'program': nope.o does not exist"),
    ("launch", {"program": "x", "packets": []}, "at least one packet"),
    ("launch", {"program": "x", "packets": "00"}, "'packets' must be a list of strings"),
    ("launch", {"program": "x", "pakets": ["00"]}, "unknown attribute\\(s\\) pakets"),
    ("launch", {"program": "x", "accel": "hvf", "packets": ["00"]}, "accel must be tcg or kvm"),
    ("attach", {"select": "label", "value": "x", "packets": ["00"]}, "'select' must be one of"),
    ("attach", {"select": "id", "packets": ["00"]}, "'value' .* is required"),
    ("launch", {"program": "x", "map": ["stats"], "packets": ["00"]}, "expected 'NAME KEY=VALUE'"),
])
def test_bad_configs(request_: str, config: dict[str, object], error: str) -> None:
    with pytest.raises(UsageError, match=error):
        parse_config(request_, config)


def test_probe_spec_of_breakpoints() -> None:
    from qstep.dap.probes import probe_spec
    from qstep.expr.ast import Str

    stop = probe_spec(UserBreakpoint(1, condition="$r1 == 2"), "f")
    assert (stop.action.stop, stop.action.prints, stop.condition is not None) == (True, (), True)
    assert stop.to_text() == "f stop if $r1 == 2"
    log = probe_spec(UserBreakpoint(2, log=LogMessage.parse("a {x} b {{c}} {$r2 + 1}")), "g")
    assert log.action.stop is False and log.condition is None
    assert [i.to_text() for i in log.action.prints] == ['"a "', "x", '" b {c} "', "$r2 + 1"]
    assert isinstance(log.action.prints[0], Str)


def test_logged_integers_read_as_print_shows_them() -> None:
    from qstep.dap.probes import value_text
    from qstep.dap.state import DapState
    from qstep.expr.ast import Reg

    state = DapState(lambda name, body: None)
    assert value_text(7, None, Reg(1), state) == "0x7 (7)"
    assert value_text((1 << 64) - 2, None, Reg(1), state) == \
        "0xfffffffffffffffe (18446744073709551614) [-2]"
    assert value_text(b"\x01\xab", None, Reg(1), state) == "01 ab"
