"""Test kernels: the catalog in ``images/kernels.json``, fetched with apt into the cache.

Kernels come from Debian's registry: up to 6.x as ``linux-image-*-cloud-amd64-unsigned``
(image at ``boot/vmlinuz-REL``), from 7.x as ``linux-binary-unsigned-*-cloud-amd64``
(image at ``usr/lib/modules/REL/vmlinuz.unsigned``). Each catalog entry pins a
package and its Debian version.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from qstep.errors import HostError, UsageError
from qstep.images.apt import AptRegistry, installed_version
from qstep.paths import cache_dir, images_dir

BZIMAGE_MAGIC_AT = 0x202  # "HdrS": the x86 boot protocol header of a bzImage


@dataclass(frozen=True)
class KernelSpec:
    """One catalog entry."""

    alias: str
    package: str
    pattern: str
    description: str
    version: str | None = None  # Debian package version pinned for reproducible runs


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
        alias: KernelSpec(alias, e["package"], e["pattern"], e.get("description", ""),
                          e.get("version"))
        for alias, e in data["kernels"].items()
    }
    return data["default"], specs, list(data["apt_sources"])


def kernels_root() -> Path:
    return cache_dir() / "kernels"


def unpacked_dir(package: str) -> Path:
    return kernels_root() / package


def find_bzimage(root: Path) -> Path | None:
    """The kernel image inside an unpacked kernel package, if any."""
    found = sorted((root / "boot").glob("vmlinuz-*"))
    found += sorted((root / "usr/lib/modules").glob("*/vmlinuz.unsigned"))
    found += sorted((root / "usr/lib/modules").glob("*/vmlinuz"))
    return found[0] if found else None


def image_release(image: Path) -> str:
    """``uname -r`` of a packaged image: from ``vmlinuz-REL`` or ``modules/REL/vmlinuz*``."""
    if image.name.startswith("vmlinuz-"):
        return image.name.removeprefix("vmlinuz-")
    return image.parent.name


def _packaged(name: str, image: Path) -> Kernel:
    return Kernel(name, image, image_release(image))


def cached_kernels() -> list[Kernel]:
    """Kernels already unpacked in the cache."""
    result: list[Kernel] = []
    root = kernels_root()
    if not root.is_dir():
        return result
    for pkg_dir in sorted(root.iterdir()):
        image = None if pkg_dir.name.startswith(".") else find_bzimage(pkg_dir)
        if image is not None:
            result.append(_packaged(pkg_dir.name, image))
    return result


def version_key(name: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", name)]


def resolve_kernel(name: str | None, fetch: bool = True) -> Kernel:
    """Resolve ``6.1``/``6.12``/a package name/a bzImage path to a bootable kernel."""
    default, specs, sources = load_catalog()
    name = name or default
    path = Path(name)
    if "/" in name or path.is_file():
        check_bzimage(path)
        return Kernel(path.name, path.resolve(), path.name)
    spec = specs.get(name)
    package = spec.package if spec else name
    target = unpacked_dir(package)
    image = find_bzimage(target)
    if image is None and spec is not None and not fetch:
        image = _newest_cached(spec.pattern)
    if image is not None:
        return _packaged(package, image)
    if not fetch:
        raise HostError(f"kernel {name} is not cached; run: qstep images fetch {name}")
    return _fetch(name, spec, package, AptRegistry(sources))


def check_bzimage(path: Path) -> None:
    """Refuse, before QEMU is started, a path that is not a bootable x86 kernel image."""
    if path.is_dir():
        raise UsageError(f"--kernel {path}: a directory, not a kernel image")
    try:
        with open(path, "rb") as f:
            head = f.read(BZIMAGE_MAGIC_AT + 4)
    except OSError as err:
        raise UsageError(f"--kernel {path}: {err.strerror}") from None
    if head[BZIMAGE_MAGIC_AT:] != b"HdrS":
        raise UsageError(f"--kernel {path}: not a Linux kernel image (no x86 boot header "
                         "'HdrS' at offset 0x202; give a bzImage such as vmlinuz-*)")


def _newest_cached(pattern: str) -> Path | None:
    regex = re.compile(pattern)
    matches = [k for k in cached_kernels() if regex.match(k.name)]
    return max(matches, key=lambda k: version_key(k.name)).bzimage if matches else None


def _note(text: str) -> None:
    print(f"qstep: {text}", file=sys.stderr, flush=True)


def _image_candidates(package: str) -> list[str]:
    """Packages that may hold the image of ``package``: 7.x moved it to linux-binary-unsigned."""
    release = package.removeprefix("linux-image-").removeprefix("linux-binary-unsigned-")
    release = release.removesuffix("-unsigned")
    return list(dict.fromkeys([package, f"linux-image-{release}-unsigned",
                               f"linux-binary-unsigned-{release}"]))


def _choose_package(name: str, spec: KernelSpec | None, package: str,
                    apt: AptRegistry) -> str:
    if spec is None and not package.startswith(("linux-image-", "linux-binary-unsigned-")):
        known = ", ".join(sorted(load_catalog()[1]))
        raise UsageError(f"unknown kernel '{name}': use one of {known}, a package name "
                         "or a path to a bzImage")
    wanted = [package] if spec else _image_candidates(package)
    pattern = spec.pattern if spec else "|".join(re.escape(w) + "$" for w in wanted)
    available = apt.package_names(pattern, prefix="linux-")
    if not any(w in available for w in wanted):
        apt.update()
        available = apt.package_names(pattern, prefix="linux-")
    found = next((w for w in wanted if w in available), None)
    if found is not None:
        return found
    if spec is None or not available:
        raise HostError(f"kernel package {package} is not in the registry")
    newest = max(available, key=version_key)
    _note(f"note: {package} is no longer in the registry; using {newest}")
    return newest


def _fetch(name: str, spec: KernelSpec | None, package: str, apt: AptRegistry) -> Kernel:
    package = _choose_package(name, spec, package, apt)
    version = spec.version if spec is not None and package == spec.package else None
    if version is not None and version not in apt.versions(package):
        _note(f"note: {package} {version} is no longer in the registry; using its newest")
        version = None
    target = unpacked_dir(package)
    if find_bzimage(target) is None:
        _note(f"fetching kernel {package} {version or ''}...")
        apt.download_and_unpack(package, target, version)
    image = find_bzimage(target)
    if image is None:
        raise HostError(f"package {package} holds no kernel image (boot/vmlinuz-* or "
                        "usr/lib/modules/*/vmlinuz*)")
    return _packaged(package, image)


def kernel_names(arg: str) -> list[str]:
    """``all`` → every catalog alias; ``6.1,7.3`` → both; anything else → itself."""
    if arg == "all":
        return list(load_catalog()[1])
    return [part.strip() for part in arg.split(",") if part.strip()]


def catalog_rows() -> list[tuple[str, str, str, str, str]]:
    """Rows for ``qstep images list``: (alias, package, version, state, description)."""
    default, specs, _ = load_catalog()
    rows = []
    cached = {k.name: installed_version(unpacked_dir(k.name)) for k in cached_kernels()}
    for alias, spec in specs.items():
        mark = " (default)" if alias == default else ""
        state = "cached" if spec.package in cached else "fetchable"
        version = (cached[spec.package] or "unrecorded") if spec.package in cached \
            else spec.version or "-"
        rows.append((alias + mark, spec.package, version, state, spec.description))
    for extra in sorted(set(cached) - {s.package for s in specs.values()}):
        rows.append(("-", extra, cached[extra] or "-", "cached", "fetched by package name"))
    return rows
