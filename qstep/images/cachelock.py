"""Safe sharing of the cache between processes: a lock per entry, private staging, atomic renames.

Several qstep processes (a CI matrix on one machine, parallel test workers) may
fill the same cache entry at once. Each entry has a lock file beside it; the
process holding the lock builds the entry in a private staging directory and
renames it into place, so readers see either nothing or the whole entry.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(lock_file: Path, shared: bool = False) -> Iterator[None]:
    """Hold an flock on ``lock_file`` (exclusive unless ``shared``) for the block."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


def entry_lock(dest: Path) -> Path:
    """The lock file of the cache entry ``dest``."""
    return dest.with_name(f".{dest.name}.lock")


@contextmanager
def staging(dest: Path) -> Iterator[Path]:
    """A private directory that becomes ``dest`` (atomic rename) when the block succeeds.

    Call with the entry lock held: leftovers of processes killed while staging
    this entry are removed first.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    try:
        yield tmp
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_file(dest: Path, build: Callable[[Path], object]) -> Path:
    """``dest``, built first if missing: under the entry's lock, ``build(tmp)`` writes a
    private file that is then renamed into place (leftovers of killed builds go)."""
    if dest.is_file():
        return dest
    with locked(entry_lock(dest)):
        if dest.is_file():
            return dest
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            build(tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return dest


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
