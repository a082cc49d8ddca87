"""Kernel catalog and fetches from the Debian registry into an empty cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qstep.images.kernels import load_catalog
from qstep.paths import images_dir

pytestmark = pytest.mark.net
FETCHERS = 3


def test_catalog_pins_every_series_to_a_package_and_version() -> None:
    default, specs, sources = load_catalog()
    assert default == "6.1"
    assert sorted(specs, key=lambda a: [int(x) for x in a.split(".")]) == \
        ["6.1", "6.12", "7.2", "7.3"]
    for spec in specs.values():
        assert spec.version, spec.alias
        assert spec.package.startswith(("linux-image-", "linux-binary-unsigned-"))
        assert f"-{spec.alias}." in spec.package or f"-{spec.alias}-" in spec.package
    assert any("trixie-backports" in s for s in sources)
    assert any(" sid " in s for s in sources)


def test_concurrent_first_fetches_on_an_empty_cache_all_succeed(tmp_path: Path) -> None:
    """N ``qstep images fetch 7.3`` at once on an empty cache: all succeed, nothing half-made."""
    if os.geteuid() != 0:
        pytest.skip("apt's private state needs root")
    # The real 7.3 catalog entry, with only the suite that has it (small package lists).
    data = json.loads((images_dir() / "kernels.json").read_text())
    catalog = tmp_path / "images"
    catalog.mkdir()
    (catalog / "kernels.json").write_text(json.dumps({
        "default": "7.3", "kernels": {"7.3": data["kernels"]["7.3"]},
        "apt_sources": [s for s in data["apt_sources"] if " trixie-backports " in s]}))
    cache = tmp_path / "cache"
    env = {**os.environ, "QSTEP_CACHE": str(cache), "QSTEP_IMAGES_DIR": str(catalog)}
    qstep = str(Path(sys.executable).parent / "qstep")
    procs = [subprocess.Popen([qstep, "images", "fetch", "7.3"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(FETCHERS)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * FETCHERS, [err for _, err in results]
    _, specs, _ = load_catalog()
    package = specs["7.3"].package
    release = package.removeprefix("linux-binary-unsigned-")
    image = cache / "kernels" / package / "usr/lib/modules" / release / "vmlinuz.unsigned"
    assert {out.strip() for out, _ in results} == {f"{package}: {image}"}
    assert image.stat().st_size > 10_000_000
    assert (image.read_bytes()[0x202:0x206]) == b"HdrS"  # a bzImage's setup header
    left = sorted(p.name for p in (cache / "kernels").iterdir() if not p.name.endswith(".lock"))
    assert left == [package]
    assert (cache / "kernels" / package / ".qstep-package-version").read_text() == \
        specs["7.3"].version + "\n"
