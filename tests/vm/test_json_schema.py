"""The --json output of run, disasm, inspect and trace matches its schema in docs/schemas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from qstep.paths import REPO_ROOT

pytestmark = pytest.mark.vm

SCHEMAS = REPO_ROOT / "docs" / "schemas"
EXAMPLE = REPO_ROOT / "examples" / "l4lb"
INPUTS = ["--maps", str(EXAMPLE / "maps.txt"),
          "--packet", str(EXAMPLE / "packets" / "ipv4_to_v4real.hex")]


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def qstep_json(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "qstep.cli", *args, "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("command, extra, lines", [
    ("run", INPUTS, False),
    ("disasm", [], False),
    ("inspect", ["process_packet print $r1, stats if $r3 == 0", *INPUTS], True),
    ("trace", [*INPUTS, "--mem"], True),
])
def test_json_output_matches_its_schema(l4lb_obj: Path, command: str, extra: list[str],
                                        lines: bool) -> None:
    args = [command, str(l4lb_obj)]
    if command == "inspect":  # the spec comes right after the program
        args += extra[:1]
        extra = extra[1:]
    out = qstep_json(*args, *extra)
    docs: list[Any] = ([json.loads(line) for line in out.splitlines()] if lines
                       else [json.loads(out)])
    check = validator(command)
    for doc in docs:
        check.validate(doc)
    if command == "inspect":
        assert "summary" in docs[-1] and docs[-1]["summary"][0]["printed"] == len(docs) - 1
    if command == "trace":
        assert docs[-1].get("retval") == 7 or docs[-2].get("retval") == 7  # TC_ACT_REDIRECT
