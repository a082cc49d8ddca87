"""Kernel modules of a cached kernel package, for loading into the guest.

Debian's kernel packages ship ``lib/modules/REL/kernel/**/*.ko`` (6.1:
uncompressed; 6.12: ``.ko.xz``; 7.x: in a separate ``linux-modules-*``
package, unpacked under ``usr/lib/modules``). The package has no
``modules.dep`` (depmod runs at install), so dependencies come from each
module's own ``.modinfo`` (``depends=``, ``softdep=pre:``). Images are
decompressed here, so the guest only needs ``init_module``.
"""

from __future__ import annotations

import gzip
import json
import lzma
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from qstep.errors import HostError, UsageError
from qstep.images.apt import AptRegistry
from qstep.images.cachelock import entry_lock, locked, write_atomic
from qstep.images.kernels import Kernel, kernels_root, load_catalog, unpacked_dir
from qstep.paths import cache_dir

SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


@dataclass(frozen=True)
class Module:
    """One module image, ready for ``init_module``."""

    name: str
    image: bytes


def canonical(name: str) -> str:
    """The kernel's module name: dashes and underscores are the same."""
    return name.replace("-", "_")


def module_root(kernel: Kernel, fetch: bool = True) -> Path:
    """``.../modules/REL`` of a cached kernel; ``UsageError`` if it has none.

    7.x kernels keep their modules in a package of their own
    (``linux-modules-REL``), fetched here on first use.
    """
    roots = kernels_root()
    candidates = [p for p in kernel.bzimage.parents if roots in p.parents]
    candidates += [p for p in roots.iterdir() if p.is_dir()] if roots.is_dir() else []
    for base in candidates:
        for sub in ("lib/modules", "usr/lib/modules"):
            root = base / sub / kernel.release
            if (root / "kernel").is_dir():
                return root
    if fetch and roots in kernel.bzimage.parents and _fetch_modules(kernel.release):
        return module_root(kernel, fetch=False)
    raise UsageError(f"kernel {kernel.release} has no modules in the cache (a kernel given "
                     "as a bzImage path brings none)")


def _fetch_modules(release: str) -> bool:
    """Unpack ``linux-modules-REL`` (Debian's 7.x packaging) into the cache."""
    package = f"linux-modules-{release}"
    apt = AptRegistry(load_catalog()[2])
    if not apt.package_names(re.escape(package) + "$", prefix=package):
        return False
    print(f"qstep: fetching {package} (kernel modules)...", file=sys.stderr)
    apt.download_and_unpack(package, unpacked_dir(package))
    return True


def decompress(path: Path) -> bytes:
    """A module file's ELF bytes."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise HostError(f"{path.name} is zstd-compressed; install zstd (apt-get install zstd)")
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True,
                              check=True).stdout
    return data


def modinfo(image: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` key=value strings of a module image."""
    try:
        sec = ELFFile(BytesIO(image)).get_section_by_name(".modinfo")
    except ELFError as exc:
        raise HostError(f"not a kernel module: {exc}") from None
    info: dict[str, list[str]] = {}
    for item in (sec.data() if sec is not None else b"").split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def defines(image: bytes, symbol: str) -> bool:
    """Whether a module image defines (not only uses) ``symbol``."""
    try:
        symtab = ELFFile(BytesIO(image)).get_section_by_name(".symtab")
    except ELFError:
        return False
    if not isinstance(symtab, SymbolTableSection):
        return False
    return any(sym["st_shndx"] != "SHN_UNDEF" for sym in symtab.get_symbol_by_name(symbol) or [])


def dependencies(info: dict[str, list[str]]) -> list[str]:
    """Modules to load before this one: ``depends`` and ``softdep`` ``pre:`` names."""
    names = [d for dep in info.get("depends", []) for d in dep.split(",") if d]
    for soft in info.get("softdep", []):
        pre = soft.split("post:")[0].strip().removeprefix("pre:")
        names += pre.split()
    return [canonical(n) for n in names]


class ModuleTree:
    """The modules of one kernel: find by name, resolve dependencies."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = {canonical(_stem(p.name)): p
                      for p in (root / "kernel").rglob("*.ko*") if p.name.endswith(SUFFIXES)}
        builtin = root / "modules.builtin"
        self.builtin = {canonical(_stem(Path(line).name))
                        for line in (builtin.read_text().split() if builtin.is_file() else [])}

    def providers(self, symbol: str) -> list[str]:
        """The modules that define ``symbol`` (e.g. a kfunc), cached per kernel."""
        cache = cache_dir() / "modules" / f"{self.root.name}.json"
        with locked(entry_lock(cache)):  # other processes add symbols to the same file
            known: dict[str, list[str]] = json.loads(cache.read_text()) if cache.is_file() \
                else {}
            if symbol not in known:
                needle = b"\0" + symbol.encode() + b"\0"
                known[symbol] = sorted(name for name, path in self.files.items()
                                       if needle in (image := decompress(path))
                                       and defines(image, symbol))
                write_atomic(cache, json.dumps(known, indent=1, sort_keys=True))
        return known[symbol]

    def load_order(self, names: list[str]) -> list[Module]:
        """The modules ``names`` need, dependencies first; built-in ones are skipped."""
        order: list[Module] = []
        seen: set[str] = set()
        for name in names:
            self._visit(canonical(name), order, seen, required=True)
        return order

    def _visit(self, name: str, order: list[Module], seen: set[str], required: bool) -> None:
        if name in seen or name in self.builtin:
            return
        seen.add(name)
        path = self.files.get(name)
        if path is None:
            if required:
                raise UsageError(f"no kernel module '{name}' in {self.root}")
            return  # a softdep alias that is not a module file (e.g. built in)
        image = decompress(path)
        info = modinfo(image)
        for dep in dependencies(info):
            self._visit(dep, order, seen, required=dep in _hard(info))
        order.append(Module(name, image))


def _hard(info: dict[str, list[str]]) -> set[str]:
    return {canonical(d) for dep in info.get("depends", []) for d in dep.split(",") if d}


def _stem(filename: str) -> str:
    return filename.split(".ko", 1)[0]
