"""Building the recorder plugin against the pinned QEMU's ``qemu-plugin.h``."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from qstep.errors import HostError
from qstep.images.cachelock import build_file
from qstep.images.qemu import QEMU_VERSION, Emulator, plugin_header, resolve_emulator
from qstep.paths import cache_dir, images_dir


def plugin_source() -> Path:
    return images_dir() / "recorder" / "qstep-recorder.c"


def plugin_build_argv(source: Path, include: Path, glib_cflags: list[str],
                      output: Path) -> list[str]:
    """The compiler command line for the plugin (a shared object QEMU loads)."""
    return ["gcc", "-O2", "-Wall", "-shared", "-fPIC", f"-I{include}", *glib_cflags,
            "-o", str(output), str(source), "-lpthread"]


def _glib_cflags() -> list[str]:
    proc = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise HostError("glib headers not found; install them: apt-get install "
                        "libglib2.0-dev pkg-config (or run: make deps)")
    return proc.stdout.split()


def build_plugin() -> Path:
    """Compile the plugin (cached by the hash of its source and header); its path."""
    source = plugin_source()
    header = plugin_header()
    inputs = [header, *sorted(source.parent.glob("*.[ch]"))]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in inputs)).hexdigest()[:16]
    out_dir = cache_dir() / "recorder" / digest
    plugin = out_dir / "qstep-recorder.so"
    if plugin.is_file():
        return plugin
    if shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        raise HostError("gcc and pkg-config are needed to build the recorder plugin "
                        "(run: make deps)")
    out_dir.mkdir(parents=True, exist_ok=True)
    cflags = _glib_cflags()

    def compile_plugin(tmp: Path) -> None:
        argv = plugin_build_argv(source, header.parent, cflags, tmp)
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostError(f"building the recorder plugin failed:\n{proc.stderr.strip()}")
    return build_file(plugin, compile_plugin)


def find_plugin(emulator: Emulator) -> tuple[Path | None, str]:
    """(the plugin to load, "") or (None, why there is no recorder in this emulator)."""
    if not emulator.supports_recorder:
        return None, (f"the recorder needs QEMU {QEMU_VERSION} ({emulator.binary} is another "
                      "QEMU; unset QSTEP_QEMU)")
    try:
        return build_plugin(), ""
    except HostError as err:
        return None, str(err)


def recorder_unavailable_reason() -> str:
    """Why the selected QEMU cannot record ("" when it can)."""
    return find_plugin(resolve_emulator())[1]


def require_recorder() -> None:
    """``HostError`` (before anything boots) when the selected QEMU cannot record."""
    reason = recorder_unavailable_reason()
    if reason:
        raise HostError(f"no recorder: {reason}")
