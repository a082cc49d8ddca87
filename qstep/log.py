"""``--log FILE`` (or ``QSTEP_LOG=FILE``): a timestamped record for bug reports.

It holds the agent channel (``qstep.agent``: every request and reply line), QMP
(``qemu.qmp``: every message), the GDB remote protocol and gdb/MI
(``qstep.gdb``: every packet and record), the guest console (``qstep.console``)
and, when qstep fails, the error with its traceback and the console's last lines.
Nothing is recorded without it.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path

from qstep.errors import MachineError, UsageError

LOG_ENV = "QSTEP_LOG"
FORMAT = "%(asctime)s.%(msecs)03d %(name)s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
CHANNELS = ("qstep", "qemu.qmp")

agent = logging.getLogger("qstep.agent")
gdb = logging.getLogger("qstep.gdb")
console = logging.getLogger("qstep.console")
failure = logging.getLogger("qstep.failure")


def log_path(option: str | None) -> Path | None:
    """The log file: ``--log FILE``, else ``$QSTEP_LOG``, else none."""
    value = option or os.environ.get(LOG_ENV)
    return Path(value) if value else None


def setup(path: Path | None) -> None:
    """Start recording into ``path`` (appending); nothing when ``path`` is None."""
    if path is None:
        return
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--log {path}: {err.strerror}") from None
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    for name in CHANNELS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        logger.propagate = False


MAX_LINE = 400


def shorten(text: str) -> str:
    """A traffic line for the log: long ones (hex blobs) cut, with their length."""
    return text if len(text) <= MAX_LINE else f"{text[:MAX_LINE]}... ({len(text)} chars)"


def enabled() -> bool:
    """True when a log file is being written."""
    return logging.getLogger("qstep").isEnabledFor(logging.DEBUG)


def record_failure(exc: BaseException) -> None:
    """Write an error, its traceback and the guest console's last lines to the log."""
    if not enabled():
        return
    text = "".join(traceback.format_exception(exc))
    failure.debug("%s", text.rstrip())
    if isinstance(exc, MachineError) and exc.console_tail:
        failure.debug("guest console (last lines):\n%s", exc.console_tail.rstrip())
