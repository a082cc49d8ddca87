"""The guest console: captured in a thread, scanned for crashes, kept as a tail."""

from __future__ import annotations

import collections
import re
import threading
import time
from pathlib import Path
from typing import IO

from qstep import log

CRASH_PATTERNS = re.compile(
    r"Kernel panic|Oops:|BUG: |general protection fault|Call Trace:|"
    r"qstep-init: agent exited"
)


class ConsoleMonitor:
    """Reads the console stream until EOF, remembering the tail and the first crash line."""

    def __init__(self, stream: IO[bytes], log_path: Path, tail_lines: int = 60) -> None:
        self._stream = stream
        self._log_path = log_path
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._lock = threading.Lock()
        self.crash_line: str | None = None
        self.last_output = time.monotonic()
        self.eof = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qstep-console", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with open(self._log_path, "ab") as log:
            for raw in iter(self._stream.readline, b""):
                log.write(raw)
                log.flush()
                self._record(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self.eof.set()

    def _record(self, line: str) -> None:
        log.console.debug("%s", line)
        with self._lock:
            self._tail.append(line)
            self.last_output = time.monotonic()
            if self.crash_line is None and CRASH_PATTERNS.search(line):
                self.crash_line = line

    def wait_for(self, text: str, timeout: float) -> bool:
        """Wait until a console line contains ``text``; False on timeout or EOF."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(text in line for line in self._tail):
                    return True
            if self.eof.is_set():
                return False
            time.sleep(0.005)
        return False

    def tail(self) -> str:
        with self._lock:
            return "\n".join(self._tail)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
