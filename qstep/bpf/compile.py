"""Compile BPF C sources with the pinned clang, the way the README tells users to."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from qstep.errors import HostError, ObjectError
from qstep.paths import cache_dir

CLANG = "clang-19"
CFLAGS = ("-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu")
MAX_ERROR_LINES = 12


def compile_c(source: Path, flags: Sequence[str] = ()) -> Path:
    """Compile ``source`` into the cache and return the object's path.

    It is compiled every time (a fraction of a second), so an edited header is never
    missed; the object is written atomically. A compile error is an `ObjectError`
    holding clang's first error lines.
    """
    if shutil.which(CLANG) is None:
        raise HostError(f"{CLANG} is missing: run 'make deps' (Debian package clang-19)")
    if not source.is_file():
        raise ObjectError(f"{source}: no such C source")
    key = hashlib.sha256(f"{source.resolve()}\0{' '.join(flags)}".encode()).hexdigest()[:16]
    out = cache_dir() / "build" / "c" / f"{source.stem}-{key}.o"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run([CLANG, *CFLAGS, *flags, "-c", str(source), "-o", str(tmp)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        raise ObjectError(f"{source} does not compile:\n" + "\n".join(errors[:MAX_ERROR_LINES]))
    os.replace(tmp, out)
    return out
