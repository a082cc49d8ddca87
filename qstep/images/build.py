"""Kernels built from a user's source tree (``qstep images build PATH``), for bisecting.

The configuration is x86_64 ``defconfig`` plus a minimal fragment that qstep
needs (BPF with the JIT, BTF, kprobes, perf events with hardware breakpoints,
the 8250 serial console, an initramfs, PCI for the agent's window), merged with
the tree's own ``merge_config.sh`` and completed by ``olddefconfig``. The
image is cached by what decides it: the tree's commit, its uncommitted changes
and the fragment, so ``git bisect run`` steps never rebuild a kernel twice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qstep.errors import HostError, UsageError
from qstep.images.cachelock import entry_lock, locked, staging
from qstep.paths import cache_dir

FRAGMENT = """\
CONFIG_64BIT=y
CONFIG_BPF=y
CONFIG_BPF_SYSCALL=y
CONFIG_BPF_JIT=y
CONFIG_BPF_JIT_ALWAYS_ON=y
CONFIG_BPF_EVENTS=y
CONFIG_DEBUG_INFO=y
CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y
CONFIG_DEBUG_INFO_BTF=y
CONFIG_KALLSYMS=y
CONFIG_KALLSYMS_ALL=y
CONFIG_KPROBES=y
CONFIG_KPROBE_EVENTS=y
CONFIG_PERF_EVENTS=y
CONFIG_HAVE_HW_BREAKPOINT=y
CONFIG_FTRACE=y
CONFIG_FUNCTION_TRACER=y
CONFIG_NET=y
CONFIG_INET=y
CONFIG_IPV6=y
CONFIG_NET_SCHED=y
CONFIG_NET_CLS_BPF=y
CONFIG_NET_ACT_BPF=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_PROC_FS=y
CONFIG_SYSFS=y
CONFIG_DEVTMPFS=y
CONFIG_PCI=y
CONFIG_MODULES=n
"""
REQUIRED = ("CONFIG_BPF_JIT", "CONFIG_DEBUG_INFO_BTF", "CONFIG_KPROBES", "CONFIG_PERF_EVENTS",
            "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_BLK_DEV_INITRD")


@dataclass(frozen=True)
class SourceTree:
    """A kernel source tree at one state."""

    path: Path
    commit: str
    changes: str  # ``git diff HEAD`` (empty for a clean tree)


def _git(tree: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError(f"{tree} is not a kernel git tree: {proc.stderr.strip()}")
    return proc.stdout


def source_tree(path: Path) -> SourceTree:
    """The state of the tree at ``path`` (a git checkout with a top-level Kbuild)."""
    if not (path / "Kbuild").is_file() or not (path / "arch/x86").is_dir():
        raise UsageError(f"{path} is not a Linux source tree (no Kbuild, arch/x86)")
    return SourceTree(path.resolve(), _git(path, "rev-parse", "HEAD").strip(),
                      _git(path, "diff", "HEAD"))


def build_key(tree: SourceTree, fragment: str = FRAGMENT) -> str:
    """The cache key: commit, uncommitted changes and configuration fragment."""
    h = hashlib.sha256()
    for part in (tree.commit, tree.changes, fragment):
        h.update(part.encode())
        h.update(b"\0")
    return f"{tree.commit[:12]}-{h.hexdigest()[:16]}"


def missing_options(config_text: str) -> list[str]:
    """Options qstep needs that a generated ``.config`` does not have set to y."""
    have = {line.split("=", 1)[0] for line in config_text.splitlines() if line.endswith("=y")}
    return [opt for opt in REQUIRED if opt not in have]


def make_argv(tree: SourceTree, out: Path, *targets: str) -> list[str]:
    """``make`` for an out-of-tree build directory."""
    return ["make", "-C", str(tree.path), f"O={out}", f"-j{os.cpu_count() or 1}", *targets]


def config_steps(tree: SourceTree, out: Path, fragment_file: Path) -> list[list[str]]:
    """defconfig, merge the fragment, olddefconfig."""
    merge = str(tree.path / "scripts/kconfig/merge_config.sh")
    return [make_argv(tree, out, "defconfig"),
            [merge, "-m", "-O", str(out), str(out / ".config"), str(fragment_file)],
            make_argv(tree, out, "olddefconfig")]


def built_image(key: str) -> Path:
    return cache_dir() / "kernels" / f"built-{key}" / "bzImage"


def build_kernel(path: Path) -> Path:
    """Build (or find cached) the kernel of the tree at ``path``; return its bzImage."""
    tree = source_tree(path)
    image = built_image(build_key(tree))
    with locked(entry_lock(image.parent)):
        if image.is_file():
            return image
        if shutil.which("pahole") is None:
            raise HostError("pahole is needed for CONFIG_DEBUG_INFO_BTF: apt-get install dwarves")
        out = cache_dir() / "build" / "kernel-objs" / image.parent.name
        out.mkdir(parents=True, exist_ok=True)
        fragment = out / "qstep.config"
        fragment.write_text(FRAGMENT)
        for argv in config_steps(tree, out, fragment):
            _run(argv)
        missing = missing_options((out / ".config").read_text())
        if missing:
            raise HostError(f"this tree's Kconfig did not enable {', '.join(missing)}")
        _run(make_argv(tree, out, "bzImage"))
        with staging(image.parent) as stage:
            shutil.copy2(out / "arch/x86/boot/bzImage", stage / "bzImage")
            shutil.copy2(out / ".config", stage / "config")
    return image


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise HostError(f"{' '.join(argv[:4])} failed ({proc.returncode}):\n{tail}")
