"""The object a scenario names: the given ELF file, or its C source compiled."""

from __future__ import annotations

from pathlib import Path

from qstep.bpf.compile import compile_c
from qstep.errors import ObjectError
from qstep.scenario.model import Scenario


def object_of(scenario: Scenario) -> Path:
    """The scenario's BPF object path, compiling ``source`` with the pinned clang."""
    if scenario.source is not None:
        return compile_c(scenario.source, scenario.cflags)
    assert scenario.object is not None  # the loader requires one of the two
    if not scenario.object.is_file():
        raise ObjectError(f"{scenario.file}: object {scenario.object} does not exist")
    return scenario.object
