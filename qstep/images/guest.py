"""The guest image: a gzip'd initramfs with busybox, the init script and the agent.

Both the agent binary and the initramfs are cached by the hash of their inputs,
so an edited agent source or init script rebuilds them and nothing else does.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

from qstep.errors import HostError
from qstep.images import cpio
from qstep.images.cachelock import build_file
from qstep.paths import cache_dir, images_dir

BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
AGENT_LIBS = ["-lbpf", "-lelf", "-lz", "-lzstd"]


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def agent_source() -> Path:
    return images_dir() / "agent" / "qstep-agent.c"


def agent_build_argv(source: Path, output: Path) -> list[str]:
    """The compiler command line for the static agent."""
    return ["gcc", "-static", "-O2", "-Wall", "-o", str(output), str(source),
            "-Wl,--wrap=syscall", *AGENT_LIBS]


def build_agent() -> Path:
    """Compile the agent (cached by source hash) and return the binary's path."""
    source = agent_source()
    if not source.is_file():
        raise HostError(f"agent source {source} is missing")
    binary = cache_dir() / "agent" / _digest(source.read_bytes()) / "qstep-agent"
    if binary.is_file():
        return binary
    if shutil.which("gcc") is None:
        raise HostError("gcc not found; install it: apt-get install gcc libbpf-dev libelf-dev "
                        "zlib1g-dev libzstd-dev (or run: make deps)")

    def compile_agent(tmp: Path) -> None:
        proc = subprocess.run(agent_build_argv(source, tmp), capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostError("building the guest agent failed (need libbpf-dev libelf-dev "
                            f"zlib1g-dev libzstd-dev; run: make deps):\n{proc.stderr.strip()}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    return build_file(binary, compile_agent)


def find_busybox() -> Path:
    for path in BUSYBOX_PATHS:
        if path.is_file():
            return path
    raise HostError("busybox not found; install it: apt-get install busybox-static")


def initramfs_entries(busybox: bytes, agent: bytes, init: bytes) -> list[cpio.Entry]:
    """The initramfs members: directories, busybox, init script, agent."""
    dirs = ["bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "usr", "usr/bin", "usr/sbin"]
    return [
        *(cpio.directory(d) for d in dirs),
        cpio.regular("bin/busybox", busybox, executable=True),
        cpio.symlink("bin/sh", "busybox"),
        cpio.regular("init", init, executable=True),
        cpio.regular("bin/qstep-agent", agent, executable=True),
    ]


def build_initramfs() -> Path:
    """Build (or reuse) the initramfs and return its path."""
    busybox = find_busybox().read_bytes()
    agent = build_agent().read_bytes()
    init = (images_dir() / "init").read_bytes()
    path = cache_dir() / "initramfs" / f"qstep-{_digest(busybox, agent, init)}.cpio.gz"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    archive = cpio.write_newc(initramfs_entries(busybox, agent, init))
    return build_file(path, lambda tmp: tmp.write_bytes(
        gzip.compress(archive, compresslevel=6, mtime=0)))
