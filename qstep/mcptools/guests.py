"""The MCP server's guests: one long-lived session per kernel, booted on first use.

Every method runs on the server's one guest thread (``GuestWorker``), except
``kill``, the emergency stop a shutdown uses while that thread is busy, and
``status``, which only reads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from qstep.commands.common import make_session
from qstep.errors import MachineError, QstepError, UsageError
from qstep.session import Session

Notify = Callable[[str], None]
DYING_GRACE = 1.0  # seconds a failed guest's QEMU gets to end before it is judged alive


def to_stderr(message: str) -> None:
    print(f"qstep mcp: {message}", file=sys.stderr, flush=True)


def first_line(err: BaseException) -> str:
    """An error's message up to its first line break or ';' (QEMU's stderr follows)."""
    text = str(err).split(";")[0].strip()
    return text.splitlines()[0] if text else type(err).__name__


@dataclass
class Guest:
    """One booted guest and who is using it (a call, the stepping session, nobody)."""

    kernel: str
    session: Session
    boot_seconds: float
    held_by: str | None = None
    calls: int = 0

    def pid(self) -> int | None:
        machine = self.session.machine
        return machine.pid if machine is not None else None

    def dead_reason(self, grace: float = 0.0) -> str | None:
        """Why the guest cannot be used any more (QEMU gone, kernel crashed), or None;
        ``grace``: seconds to let a dying QEMU end (its threads exit one by one)."""
        machine = self.session.machine
        if machine is None:
            return "it was shut down"
        if grace and machine.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                machine.process.wait(grace)
        try:
            machine.check_alive()
        except MachineError as err:
            return first_line(err)
        return None


@dataclass
class GuestPool:
    """Guests by (kernel, accelerator); ``scope`` is a ``SessionScope`` for the commands."""

    guests: dict[tuple[str, str], Guest] = field(default_factory=dict)
    lost: dict[tuple[str, str], str] = field(default_factory=dict)  # why a guest went
    boots: int = 0
    # What a call is told (replaced for each call by the server): progress, warnings.
    progress: Notify = to_stderr
    warn: Notify = to_stderr

    def key(self, args: argparse.Namespace) -> tuple[str, str]:
        return (args.kernel or "default", args.accel)

    @contextlib.contextmanager
    def scope(self, args: argparse.Namespace, holder: str = "a call") -> Iterator[Session]:
        """The guest for ``args.kernel`` (booted if there is none or it died), held for
        the block. A guest failure or a qstep bug discards it (the next call boots a
        new one); bad input leaves it as it is."""
        key = self.key(args)
        guest = self.ready(args)
        if guest.held_by is not None:
            raise UsageError(f"the {key[0]} guest is held by {guest.held_by}; end it first "
                             "(debug_stop)")
        guest.held_by, guest.calls = holder, guest.calls + 1
        self.progress(f"running on the guest (kernel {key[0]})")
        try:
            yield guest.session
        except QstepError as err:
            if isinstance(err, MachineError):
                self.drop(key, guest, f"died ({first_line(err)})")
            raise
        except BaseException as err:
            self.drop(key, guest, f"was shut down after an internal error "
                      f"({type(err).__name__})")
            raise
        finally:
            guest.held_by = None

    def ready(self, args: argparse.Namespace) -> Guest:
        """The live guest for ``args``: the one kept, or a newly booted one."""
        key = self.key(args)
        guest = self.guests.get(key)
        if guest is not None:
            reason = guest.dead_reason()
            if reason is None:
                return guest
            self.drop(key, guest, f"died ({reason})")
        if key in self.lost:
            self.warn(f"the {key[0]} guest {self.lost.pop(key)}; booting a new one")
        return self.boot(args)

    def drop(self, key: tuple[str, str], guest: Guest, why: str) -> None:
        """Discard a failed guest; the next call that needs one says why (QEMU's end
        when it is gone, else ``why``)."""
        if self.guests.get(key) is guest:
            dead = guest.dead_reason(grace=DYING_GRACE)
            self.lost[key] = f"died ({dead})" if dead else why
            self.discard(key)

    def boot(self, args: argparse.Namespace) -> Guest:
        key = self.key(args)
        self.progress(f"booting the guest (kernel {key[0]})")
        start = time.monotonic()
        session = make_session(args)
        session.__enter__()
        guest = Guest(key[0], session, time.monotonic() - start)
        self.guests[key] = guest
        self.boots += 1
        how = "restored from a snapshot" if session.restored else "booted"
        to_stderr(f"guest {self.boots} ({key[0]}, {session.release}) {how} in "
                  f"{guest.boot_seconds:.1f} s, QEMU pid {guest.pid()}")
        return guest

    def discard(self, key: tuple[str, str]) -> None:
        """Shut the guest for ``key`` down and forget it."""
        guest = self.guests.pop(key, None)
        if guest is not None:
            guest.session.__exit__(None, None, None)

    def close(self) -> None:
        """Shut every guest down (the server is ending)."""
        start, count = time.monotonic(), len(self.guests)
        for key in list(self.guests):
            self.discard(key)
        if count:
            to_stderr(f"{count} guest(s) shut down in {time.monotonic() - start:.2f} s")

    def kill(self) -> None:
        """From another thread, while the guest thread is busy: kill every QEMU at once,
        so the running call fails fast and ``close`` can follow."""
        for guest in list(self.guests.values()):
            machine = guest.session.machine
            if machine is not None and machine.process is not None:
                with contextlib.suppress(OSError):
                    machine.process.kill()

    def status(self) -> dict[str, Any]:
        """The guests kept, and how many boots the server has done."""
        return {"server_pid": os.getpid(), "boots": self.boots, "guests": [
            {"kernel": g.kernel, "accel": key[1], "release": g.session.release,
             "qemu_pid": g.pid(), "boot_seconds": round(g.boot_seconds, 3),
             "restored": g.session.restored, "calls": g.calls, "held_by": g.held_by}
            for key, g in list(self.guests.items())]}  # list(): one step under the GIL
