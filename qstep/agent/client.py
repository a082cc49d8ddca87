"""Host side of the agent channel: send a request, collect its reply by sequence number."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from qstep import interrupts, log
from qstep.agent import libbpf_errors
from qstep.agent.protocol import (
    PROTOCOL_VERSION,
    READY_RE,
    Reply,
    SharedRef,
    Token,
    WireToken,
    encode_request,
    encode_token,
    parse_reply_line,
)
from qstep.agent.window import HostWindow
from qstep.errors import GuestError, QstepError, UsageError

POLL = 0.25
SEND_CHUNK = 1 << 20
# Blobs from this size on go through the shared window when there is one: below
# it the hex text is about as short as the reference and needs no copy.
SHARED_MIN = 64


class AgentError(QstepError):
    """The agent refused a request (``err``); ``reply`` holds the lines sent before it."""

    def __init__(self, message: str, reply: Reply) -> None:
        super().__init__(libbpf_errors.explain(message))
        self.reply = reply


class AgentClient:
    """Talks protocol v2 over a connected stream socket (and a shared window, if any).

    ``check_alive`` is called whenever the channel is quiet, so a crashed or
    vanished guest ends a wait at once instead of at its timeout.
    """

    def __init__(self, sock: socket.socket, check_alive: Callable[[], None],
                 console_tail: Callable[[], str], window: HostWindow | None = None) -> None:
        self._sock = sock
        self._window = window
        self._shared: HostWindow | None = None
        self._sock.settimeout(POLL)
        self._buf = bytearray()
        self._seq = 0
        self._check_alive = check_alive
        self._console_tail = console_tail
        self.kernel_release = ""
        self._pending: Reply | None = None

    def wait_ready(self, timeout: float) -> str:
        """Wait for the READY line; return the guest kernel release."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline, "the agent to start (boot)")
            if line is None:
                raise GuestError("timed out waiting for the agent to start (boot)",
                                 self._console_tail())
            match = READY_RE.match(line.strip())
            if not match:
                continue  # noise before the agent opened the port
            if int(match.group(1)) != PROTOCOL_VERSION:
                raise GuestError(f"agent speaks protocol {match.group(1)}, "
                                 f"qstep speaks {PROTOCOL_VERSION}; rebuild the guest image")
            self.kernel_release = match.group(2)
            if self._window is not None:
                self._window.unlink()  # QEMU and the agent have mapped it by now
            self.use_window(True)
            return self.kernel_release

    def use_window(self, on: bool) -> bool:
        """Move large blobs through the shared window (if the agent mapped it) or as
        hex on the serial line; returns whether the window is in use."""
        window = self._window
        self._shared = window if on and window and window.attached(PROTOCOL_VERSION) else None
        if window is not None:
            window.enable(self._shared is not None)
        return self._shared is not None

    def request(self, verb: str, *args: Token, timeout: float = 60.0) -> Reply:
        """Send one request and return its reply; raise ``AgentError`` on ``err``."""
        return self.wait_reply(self.send(verb, *args, timeout=timeout), timeout, verb)

    @interrupts.deferred()  # a request line is never cut in half by Ctrl-C
    def send(self, verb: str, *args: Token, timeout: float = 60.0) -> int:
        """Send a request without waiting; returns its sequence number."""
        self._check_args(verb, args)
        self._seq += 1
        line = encode_request(self._seq, verb, *map(self._wire, args))
        if log.enabled():
            log.agent.debug("--> %s", log.shorten(line.decode("utf-8", "replace").rstrip()))
        self._send_all(line, time.monotonic() + timeout, verb)
        self._pending = Reply(self._seq)
        return self._seq

    def _check_args(self, verb: str, args: tuple[Token, ...]) -> None:
        """Raise before any blob goes into the window: words that cannot be sent
        (ValueError), a blob over the window's ring (as hex it would take minutes)."""
        limit = self._shared.ring_size if self._shared else None
        for token in (verb, *args):
            if isinstance(token, str):
                encode_token(token)
            elif limit is not None and isinstance(token, bytes) and len(token) > limit:
                raise UsageError(f"{len(token)} bytes is more than the agent channel takes "
                                 f"at once ({limit} bytes)")

    def _wire(self, token: Token) -> WireToken:
        """A large blob placed in the shared window, or the token itself."""
        if self._shared is None or not isinstance(token, bytes) or len(token) < SHARED_MIN:
            return token
        return self._shared.put(token) or token

    def _send_all(self, data: bytes, deadline: float, verb: str) -> None:
        view = memoryview(data)
        while view:
            self._sock.settimeout(POLL)
            try:
                view = view[self._sock.send(view[:SEND_CHUNK]):]
            except TimeoutError:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise GuestError(
                        f"timed out sending '{verb}' to the agent ({len(data) - len(view)} of "
                        f"{len(data)} bytes sent)", self._console_tail()) from None
            except (ConnectionResetError, BrokenPipeError):
                self._check_alive()
                raise GuestError(f"agent channel closed while sending '{verb}'",
                                 self._console_tail()) from None

    def wait_reply(self, seq: int, timeout: float, verb: str = "request") -> Reply:
        """Block until the reply to ``seq`` is complete."""
        reply = self.poll_reply(seq, timeout, verb)
        if reply is None:
            raise GuestError(f"timed out waiting for the agent's '{verb}' reply",
                             self._console_tail())
        return reply

    def poll_reply(self, seq: int, timeout: float, verb: str = "request") -> Reply | None:
        """The reply to ``seq`` if it completes within ``timeout`` seconds, else None.

        Lines read before the timeout are kept, so polling again continues where
        this call stopped.
        """
        deadline = time.monotonic() + timeout
        reply = self._pending if self._pending and self._pending.seq == seq else Reply(seq)
        self._pending = reply
        while True:
            line = self._next_line(deadline, f"the agent's '{verb}' reply")
            if line is None:
                return None
            try:
                parsed = parse_reply_line(line)
            except ValueError as err:
                raise GuestError(f"garbled reply from the agent ({verb}): {err}",
                                 self._console_tail()) from None
            values = [self._resolve(v, verb) for v in parsed.values]
            if parsed.seq != seq:
                continue  # a late line of an abandoned request
            if parsed.key == "ok":
                self._pending = None
                return reply
            if parsed.key == "err":
                self._pending = None
                reply.error = parsed.rest
                raise AgentError(parsed.rest, reply)
            reply.lines.append((parsed.key, values))

    def _resolve(self, token: WireToken, verb: str) -> Token:
        """A reply token with shared-window blobs copied out (and their space freed)."""
        if not isinstance(token, SharedRef):
            return token
        if self._window is None:
            raise GuestError(f"the agent's '{verb}' reply refers to a shared window "
                             "this machine does not have")
        try:
            return self._window.take(token)
        except ValueError as err:
            raise GuestError(f"the agent's '{verb}' reply: {err}") from None

    def _next_line(self, deadline: float, what: str) -> str | None:
        """One line, or None once ``deadline`` passes with no complete line.

        The socket is read at least once, so a zero timeout still polls it.
        """
        while True:
            newline = self._buf.find(b"\n")
            if newline >= 0:
                line = bytes(self._buf[:newline])
                del self._buf[: newline + 1]
                text = line.decode("utf-8", "replace").rstrip("\r")
                log.agent.debug("<-- %s", log.shorten(text))
                return text
            got = self._fill(deadline, what, raise_on_timeout=False)
            if not got and time.monotonic() >= deadline:
                return None

    def fileno(self) -> int:
        """The channel's descriptor, for select() alongside a debug target."""
        return self._sock.fileno()

    def _fill(self, deadline: float, what: str, raise_on_timeout: bool = True) -> bool:
        self._sock.settimeout(max(0.0, min(POLL, deadline - time.monotonic())) or 0.001)
        try:
            chunk = self._sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except TimeoutError:
            self._check_alive()
            if raise_on_timeout and time.monotonic() > deadline:
                raise GuestError(f"timed out waiting for {what}", self._console_tail()) from None
            return False
        if not chunk:
            self._check_alive()
            raise GuestError(f"agent channel closed while waiting for {what}",
                             self._console_tail())
        self._buf += chunk
        return True
