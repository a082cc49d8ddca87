"""Debian packages fetched with apt into the cache, without touching the host's apt.

apt runs with a private sources list and state directory under the cache. Its
own locking is off (it would need the host's lock files), so qstep serialises
the shared state itself: an exclusive lock around ``apt-get update``, a shared
one around readers, no on-disk package cache (rebuilt in memory per call), and
each download and unpack in a private directory renamed into place.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote

from qstep.errors import HostError
from qstep.images.cachelock import entry_lock, locked, staging, write_atomic
from qstep.paths import cache_dir

VERSION_FILE = ".qstep-package-version"


def _literal_prefix(pattern: str) -> str:
    """The literal start of a package-name regex (``^linux-image-6\\.1`` → ``linux-image-6.1``)."""
    out = []
    for part in re.findall(r"\\.|.", pattern.removeprefix("^")):
        if len(part) == 2:
            out.append(part[1])
        elif part in ".[]()*+?{}|$^":
            break
        else:
            out.append(part)
    return "".join(out)


class AptRegistry:
    """apt-get/apt-cache with private configuration under the cache."""

    def __init__(self, sources: list[str], root: Path | None = None) -> None:
        self.root = root or cache_dir() / "apt"
        self.sources = sources
        self.lists = self.root / "lists"
        self.lists_lock = self.root / "lists.lock"

    def _options(self) -> list[str]:
        text = "\n".join(self.sources) + "\n"
        sources_file = self.root / "sources.list"
        if not sources_file.exists() or sources_file.read_text() != text:
            write_atomic(sources_file, text)
        return [
            "-o", f"Dir::Etc::sourcelist={sources_file}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={self.lists}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
            "-o", "Dir::Cache::pkgcache=",
            "-o", "Dir::Cache::srcpkgcache=",
            "-o", "APT::Sandbox::User=root",
            "-o", "Debug::NoLocking=1",
        ]

    def _run(self, argv: list[str], cwd: Path | None = None) -> str:
        if shutil.which(argv[0]) is None:
            raise HostError(f"{argv[0]} not found: kernels are fetched with Debian's apt")
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostError(f"{' '.join(argv[:2])} failed ({proc.returncode}): "
                            f"{proc.stderr.strip()}")
        return proc.stdout

    def _stamp(self) -> Path:
        return self.lists / "qstep-sources"

    def update(self) -> None:
        """Refresh the package lists (one process at a time)."""
        with locked(self.lists_lock):
            self._update_locked()

    def _update_locked(self) -> None:
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self._run(["apt-get", *self._options(), "update"])
        write_atomic(self._stamp(), "\n".join(self.sources) + "\n")

    def has_lists(self) -> bool:
        """Whether lists fetched from exactly these sources are present."""
        stamp = self._stamp()
        return stamp.is_file() and stamp.read_text() == "\n".join(self.sources) + "\n"

    def _ensure_lists(self) -> None:
        if self.has_lists():
            return
        with locked(self.lists_lock):
            if not self.has_lists():  # another process may have updated meanwhile
                self._update_locked()

    def _query(self, *args: str) -> str:
        self._ensure_lists()
        with locked(self.lists_lock, shared=True):
            return self._run(["apt-cache", *self._options(), *args])

    def package_names(self, pattern: str, prefix: str | None = None) -> list[str]:
        """Package names matching the regex ``pattern`` (listed from ``prefix``)."""
        out = self._query("pkgnames", prefix if prefix is not None else _literal_prefix(pattern))
        regex = re.compile(pattern)
        return sorted(n for n in out.split() if regex.match(n))

    def versions(self, package: str) -> list[str]:
        """Versions of ``package`` the registry offers."""
        out = self._query("madison", package)
        return [cols[1].strip() for line in out.splitlines()
                if len(cols := line.split("|")) >= 3]

    def download_and_unpack(self, package: str, dest: Path, version: str | None = None) -> str:
        """Unpack ``package`` (``=version`` if given) into ``dest``; return the version.

        Safe when several processes fetch the same package at once: one downloads,
        the others wait for the entry lock and find ``dest`` complete.
        """
        with locked(entry_lock(dest)):
            if dest.is_dir():
                return installed_version(dest) or ""
            self._ensure_lists()
            with staging(dest) as stage, tempfile.TemporaryDirectory(
                    prefix=f".{dest.name}.staging-dl-", dir=dest.parent) as tmp:
                deb = self._download(package, version, Path(tmp))
                self._run(["dpkg-deb", "-x", str(deb), str(stage)])
                got = unquote(deb.name.split("_")[1])
                (stage / VERSION_FILE).write_text(got + "\n")
            return got

    def download_source_tarball(self, package: str, version: str, where: Path) -> Path:
        """The upstream (orig) tarball of source ``package=version``, fetched into ``where``."""
        self._ensure_lists()
        with locked(self.lists_lock, shared=True):
            self._run(["apt-get", *self._options(), "source", "--download-only", "--tar-only",
                       f"{package}={version}"], cwd=where)
        tarballs = sorted(where.glob(f"{package}_*.orig.tar.*"))
        if not tarballs:
            raise HostError(f"apt-get source {package}={version} left no orig tarball")
        return tarballs[0]

    def _download(self, package: str, version: str | None, where: Path) -> Path:
        spec = f"{package}={version}" if version else package
        archives = where / "archives"
        (archives / "partial").mkdir(parents=True)
        with locked(self.lists_lock, shared=True):
            self._run(["apt-get", *self._options(), "-o", f"Dir::Cache::archives={archives}",
                       "download", spec], cwd=where)
        debs = sorted(where.glob(f"{package}_*.deb"))
        if not debs:
            raise HostError(f"apt-get download {spec} left no .deb")
        return debs[-1]


def installed_version(dest: Path) -> str | None:
    """The Debian version unpacked into ``dest`` (None for entries older than the record)."""
    f = dest / VERSION_FILE
    return f.read_text().strip() if f.is_file() else None
