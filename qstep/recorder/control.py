"""The recorder plugin's control channel: a unix socket in the VM's private directory."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from qstep.errors import GuestError, QstepError

ARM_TIMEOUT = 20.0
FIRST_WAIT = 0.002
WAKE_EVERY = 0.05
DEFAULT_LIMIT = 256 << 20  # bytes of log per recorded run


class RecordingTooLarge(QstepError):
    """The run produced more log than the limit allows; nothing was truncated silently."""


class RecorderControl:
    """Arms and disarms the plugin; ``wake`` makes the vCPU run (arming needs it)."""

    def __init__(self, socket_path: Path, wake: Callable[[], object]) -> None:
        self.wake = wake
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(str(socket_path))
        except OSError as err:
            self.sock.close()
            raise GuestError(f"cannot reach the recorder plugin at {socket_path}: {err}") \
                from None
        self._buf = b""

    def __enter__(self) -> RecorderControl:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def arm(self, ranges: Iterable[tuple[int, int]], boundaries: Iterable[int],
            limit: int = DEFAULT_LIMIT, idt: int | None = None) -> None:
        """Instrument ``ranges`` [start, end); read registers at ``boundaries``; with
        ``idt`` (the guest IDT's address) log the vectors delivered in the ranges."""
        rs = ",".join(f"{s:x}-{e:x}" for s, e in ranges)
        bs = ",".join(f"{b:x}" for b in sorted(set(boundaries)))
        vectors = f" idt={idt:x}" if idt else ""
        self._send(f"arm {limit} {rs} {bs}{vectors}\n")
        self._expect("armed")

    def disarm(self, limit: int = DEFAULT_LIMIT) -> int:
        """Stop recording; the number of log bytes (``RecordingTooLarge`` on overflow)."""
        self._send("disarm\n")
        words = self._expect("disarmed").split()
        size, overflow = int(words[1]), words[2] == "1"
        if overflow:
            raise RecordingTooLarge(f"the recording reached its size limit ({limit} bytes) and "
                                    "stopped; record a shorter run or raise the limit "
                                    "(--record-limit)")
        return size

    def sync(self) -> tuple[int, bool]:
        """(log bytes written so far, whether the limit was reached); recording goes on.

        Answered by the plugin's own thread: works while the VM is stopped."""
        self._send("sync\n")
        words = self._expect("synced", wake=False).split()
        return int(words[1]), words[2] == "1"

    def pause(self, paused: bool) -> None:
        """Stop (or restart) logging, staying armed: no flush, works while the VM is
        stopped (the plugin's own thread)."""
        self._send("pause\n" if paused else "resume\n")
        self._expect("paused" if paused else "resumed", wake=False)

    def clear(self) -> None:
        """Empty the log and start it again, staying armed (the plugin's own thread)."""
        self._send("clear\n")
        self._expect("cleared", wake=False)

    def _send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def _expect(self, word: str, wake: bool = True) -> str:
        line = self._read_line(wake)
        if not line.startswith(word):
            raise GuestError(f"recorder plugin: {line or 'no answer'}")
        return line

    def _read_line(self, wake: bool = True) -> str:
        """One reply line. The plugin acts on the vCPU thread: when no answer comes
        within FIRST_WAIT the vCPU is idle, and ``wake`` (an agent round trip) runs it."""
        deadline = time.monotonic() + ARM_TIMEOUT
        self.sock.settimeout(FIRST_WAIT)
        while b"\n" not in self._buf:
            if time.monotonic() > deadline:
                raise GuestError("the recorder plugin did not answer")
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                if wake:
                    self.wake()
                self.sock.settimeout(WAKE_EVERY)
                continue
            if not chunk:
                raise GuestError("the recorder plugin closed its channel")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()
