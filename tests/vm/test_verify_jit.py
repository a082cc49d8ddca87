"""verify-jit: real runs agree with BPF semantics; an injected fault is found exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import Debugger, RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.oracle.lockstep import lockstep
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PACKET = EXAMPLE / "packets" / "ipv4_to_v4real.hex"
FAULT_STEP = 50


def loaded_example(vm: Session, l4lb_obj: Path):  # type: ignore[no-untyped-def]
    prog = vm.load(BpfObject.open(l4lb_obj), "l4lb_ingress")
    for entry in read_map_file(EXAMPLE / "maps.txt"):
        key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
        vm.update_map(prog, entry.map_name, key, value)
    return prog


def test_an_injected_register_fault_is_reported_at_its_instruction(
        vm: Session, l4lb_obj: Path) -> None:
    request = RunRequest(read_packet(str(PACKET)))
    prog = loaded_example(vm, l4lb_obj)
    try:
        with vm.debugger(prog, request) as dbg:
            steps = [r for r in trace_run(dbg) if isinstance(r, TraceRecord)]
        faulty_site = steps[FAULT_STEP - 1].site
        with vm.debugger(prog, request) as dbg:
            report = lockstep(dbg, read_regs=corrupting(dbg, FAULT_STEP))
    finally:
        vm.unload(prog)
    div = report.divergence
    assert div is not None
    assert (div.step, div.site.index) == (FAULT_STEP, faulty_site.index)
    assert report.checked == FAULT_STEP - 1
    good = div.expected[10]
    assert div.what == f"r10 is {good ^ 0x40:#x}, BPF semantics give {good:#x}"


def corrupting(dbg: Debugger, step: int):  # type: ignore[no-untyped-def]
    """Registers as the debugger reads them, but r10 wrong after the given step."""
    calls = 0

    def read() -> tuple[int, ...]:
        nonlocal calls
        calls += 1
        values = dbg.regs().values
        if calls == 2 * step:  # lockstep reads before, then after, each instruction
            return (*values[:10], values[10] ^ 0x40, *values[11:])
        return values
    return read


def test_cli_reports_agreement_on_both_kernels(l4lb_obj: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qstep.cli", "verify-jit", str(l4lb_obj), "--prog",
         "l4lb_ingress", "--maps", str(EXAMPLE / "maps.txt"), "--packet", str(PACKET),
         "--kernel", "6.1,6.12", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [(r["kernel"], r["checked"], r["retval"], r["divergence"], r["method"])
            for r in results] == [("6.1", 144, 7, None, "recorded"),
                                  ("6.12", 144, 7, None, "recorded")]


def test_cli_over_a_scenario() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qstep.cli", "verify-jit",
         str(REPO_ROOT / "tests" / "scenarios" / "alu_v4.toml"), "--stepped"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "6.12 b = -3: 49 instructions agree with BPF semantics (retval 13795, stepped run)"]
