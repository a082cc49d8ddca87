"""Ctrl-C and SIGTERM: one clean way out at any moment.

``install()`` makes SIGINT raise ``KeyboardInterrupt`` and SIGTERM raise
``Terminated``, each once: while the stack unwinds (QEMU quits, temporary
directories go) further signals are held back, so cleanup is never cut short
(a third one ends the process at once; its children die with it and its
temporary directories are reaped by the next qstep). A front end that goes on
after an interrupt (the debugger prompt) calls ``rearm()``.

``deferred()`` holds both signals back for a short exchange that must not be
cut in half (a gdbstub request and its reply, the QMP handshake, imports);
a signal that arrives meanwhile is delivered when the block ends.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = {signal.SIGINT, signal.SIGTERM}
EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
GIVE_UP_AFTER = 3  # signals while unwinding: the user insists, leave now


class Terminated(BaseException):
    """SIGTERM arrived; unwinds like ``KeyboardInterrupt`` (cleanup runs)."""


class _State:
    unwinding = False
    signals_while_unwinding = 0
    term_pending = False


def install() -> None:
    """Route SIGINT and SIGTERM through ``_handler`` (main thread only)."""
    for signum in SIGNALS:
        signal.signal(signum, _handler)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _State.unwinding:
        _State.signals_while_unwinding += 1
        _State.term_pending |= signum == signal.SIGTERM
        if _State.signals_while_unwinding >= GIVE_UP_AFTER:
            os._exit(EXIT_CODES.get(signum, 130))
        return
    _State.unwinding = True
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def rearm() -> None:
    """After an interrupt was handled and the program goes on: take signals again.

    A SIGTERM that arrived while the interrupt was handled is raised now.
    """
    term, _State.term_pending = _State.term_pending, False
    _State.unwinding, _State.signals_while_unwinding = False, 0
    if term:
        _State.unwinding = True
        raise Terminated()


def exit_code(exc: BaseException) -> int:
    """The process exit status for an interrupt: 130 (SIGINT) or 143 (SIGTERM)."""
    return EXIT_CODES[signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT]


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block; deliver them when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
