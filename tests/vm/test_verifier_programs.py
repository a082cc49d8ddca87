"""The verifier check over the test programs' real runs (loops, a bpf_loop callback,
branches, subprograms, dead code, .rodata switches, map types): never a finding, and
every instruction followed past the pruning points."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import matrix_kernels

from qstep.bpf.elf import BpfObject
from qstep.loadopts import LoadOptions
from qstep.session import Session
from qstep.verifier.runcheck import trace_and_check

pytestmark = pytest.mark.vm

# An Ethernet/IPv4/TCP frame to 10.0.0.10:80, padded to 64 bytes.
FRAME = bytes.fromhex("020000000a0102000000000208004500002812344000400600000"
                      "0c00002010a00000a9c400050000003e8000000005002faf000000000") + bytes(10)
PROGRAMS = ["calls", "maps", "alu", "vars", "deadsub", "deadcode", "config", "shapes",
            "maptypes", "tunnel", "entryval", "dupline", "scratch", "flowsum"]


@pytest.mark.parametrize("kernel", matrix_kernels())
def test_test_programs_runs_stay_inside_the_verifiers_states(
        guests: Callable[[str], Session], bpf_obj: Callable[[str], Path], kernel: str) -> None:
    session = guests(kernel)
    followed = {}
    for name in PROGRAMS:
        obj = BpfObject.open(bpf_obj(f"tests/progs/{name}.bpf.c"))
        for spec in obj.programs:
            if not spec.section.startswith(("xdp", "tc", "classifier")):
                continue
            with session.loaded(obj, spec.name, LoadOptions(verifier_log_size=64 << 20)) as prog:
                check = trace_and_check(session, prog, FRAME)
            assert check.report.findings == [], (spec.name, check.report.findings)
            followed[spec.name] = (check.report.steps, check.trace_insns, check.report.stopped)
    assert len(followed) >= len(PROGRAMS)
    assert {n: f for n, f in followed.items() if f[0] != f[1] or f[2]} == {}
    assert sum(f[1] for f in followed.values()) > 1000
