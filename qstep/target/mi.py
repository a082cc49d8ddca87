"""A gdb process spoken to over GDB/MI: token-correlated commands and ``*stopped`` records.

gdb is started here (not by pygdbmi) so that it gets a parent-death signal;
pygdbmi's ``IoManager`` reads and parses its output. A command's reply is the
result record carrying its token; ``*stopped`` records are queued separately.
"""

from __future__ import annotations

import contextlib
import select
import signal
import subprocess
import time
from collections import deque
from typing import Any

from pygdbmi.IoManager import IoManager

from qstep import interrupts, log
from qstep.errors import HostError
from qstep.target.base import TargetError
from qstep.vm.lifetime import die_with_parent

Record = dict[str, Any]
EMPTY_READS_BEFORE_NAP = 20


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class MiChannel:
    """One owned gdb process; killed on ``shutdown()`` and when this process dies."""

    def __init__(self, argv: list[str]) -> None:
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, preexec_fn=die_with_parent,
                                         start_new_session=True)  # no terminal Ctrl-C
        except FileNotFoundError:
            raise HostError(f"{argv[0]} not found; install it: apt-get install gdb") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._io = IoManager(self.proc.stdin, self.proc.stdout, self.proc.stderr,
                             time_to_check_for_additional_output_sec=0)
        self._fds = [self.proc.stdout.fileno()]
        if self.proc.stderr is not None:
            self._fds.append(self.proc.stderr.fileno())
        self._records: deque[Record] = deque()
        self._stops: deque[Record] = deque()
        self._token = 0
        self._empty_reads = 0
        self.death: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fileno(self) -> int:
        return self._fds[0]

    # -- commands ------------------------------------------------------
    @interrupts.deferred()  # a command and its result are never cut apart by Ctrl-C
    def command(self, cmd: str, what: str, timeout: float) -> Record:
        """Send ``<token><cmd>`` and return its result record (``^error`` raises)."""
        self._token += 1
        token = self._token
        self._write(f"{token}{cmd}", what)
        deadline = time.monotonic() + timeout
        while (record := self._take(token)) is None:
            if not self._pump(deadline, what):
                raise TargetError(f"gdb did not answer '{cmd}' within {timeout:.0f} s ({what})")
        if record["message"] == "error":
            msg = (record.get("payload") or {}).get("msg", "")
            raise TargetError(f"gdb refused '{cmd}' ({what}): {msg}")
        return record

    def next_stop(self, deadline: float, what: str) -> Record | None:
        """The next ``*stopped`` record, or None once ``deadline`` passes."""
        while True:
            self._take(None)
            if self._stops:
                return self._stops.popleft()
            if not self._pump(deadline, what):
                return None

    def has_stop(self) -> bool:
        self._take(None)
        return bool(self._stops)

    def _take(self, token: int | None) -> Record | None:
        """Consume queued records up to the result for ``token``; queue stops on the way."""
        while self._records:
            record = self._records.popleft()
            kind, message = record.get("type"), record.get("message")
            if kind == "notify" and message == "stopped":
                self._stops.append(record)
            elif kind == "result" and token is not None and record.get("token") == token:
                if message == "running":
                    self._stops.clear()  # anything before ^running is stale
                return record
        return None

    # -- I/O -----------------------------------------------------------
    def _write(self, line: str, what: str) -> None:
        self.check_alive(what)
        assert self.proc.stdin is not None
        log.gdb.debug("--> %s", line)
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2.0)  # a broken pipe: gdb is dying, let it finish
            self.check_alive(what)
            raise TargetError(f"cannot write to gdb (pid {self.pid}) ({what})") from None

    def _pump(self, deadline: float, what: str) -> bool:
        """Read what gdb has written; False once ``deadline`` passes with nothing new."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select(self._fds, [], [], remaining)[0]:
            self.check_alive(what)
            return False
        records = self._io.get_gdb_response(timeout_sec=0, raise_error_on_timeout=False)
        if records:
            for record in records:
                log.gdb.debug("<-- %s", log.shorten(str(record)))
            self._records.extend(records)
            self._empty_reads = 0
            return True
        self.check_alive(what)  # only part of a line so far, or end of file
        self._empty_reads += 1
        if self._empty_reads > EMPTY_READS_BEFORE_NAP:
            time.sleep(0.001)  # end of file while gdb is still exiting: do not spin
        return True

    def exit(self) -> None:
        """Ask gdb to exit (``shutdown()`` then waits for it)."""
        with contextlib.suppress(TargetError):
            self._write("-gdb-exit", "exiting")

    def check_alive(self, what: str) -> None:
        """Raise ``TargetError`` (and reap gdb) if gdb is gone."""
        if self.death is None and self.proc.poll() is not None:
            self.death = f"gdb (pid {self.pid}) died ({describe_exit(self.proc.returncode)})"
            self.shutdown()
        if self.death is not None:
            raise TargetError(f"{self.death} while {what}")

    def shutdown(self, grace: float = 2.0) -> None:
        """Wait briefly for gdb to exit, kill it otherwise, close the pipes."""
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
