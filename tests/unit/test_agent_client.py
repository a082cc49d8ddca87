"""The agent client's edges: every stall or protocol violation is a GuestError."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from qstep.agent.client import AgentClient
from qstep.errors import GuestError


@pytest.fixture
def pair() -> Iterator[tuple[AgentClient, socket.socket]]:
    host, guest = socket.socketpair()
    yield AgentClient(host, lambda: None, lambda: "console tail"), guest
    host.close()
    guest.close()


def test_a_peer_that_stops_reading_ends_the_send_with_a_guest_error(
        pair: tuple[AgentClient, socket.socket]) -> None:
    client, _guest = pair
    with pytest.raises(GuestError, match=r"timed out sending 'put' to the agent \(\d+ of "):
        client.request("put", "/tmp/x", bytes(8 << 20), timeout=0.3)


def test_a_silent_agent_ends_the_wait_with_a_guest_error(
        pair: tuple[AgentClient, socket.socket]) -> None:
    client, _guest = pair
    with pytest.raises(GuestError, match="timed out waiting for the agent's 'hello' reply"):
        client.request("hello", timeout=0.3)


def test_a_window_reference_without_a_window_is_a_guest_error(
        pair: tuple[AgentClient, socket.socket]) -> None:
    client, guest = pair
    guest.sendall(b"1 data s:0:100\n1 ok\n")
    with pytest.raises(GuestError, match="refers to a shared window"):
        client.request("get", "/tmp/x", timeout=5)


def test_small_blobs_go_as_hex_without_a_window(pair: tuple[AgentClient, socket.socket]) -> None:
    client, guest = pair
    guest.sendall(b"1 data x:00ff\n1 ok\n")
    assert client.request("put", "/tmp/x", bytes(300), timeout=5).blob("data") == b"\x00\xff"
    sent = guest.recv(4096)
    assert sent == b"1 put /tmp/x x:" + b"00" * 300 + b"\n"
