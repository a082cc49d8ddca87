"""``qstep images``: list, fetch and build kernels and the guest image."""

from __future__ import annotations

import argparse
from pathlib import Path

from qstep.images.build import build_kernel
from qstep.images.guest import build_initramfs
from qstep.images.kernels import catalog_rows, kernel_names, resolve_kernel
from qstep.images.qemu import resolve_emulator
from qstep.recorder.plugin import find_plugin


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("images", help="test kernels and the guest image")
    isub = p.add_subparsers(dest="images_cmd", required=True, metavar="{list,fetch,build,qemu}")
    isub.add_parser("list", help="kernels cached and fetchable").set_defaults(func=list_main)
    f = isub.add_parser("fetch", help="fetch a kernel into the cache")
    f.add_argument("kernel", nargs="?",
                   help="6.1 (default), 6.12, 7.2, 7.3, a comma list, all, or a package name")
    f.set_defaults(func=fetch_main)
    b = isub.add_parser("build", help="build a kernel from a source tree (PATH), or without "
                        "PATH the agent and initramfs")
    b.add_argument("path", nargs="?", help="a Linux git tree: built with a minimal BPF config, "
                   "cached by commit and config; use the image with --kernel")
    b.set_defaults(func=build_main)
    q = isub.add_parser("qemu", help="fetch the emulator QSTEP_QEMU selects (default QEMU 10) "
                          "and build the recorder plugin for it")
    q.set_defaults(func=qemu_main)


def list_main(args: argparse.Namespace) -> int:
    rows = [("KERNEL", "PACKAGE", "VERSION", "STATE", "DESCRIPTION"), *catalog_rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def fetch_main(args: argparse.Namespace) -> int:
    names: list[str | None] = [*kernel_names(args.kernel)] if args.kernel else [None]
    for name in names:
        kernel = resolve_kernel(name)
        print(f"{kernel.name}: {kernel.bzimage}")
    return 0


def build_main(args: argparse.Namespace) -> int:
    print(build_kernel(Path(args.path)) if args.path else build_initramfs())
    return 0


def qemu_main(args: argparse.Namespace) -> int:
    emulator = resolve_emulator()
    print(emulator.binary)
    plugin, why_not = find_plugin(emulator)  # built now, not in the first session
    print(plugin if plugin is not None else f"no recorder: {why_not}")
    return 0
