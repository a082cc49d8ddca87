"""The VS Code extension: the .vsix builds with vsce, its manifest declares the qstep
debugger, and every launch snippet validates against the extension's own schema."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from qstep.paths import cache_dir

EXT = Path(__file__).parents[2] / "editors" / "vscode"


def _debugger() -> dict[str, Any]:
    manifest = json.loads((EXT / "package.json").read_text())
    return next(d for d in manifest["contributes"]["debuggers"] if d["type"] == "qstep")


def test_vsix_builds_and_declares_the_debugger(tmp_path: Path) -> None:
    vsce = cache_dir() / "node" / "node_modules" / ".bin" / "vsce"
    if not vsce.exists():
        pytest.fail("vsce is missing: run 'make deps' (scripts/install-deps.sh)")
    out = tmp_path / "qstep.vsix"
    subprocess.run([str(vsce), "package", "--no-dependencies", "-o", str(out)], cwd=EXT,
                   check=True, capture_output=True, timeout=300)
    with zipfile.ZipFile(out) as vsix:
        manifest = json.loads(vsix.read("extension/package.json"))
        assert "extension/extension.js" in vsix.namelist()
    assert [d["type"] for d in manifest["contributes"]["debuggers"]] == ["qstep"]
    assert manifest["contributes"]["commands"][0]["title"] == "Debug this BPF program"


def test_snippets_validate_against_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    debugger = _debugger()
    schemas = debugger["configurationAttributes"]
    bodies = [s["body"] for s in debugger["configurationSnippets"]]
    bodies += list(debugger["initialConfigurations"])
    assert len(bodies) == 4
    for body in bodies:
        jsonschema.validate(body, schemas[body["request"]])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "qstep", "request": "launch", "program": "x.o"},
                            schemas["launch"])
