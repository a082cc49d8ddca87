"""Tail-call targets named in an object's prog array initialiser are loaded with it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qstep.bpf.elf import BpfObject
from qstep.bpf.progarray import prog_array_targets
from qstep.loadopts import LoadOptions


def test_prog_array_targets_are_loaded_too(bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("tests/progs/tailcall.bpf.c"))
    assert prog_array_targets(obj) == ["tail_v4", "tail_v6"]
    assert LoadOptions().agent_tokens(obj) == ["also", "tail_v4", "also", "tail_v6"]


def test_objects_without_one_load_nothing_more(bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("examples/l4lb/l4lb.bpf.c"))
    assert prog_array_targets(obj) == []
    assert LoadOptions(prog_type=6).agent_tokens(obj) == ["prog_type", 6]
