"""Test kernels: the catalog in ``images/kernels.json``, fetched with apt into the cache.

Kernels come from Debian's registry as ``linux-image-*-cloud-amd64-unsigned``
packages. apt runs with a private sources list and state directory under the
cache, so the host's apt configuration is neither used nor changed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qstep.errors import HostError, UsageError
from qstep.paths import cache_dir, images_dir


@dataclass(frozen=True)
class KernelSpec:
    """One catalog entry."""

    alias: str
    package: str
    pattern: str
    description: str


@dataclass(frozen=True)
class Kernel:
    """A kernel image ready to boot."""

    name: str
    bzimage: Path
    release: str


def load_catalog() -> tuple[str, dict[str, KernelSpec], list[str]]:
    """Return (default alias, specs by alias, apt source lines)."""
    data = json.loads((images_dir() / "kernels.json").read_text())
    specs = {
        alias: KernelSpec(alias, e["package"], e["pattern"], e.get("description", ""))
        for alias, e in data["kernels"].items()
    }
    return data["default"], specs, list(data["apt_sources"])


def kernels_root() -> Path:
    return cache_dir() / "kernels"


def unpacked_dir(package: str) -> Path:
    return kernels_root() / package


def find_bzimage(root: Path) -> Path | None:
    """The ``boot/vmlinuz-*`` inside an unpacked kernel package, if any."""
    found = sorted((root / "boot").glob("vmlinuz-*"))
    return found[0] if found else None


def cached_kernels() -> list[Kernel]:
    """Kernels already unpacked in the cache."""
    result: list[Kernel] = []
    root = kernels_root()
    if not root.is_dir():
        return result
    for pkg_dir in sorted(root.iterdir()):
        image = find_bzimage(pkg_dir)
        if image is not None:
            result.append(Kernel(pkg_dir.name, image, image.name.removeprefix("vmlinuz-")))
    return result


class AptRegistry:
    """apt-get/apt-cache with private configuration under the cache."""

    def __init__(self, sources: list[str]) -> None:
        self.root = cache_dir() / "apt"
        self.sources = sources

    def _options(self) -> list[str]:
        lists = self.root / "lists"
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        sources_file = self.root / "sources.list"
        text = "\n".join(self.sources) + "\n"
        if not sources_file.exists() or sources_file.read_text() != text:
            sources_file.write_text(text)
        return [
            "-o", f"Dir::Etc::sourcelist={sources_file}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={lists}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
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

    def update(self) -> None:
        self._run(["apt-get", *self._options(), "update"])

    def has_lists(self) -> bool:
        lists = self.root / "lists"
        return lists.is_dir() and any(lists.glob("*_Packages*"))

    def package_names(self, pattern: str) -> list[str]:
        if not self.has_lists():
            self.update()
        out = self._run(["apt-cache", *self._options(), "pkgnames", "linux-image-"])
        regex = re.compile(pattern)
        return sorted(n for n in out.split() if regex.match(n))

    def download_and_unpack(self, package: str, dest: Path) -> None:
        if not self.has_lists():
            self.update()
        debs = self.root / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        self._run(["apt-get", *self._options(), "download", package], cwd=debs)
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        self._run(["dpkg-deb", "-x", str(deb), str(tmp)])
        tmp.rename(dest)
        deb.unlink()


def version_key(name: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", name)]


def resolve_kernel(name: str | None, fetch: bool = True) -> Kernel:
    """Resolve ``6.1``/``6.12``/a package name/a bzImage path to a bootable kernel."""
    default, specs, sources = load_catalog()
    name = name or default
    path = Path(name)
    if "/" in name or path.is_file():
        if not path.is_file():
            raise UsageError(f"kernel image {name} does not exist")
        return Kernel(path.name, path.resolve(), path.name)
    spec = specs.get(name)
    package = spec.package if spec else name
    target = unpacked_dir(package)
    image = find_bzimage(target)
    if image is None and spec is not None and not fetch:
        image = _newest_cached(spec.pattern)
    if image is not None:
        return Kernel(package, image, image.name.removeprefix("vmlinuz-"))
    if not fetch:
        raise HostError(f"kernel {name} is not cached; run: qstep images fetch {name}")
    return _fetch(name, spec, package, AptRegistry(sources))


def _newest_cached(pattern: str) -> Path | None:
    regex = re.compile(pattern)
    matches = [k for k in cached_kernels() if regex.match(k.name)]
    return max(matches, key=lambda k: version_key(k.name)).bzimage if matches else None


def _fetch(name: str, spec: KernelSpec | None, package: str, apt: AptRegistry) -> Kernel:
    if spec is None and not package.startswith("linux-image-"):
        known = ", ".join(sorted(load_catalog()[1]))
        raise UsageError(f"unknown kernel '{name}': use one of {known}, a package name "
                         "or a path to a bzImage")
    available = apt.package_names(spec.pattern if spec else re.escape(package) + "$")
    if package not in available:
        apt.update()
        available = apt.package_names(spec.pattern if spec else re.escape(package) + "$")
    if package not in available:
        if spec is None or not available:
            raise HostError(f"kernel package {package} is not in the registry")
        newest = max(available, key=version_key)
        print(f"qstep: note: {package} is no longer in the registry; using {newest}")
        package = newest
    target = unpacked_dir(package)
    if find_bzimage(target) is None:
        print(f"qstep: fetching kernel {package} ...", flush=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        apt.download_and_unpack(package, target)
    image = find_bzimage(target)
    if image is None:
        raise HostError(f"package {package} holds no boot/vmlinuz-*")
    return Kernel(package, image, image.name.removeprefix("vmlinuz-"))


def catalog_rows() -> list[tuple[str, str, str, str]]:
    """Rows for ``qstep images list``: (alias, package, state, description)."""
    default, specs, _ = load_catalog()
    rows = []
    cached = {k.name for k in cached_kernels()}
    for alias, spec in specs.items():
        mark = " (default)" if alias == default else ""
        state = "cached" if spec.package in cached else "fetchable"
        rows.append((alias + mark, spec.package, state, spec.description))
    listed = {s.package for s in specs.values()}
    for extra in sorted(cached - listed):
        rows.append(("-", extra, "cached", "fetched by package name"))
    return rows
