"""``qstep dap`` as a process, without a guest: the handshake and bad launch
configurations (answered with a one-line error; the adapter keeps serving)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from qstep.dap.codec import encode_message, read_message

QSTEP = str(Path(sys.executable).parent / "qstep")


def _exchange(requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    wire = b"".join(encode_message({"seq": n, "type": "request", "command": c, "arguments": a})
                    for n, (c, a) in enumerate(requests, start=1))
    proc = subprocess.run([QSTEP, "dap"], input=wire, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    stream = __import__("io").BytesIO(proc.stdout)
    out = []
    while (message := read_message(stream)) is not None:
        out.append(message)
    return out


def test_bad_launch_configurations_are_one_line_errors(tmp_path: Path) -> None:
    replies = _exchange([
        ("initialize", {"adapterID": "qstep"}),
        ("launch", {"program": str(tmp_path / "missing.o"), "packets": ["00"]}),
        ("launch", {"program": "x.o"}),
        ("stackTrace", {"threadId": 1}),
        ("bogus", {}),
        ("disconnect", {}),
    ])
    responses = [m for m in replies if m["type"] == "response"]
    assert [r["command"] for r in responses] == ["initialize", "launch", "launch",
                                                 "stackTrace", "bogus", "disconnect"]
    assert responses[0]["body"]["supportsLogPoints"] is True
    assert [r["success"] for r in responses] == [True, False, False, False, False, True]
    assert responses[1]["message"] == f"'program': {tmp_path / 'missing.o'} does not exist"
    assert responses[2]["message"] == ("launch: 'packets' needs at least one packet "
                                       "(a file or hex)")
    assert responses[3]["message"] == "no program is being debugged (launch first)"
    assert responses[4]["message"] == "request 'bogus' is not supported"
    assert [r["request_seq"] for r in responses] == [1, 2, 3, 4, 5, 6]


def test_port_mode_on_loopback_with_an_os_assigned_port() -> None:
    proc = subprocess.Popen([QSTEP, "dap", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        host, port = line.rsplit(" ", 1)[1].strip().split(":")
        assert line.startswith("qstep dap listening on ") and host == "127.0.0.1"
        with socket.create_connection((host, int(port)), timeout=30) as conn, \
                conn.makefile("rb") as reader:
            conn.sendall(encode_message({"seq": 1, "type": "request", "command": "initialize",
                                         "arguments": {"adapterID": "qstep"}}))
            reply = read_message(reader)
            assert reply is not None and reply["success"] is True
            assert reply["body"]["supportsConditionalBreakpoints"] is True
        assert proc.wait(timeout=30) == 0  # the client left: the server ends
    finally:
        if proc.poll() is None:
            proc.kill()
