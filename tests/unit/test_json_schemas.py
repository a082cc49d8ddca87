"""docs/schemas: valid JSON Schemas that refuse what the commands never print."""

from __future__ import annotations

import json

import jsonschema
import pytest

from qstep.paths import REPO_ROOT

SCHEMAS = REPO_ROOT / "docs" / "schemas"


@pytest.mark.parametrize("name", ["run", "disasm", "inspect", "trace"])
def test_schema_is_valid(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(
        json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


@pytest.mark.parametrize("name, doc", [
    ("run", {"program": "p", "type": "xdp", "id": 1, "kernel": "6.1", "maps": {},
             "runs": [{"packet": "x", "retval_name": None, "duration_ns": 1,
                       "packet_in": "00", "packet_out": "00"}]}),  # no retval
    ("trace", {"step": 0, "insn": 0, "function": "f", "offset": 0, "file": None,
               "line": None}),  # steps count from 1
    ("trace", {"step": 1, "insn": 0, "function": "f", "offset": 0, "file": None, "line": None,
               "regs": {"r11": 0}}),  # no such BPF register
    ("inspect", {"probe": 1, "hit": 1, "run": 1, "values": []}),  # no insn
    ("disasm", {"program": "p", "id": 1, "kernel": "6.1", "functions": [{"blocks": []}]}),
])
def test_schema_refuses(name: str, doc: object) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
