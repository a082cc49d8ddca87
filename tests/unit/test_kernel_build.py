"""``qstep images build``: the configuration it generates and the cache key (no kernel build)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qstep.errors import UsageError
from qstep.images.build import (
    FRAGMENT,
    REQUIRED,
    build_key,
    config_steps,
    missing_options,
    source_tree,
)


def fake_tree(root: Path) -> Path:
    (root / "arch/x86").mkdir(parents=True)
    (root / "Kbuild").write_text("obj-y += kernel/\n")
    for argv in (["init", "-q"], ["add", "."],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v6.99"]):
        subprocess.run(["git", "-C", str(root), *argv], check=True)
    return root


def test_the_fragment_enables_what_qstep_needs() -> None:
    assert missing_options(FRAGMENT) == []
    assert set(REQUIRED) <= {ln.split("=")[0] for ln in FRAGMENT.splitlines()}
    without_btf = FRAGMENT.replace("CONFIG_DEBUG_INFO_BTF=y", "# CONFIG_DEBUG_INFO_BTF is not set")
    assert missing_options(without_btf) == ["CONFIG_DEBUG_INFO_BTF"]


def test_key_follows_commit_changes_and_configuration(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "linux")
    tree = source_tree(root)
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert (tree.commit, tree.changes) == (head, "")
    key = build_key(tree)
    assert key.startswith(head[:12] + "-") and build_key(source_tree(root)) == key
    assert build_key(tree, FRAGMENT + "CONFIG_IPV6=n\n") != key
    (root / "Kbuild").write_text("obj-y += kernel/ mm/\n")
    dirty = source_tree(root)
    assert "mm/" in dirty.changes and build_key(dirty) != key


def test_config_steps_build_out_of_tree(tmp_path: Path) -> None:
    tree = source_tree(fake_tree(tmp_path / "linux"))
    out = tmp_path / "out"
    steps = config_steps(tree, out, out / "qstep.config")
    assert [s[-1] for s in steps] == ["defconfig", str(out / "qstep.config"), "olddefconfig"]
    assert steps[1][:4] == [str(tree.path / "scripts/kconfig/merge_config.sh"), "-m", "-O",
                            str(out)]
    assert all(f"O={out}" in s for s in (steps[0], steps[2]))


def test_a_directory_that_is_not_a_kernel_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a Linux source tree"):
        source_tree(tmp_path)
