"""The README's Python API example runs and prints what the README says it prints."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qstep.paths import REPO_ROOT

pytestmark = pytest.mark.vm


def readme_blocks() -> tuple[str, str]:
    """The ``python`` block of the "Python API" section and the ``text`` block after it."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    output = re.search(r"```text\n(.*?)```", section, re.S)
    assert code is not None and output is not None
    return code.group(1), output.group(1)


def test_the_readme_example_prints_what_the_readme_shows(l4lb_obj: Path,
                                                         tmp_path: Path) -> None:
    code, expected = readme_blocks()
    shutil.copy(l4lb_obj, tmp_path / "l4lb.bpf.o")
    (tmp_path / "examples").symlink_to(REPO_ROOT / "examples")
    (tmp_path / "example.py").write_text(code)
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected
