"""Private temporary directories that name their owner; dead owners' ones are reaped.

A directory is created as ``<prefix><pid>.<start>-<random>``: the owning
process's id and its start time (clock ticks since boot, from ``/proc``), so a
recycled pid is not mistaken for the owner. A process killed with SIGKILL
cannot remove its directories; the next qstep that makes one of the same kind
removes those whose owner is gone. A live owner's directory is never touched,
nor any directory whose name does not follow this pattern.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

OWNER_RE = re.compile(r"(\d+)\.(\d+)-[^/]+$")


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def owner_tag(pid: int | None = None) -> str:
    """``PID.START`` of this process (or of ``pid``)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{start_time(pid) or 0}"


def make_private_dir(prefix: str, parent: Path | None = None) -> Path:
    """A new mode-0700 directory named after its owner; older dead owners' ones are reaped."""
    base = Path(parent or tempfile.gettempdir())
    reap(prefix, base)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=base))


SUN_PATH_MAX = 107  # a unix socket path's bytes (sockaddr_un.sun_path less its NUL)


def socket_dir_parent(prefix: str, longest_name: str) -> Path:
    """Where a private directory holding unix sockets goes: the temp directory, or
    /tmp when that one's path is too long for ``longest_name`` in it to be bound."""
    base = Path(tempfile.gettempdir())
    needed = f"{base}/{prefix}{owner_tag()}-xxxxxxxx/{longest_name}"
    return base if len(os.fsencode(needed)) <= SUN_PATH_MAX else Path("/tmp")


def owner_alive(name: str, prefix: str) -> bool | None:
    """Whether the owner of directory ``name`` still runs; None if the name has no owner."""
    match = OWNER_RE.match(name[len(prefix):]) if name.startswith(prefix) else None
    if match is None:
        return None
    pid, start = int(match.group(1)), int(match.group(2))
    return start_time(pid) == start


def reap(prefix: str, base: Path) -> list[Path]:
    """Remove the ``prefix`` directories in ``base`` whose owner is dead; their paths."""
    reaped = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    for path in entries:
        if owner_alive(path.name, prefix) is False and _ours(path):
            shutil.rmtree(path, ignore_errors=True)
            reaped.append(path)
    return reaped


def _ours(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return path.is_dir() and not path.is_symlink() and st.st_uid == os.getuid()
