"""The emulator: Debian's QEMU 10 unpacked into the cache, pinned by version.

Debian 12 ships QEMU 7.2, whose TCG plugin API cannot read registers or memory
values; bookworm-backports has 10.0.2. Its packages are fetched with apt (private
sources list and state under the cache, ``qstep.images.apt``) and each unpacked
with ``dpkg-deb -x`` into a private directory; the system is not changed. The
libraries QEMU 10 links against are those of Debian 12's own QEMU (installed by
``make deps``).

``QSTEP_QEMU`` chooses the emulator: unset or ``10`` (default) the pinned QEMU 10,
``system`` the ``qemu-system-x86_64`` on PATH (no recorder), or a path to a binary.
Fetching is idempotent and safe when several processes do it at once (entry
locks, private staging directories renamed into place).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from qstep.errors import HostError, QstepError
from qstep.images.apt import AptRegistry
from qstep.images.cachelock import entry_lock, locked, staging
from qstep.paths import cache_dir
from qstep.vm.qemu_cmd import TCG_CPU, TCG_CPU_QEMU7

QEMU_VERSION = "1:10.0.2+ds-2+deb13u1~bpo12+1"
# qemu-system-x86 10.0.2 requires seabios >> 1.16.3-1~ (bookworm has 1.16.2).
PACKAGES = {"qemu-system-x86": QEMU_VERSION, "qemu-system-common": QEMU_VERSION,
            "qemu-system-data": QEMU_VERSION, "seabios": "1.16.3-2~bpo12+1"}
APT_SOURCES = ["deb http://deb.debian.org/debian bookworm main",
               "deb http://deb.debian.org/debian-security bookworm-security main",
               "deb http://deb.debian.org/debian bookworm-backports main",
               "deb-src http://deb.debian.org/debian bookworm-backports main"]
SYSTEM_QEMU = "qemu-system-x86_64"
PLUGIN_HEADER = "include/qemu/qemu-plugin.h"


@dataclass(frozen=True)
class Emulator:
    """A QEMU binary with its firmware directories, environment and guest CPU model."""

    binary: str
    data_dirs: tuple[Path, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    version: str = ""
    tcg_cpu: str = TCG_CPU

    @property
    def supports_recorder(self) -> bool:
        return self.version == QEMU_VERSION


def qemu_root() -> Path:
    return cache_dir() / "qemu" / QEMU_VERSION.replace(":", "_")


def apt_registry() -> AptRegistry:
    """apt with bookworm(-backports) binary and source lists, in a state dir of its own."""
    return AptRegistry(APT_SOURCES, root=cache_dir() / "qemu" / "apt")


def emulator_in(pkgs: Path) -> Emulator:
    """The emulator whose packages are unpacked under ``pkgs/PACKAGE``."""
    return Emulator(
        binary=str(pkgs / "qemu-system-x86/usr/bin/qemu-system-x86_64"),
        data_dirs=(pkgs / "qemu-system-data/usr/share/qemu", pkgs / "seabios/usr/share/seabios"),
        env={"QEMU_MODULE_DIR": str(pkgs / "qemu-system-common/usr/lib/x86_64-linux-gnu/qemu")},
        version=QEMU_VERSION)


def resolve_emulator(fetch: bool = True) -> Emulator:
    """The emulator ``QSTEP_QEMU`` selects (default: QEMU 10, fetched when missing)."""
    choice = os.environ.get("QSTEP_QEMU", "10")
    if choice == "system":
        return Emulator(SYSTEM_QEMU, tcg_cpu=TCG_CPU_QEMU7)
    if choice != "10":
        if not Path(choice).is_file():
            raise HostError(f"QSTEP_QEMU={choice}: no such QEMU binary")
        return Emulator(choice, tcg_cpu=TCG_CPU_QEMU7)
    pkgs = qemu_root() / "pkgs"
    missing = [p for p in PACKAGES if not (pkgs / p).is_dir()]
    if missing and not fetch:
        raise HostError("QEMU 10 is not in the cache; run: make deps")
    if missing:
        _fetching(" ".join(missing))
        with _unavailable_hint():
            apt = apt_registry()
            for package in missing:
                apt.download_and_unpack(package, pkgs / package, PACKAGES[package])
    return emulator_in(pkgs)


def plugin_header() -> Path:
    """``qemu-plugin.h`` of the pinned QEMU, from Debian's orig source tarball."""
    include = qemu_root() / "include"
    if (include / "qemu-plugin.h").is_file():
        return include / "qemu-plugin.h"
    with locked(entry_lock(include)):
        if not include.is_dir():
            _fetching("the qemu source (for qemu-plugin.h)")
            with _unavailable_hint(), staging(include) as stage, \
                    tempfile.TemporaryDirectory(dir=include.parent) as tmp:
                tarball = apt_registry().download_source_tarball("qemu", QEMU_VERSION, Path(tmp))
                _extract_header(tarball, stage)
    return include / "qemu-plugin.h"


def _extract_header(tarball: Path, dest: Path) -> None:
    work = dest / ".src"
    work.mkdir()
    proc = subprocess.run(["tar", "-xf", str(tarball), "-C", str(work), "--wildcards",
                           f"*/{PLUGIN_HEADER}"], capture_output=True, text=True)
    headers = list(work.glob(f"*/{PLUGIN_HEADER}"))
    if proc.returncode != 0 or len(headers) != 1:
        raise HostError(f"{tarball.name} holds no {PLUGIN_HEADER}: {proc.stderr.strip()}")
    headers[0].rename(dest / "qemu-plugin.h")
    shutil.rmtree(work)


def _fetching(what: str) -> None:
    print(f"qstep: fetching QEMU {QEMU_VERSION}: {what}", file=sys.stderr, flush=True)


@contextmanager
def _unavailable_hint() -> Iterator[None]:
    """Turn a failed fetch into one message that names the way out."""
    try:
        yield
    except QstepError as err:
        raise HostError(f"cannot get QEMU {QEMU_VERSION} from Debian bookworm-backports "
                        f"({err}); to use the system's QEMU instead (no recorder) set "
                        "QSTEP_QEMU=system") from None
