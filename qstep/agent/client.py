"""Host side of the agent channel: send a request, collect its reply by sequence number."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from qstep.agent.protocol import (
    PROTOCOL_VERSION,
    READY_RE,
    Reply,
    Token,
    encode_request,
    parse_reply_line,
)
from qstep.errors import GuestError

POLL = 0.25


class AgentError(Exception):
    """The agent answered ``err``; ``reply`` holds the lines sent before it."""

    def __init__(self, message: str, reply: Reply) -> None:
        super().__init__(message)
        self.reply = reply


class AgentClient:
    """Talks protocol v1 over a connected stream socket.

    ``check_alive`` is called whenever the channel is quiet, so a crashed or
    vanished guest ends a wait at once instead of at its timeout.
    """

    def __init__(self, sock: socket.socket, check_alive: Callable[[], None],
                 console_tail: Callable[[], str]) -> None:
        self._sock = sock
        self._sock.settimeout(POLL)
        self._buf = bytearray()
        self._seq = 0
        self._check_alive = check_alive
        self._console_tail = console_tail
        self.kernel_release = ""

    def wait_ready(self, timeout: float) -> str:
        """Wait for the READY line; return the guest kernel release."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._read_line(deadline, "the agent to start (boot)")
            match = READY_RE.match(line.strip())
            if not match:
                continue  # noise before the agent opened the port
            if int(match.group(1)) != PROTOCOL_VERSION:
                raise GuestError(f"agent speaks protocol {match.group(1)}, "
                                 f"qstep speaks {PROTOCOL_VERSION}; rebuild the guest image")
            self.kernel_release = match.group(2)
            return self.kernel_release

    def request(self, verb: str, *args: Token, timeout: float = 60.0) -> Reply:
        """Send one request and return its reply; raise ``AgentError`` on ``err``."""
        self._seq += 1
        seq = self._seq
        self._sock.sendall(encode_request(seq, verb, *args))
        reply = Reply(seq)
        deadline = time.monotonic() + timeout
        while True:
            parsed = parse_reply_line(self._read_line(deadline, f"the agent's '{verb}' reply"))
            if parsed.seq != seq:
                continue  # a late line of an abandoned request
            if parsed.key == "ok":
                return reply
            if parsed.key == "err":
                reply.error = parsed.rest
                raise AgentError(parsed.rest, reply)
            reply.lines.append((parsed.key, parsed.values))

    def _read_line(self, deadline: float, what: str) -> str:
        while True:
            newline = self._buf.find(b"\n")
            if newline >= 0:
                line = bytes(self._buf[:newline])
                del self._buf[: newline + 1]
                return line.decode("utf-8", "replace").rstrip("\r")
            self._fill(deadline, what)

    def _fill(self, deadline: float, what: str) -> None:
        try:
            chunk = self._sock.recv(1 << 20)
        except TimeoutError:
            self._check_alive()
            if time.monotonic() > deadline:
                raise GuestError(f"timed out waiting for {what}", self._console_tail()) from None
            return
        if not chunk:
            self._check_alive()
            raise GuestError(f"agent channel closed while waiting for {what}",
                             self._console_tail())
        self._buf += chunk
