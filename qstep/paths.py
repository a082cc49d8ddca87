"""Where qstep keeps its files: the repository's data and the cache directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def images_dir() -> Path:
    """Directory holding the kernel catalog, init script and agent source."""
    return Path(os.environ.get("QSTEP_IMAGES_DIR", REPO_ROOT / "images"))


def cache_dir() -> Path:
    """The one cache directory (``$QSTEP_CACHE``, default ``~/.cache/qstep``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qstep"
    path = Path(os.environ.get("QSTEP_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path
