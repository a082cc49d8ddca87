"""The agent's shared-memory window, on the host: the real agent maps a window file
(``--window``, as it maps the ivshmem BAR in the guest) and talks to the real client.

Only file verbs are used (``put``, ``get``), so no bpf() is needed.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qstep.agent.client import AgentClient, AgentError
from qstep.agent.window import ATTACHED, HostWindow
from qstep.errors import UsageError
from qstep.images.guest import build_agent

WINDOW_BYTES = 1 << 22  # rings of ~2 MiB: big blobs do not fit, to test the fallback


@dataclass
class Channel:
    client: AgentClient
    window: HostWindow
    sock: socket.socket
    proc: subprocess.Popen[bytes]


def start(tmp_path: Path, window_file: Path | None = None) -> Channel:
    window = HostWindow(tmp_path / "window", WINDOW_BYTES)
    host, guest = socket.socketpair()
    argv = [str(build_agent()), "--window", str(window_file or window.path)]
    proc = subprocess.Popen(argv, stdin=guest.fileno(), stdout=guest.fileno(),
                            stderr=subprocess.DEVNULL)
    guest.close()
    client = AgentClient(host, lambda: None, lambda: "", window)
    client.wait_ready(30)
    return Channel(client, window, host, proc)


def stop(ch: Channel) -> None:
    ch.sock.close()
    ch.proc.wait(10)
    ch.window.close()


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[Channel]:
    channel = start(tmp_path)
    yield channel
    stop(channel)


def round_trip(ch: Channel, path: Path, data: bytes) -> bytes:
    ch.client.request("put", str(path), data)
    assert path.read_bytes() == data
    return ch.client.request("get", str(path)).blob("data")


def test_the_agent_attaches_and_large_blobs_use_the_window(ch: Channel, tmp_path: Path) -> None:
    assert ch.client.use_window(True)
    assert not ch.window.path.exists()  # unlinked once the agent was up
    data = os.urandom(1 << 20)
    assert round_trip(ch, tmp_path / "blob", data) == data
    assert ch.window.guest_consumed >= len(data)
    assert ch.window.host_consumed >= len(data)


def test_many_requests_reuse_the_rings(ch: Channel, tmp_path: Path) -> None:
    for i in range(12):  # 12 x 700 KB through ~2 MiB rings
        data = os.urandom(700_000 + i)
        assert round_trip(ch, tmp_path / "blob", data) == data
    assert ch.window.guest_consumed >= 12 * 700_000
    assert ch.window.host_consumed >= 12 * 700_000


def test_a_blob_larger_than_a_ring_is_refused_and_a_reply_goes_as_hex(
        ch: Channel, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    with pytest.raises(UsageError, match=r"3145728 bytes is more than the agent channel takes "
                                         r"at once \(2095104 bytes\)"):
        ch.client.request("exec", b"x" * 200_000, data)  # nothing is left in the window
    with pytest.raises(ValueError, match="not a protocol word"):
        ch.client.request("probe_attach", 1, b"z" * 200_000, "two words")
    (tmp_path / "blob").write_bytes(data)
    assert ch.client.request("get", str(tmp_path / "blob")).blob("data") == data
    assert ch.window.guest_consumed == 0 and ch.window.host_consumed == 0
    assert round_trip(ch, tmp_path / "small", b"y" * 2_000_000) == b"y" * 2_000_000
    assert ch.window.guest_consumed >= 2_000_000  # a whole ring: none of it was taken


def test_pipelined_requests_keep_their_blobs(ch: Channel, tmp_path: Path) -> None:
    blobs = [os.urandom(500_000 + i) for i in range(3)]
    seqs = [ch.client.send("put", str(tmp_path / f"p{i}"), b) for i, b in enumerate(blobs)]
    for seq in seqs:
        ch.client.wait_reply(seq, 30)
    gets = [ch.client.send("get", str(tmp_path / f"p{i}")) for i in range(3)]
    assert [ch.client.wait_reply(seq, 30).blob("data") for seq in gets] == blobs


def test_the_hex_path_when_the_window_is_off(ch: Channel, tmp_path: Path) -> None:
    assert not ch.client.use_window(False)
    data = os.urandom(100_000)
    assert round_trip(ch, tmp_path / "blob", data) == data
    assert ch.window.guest_consumed == 0 and ch.window.host_consumed == 0


def test_bad_references_are_refused(ch: Channel) -> None:
    ch.sock.sendall(b"7 put /tmp/x s:99999999:5000000\n")
    with pytest.raises(AgentError, match="argument 2 of 'put' must be a blob"):
        ch.client.wait_reply(7, 10)


def test_without_a_valid_window_the_agent_uses_hex(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(WINDOW_BYTES))
    channel = start(tmp_path, window_file=junk)
    try:
        assert not channel.window.attached(2)
        assert not channel.client.use_window(True)
        data = os.urandom(200_000)
        assert round_trip(channel, tmp_path / "blob", data) == data
        assert junk.read_bytes()[ATTACHED:ATTACHED + 4] == bytes(4)
    finally:
        stop(channel)
