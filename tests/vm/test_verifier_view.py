"""The verifier's proof beside the real run: real runs stay inside it; a widened value
is reported at exactly its instruction."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import matrix_kernels

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import RunRequest
from qstep.debugger.trace import trace_run
from qstep.errors import UsageError
from qstep.loadopts import LoadOptions
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet
from qstep.verifier.check import Regs, Shown, check_run
from qstep.verifier.log import parse_log
from qstep.verifier.runcheck import runtime_steps

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"


def traced(session: Session, l4lb_obj: Path, packet: str):  # type: ignore[no-untyped-def]
    """(verifier log, runtime steps, instructions by index) of one traced run."""
    prog = session.load(BpfObject.open(l4lb_obj), "l4lb_ingress",
                        LoadOptions(verifier_log_size=64 << 20))
    try:
        for entry in read_map_file(EXAMPLE / "maps.txt"):
            key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
            session.update_map(prog, entry.map_name, key, value)
        request = RunRequest(read_packet(str(EXAMPLE / "packets" / packet)))
        with session.debugger(prog, request) as dbg:
            steps = list(runtime_steps(trace_run(dbg)))
    finally:
        session.unload(prog)
    return parse_log(prog.verifier_log), steps, {i.index: i for i in prog.insns}


@pytest.mark.parametrize("kernel", matrix_kernels())
@pytest.mark.parametrize("packet", ["ipv4_to_v4real.hex", "ctl_lookup_fail.hex",
                                    "ipv4_udp_to_v6real.hex"])
def test_real_runs_stay_inside_the_verifiers_bounds(
        guests: Callable[[str], Session], l4lb_obj: Path, packet: str, kernel: str) -> None:
    log, steps, program = traced(guests(kernel), l4lb_obj, packet)
    assert len(log.visits) == log.processed
    report = check_run(log, steps, program)
    assert report.findings == []
    # Every instruction of the trace is followed, past the pruning points.
    assert report.stopped == "" and report.steps == len(steps) > 60
    assert report.prunes >= 1 and report.registers > 150 and report.pointers > 50
    # Without the instructions the check cannot go past the first pruning point.
    first = check_run(log, steps)
    assert first.steps < len(steps) and first.stopped.endswith(
        "the verifier pruned this path: an earlier state there covers it")


def widened(steps: list[tuple[int, Regs, Shown]], step: int, reg: int, value: int
            ) -> list[tuple[int, Regs, Shown]]:
    """The run with ``reg`` before step ``step`` (1-based) replaced by ``value``."""
    out = list(steps)
    insn, regs, shown = out[step - 1]
    out[step - 1] = (insn, (*regs[:reg], value, *regs[reg + 1:]), shown)
    return out


def test_a_widened_value_is_reported_at_its_instruction(vm: Session, l4lb_obj: Path) -> None:
    log, steps, program = traced(vm, l4lb_obj, "ipv4_to_v4real.hex")
    clean = check_run(log, steps)
    # The first checked register the verifier bounded below 2**32: push it past its umax.
    step, insn, reg, umax = next(
        (n, insn, r, s.bound("umax"))
        for n, (insn, regs, _shown) in enumerate(steps, start=1) if n <= clean.steps
        for visit in [v for v in log.by_insn[insn] if not v.pruned][:1]
        for r, s in visit.regs.items()
        if s.type == "scalar" and regs[r] is not None and (s.bound("umax") or 1 << 40) < 1 << 32)
    assert umax is not None
    report = check_run(log, widened(steps, step, reg, umax + 1), program)
    assert [(f.step, f.insn, f.reg, f.value) for f in report.findings] == [
        (step, insn, reg, umax + 1)]


@pytest.mark.parametrize("kernel", matrix_kernels())
def test_a_violation_after_a_pruning_point_is_reported_at_its_step(
        guests: Callable[[str], Session], l4lb_obj: Path, kernel: str) -> None:
    # An IPv4 packet to an IPv6 real: its path meets states the verifier pruned.
    log, steps, program = traced(guests(kernel), l4lb_obj, "ipv4_udp_to_v6real.hex")
    pruned_at = check_run(log, steps).steps + 1  # the first pruning point's step
    assert pruned_at <= len(steps)
    # Each register value after it that the check trusts, pushed 2**40 over: the one
    # finding is at exactly that step and register, on the older path's claim.
    judged = 0
    for step in range(pruned_at, len(steps) + 1):
        insn, regs, _shown = steps[step - 1]
        for reg, value in enumerate(regs[:10]):
            if value is None:
                continue
            report = check_run(log, widened(steps, step, reg, (value + (1 << 40)) % (1 << 64)),
                               program)
            if report.findings:
                judged += 1
                assert [(f.step, f.insn, f.reg) for f in report.findings] == [(step, insn, reg)]
                assert report.findings[0].pruned_at is not None
    assert judged >= 9


def test_a_pointer_of_another_kind_is_reported(vm: Session, l4lb_obj: Path) -> None:
    log, steps, _program = traced(vm, l4lb_obj, "ipv4_to_v4real.hex")
    clean = check_run(log, steps)
    assert clean.findings == [] and clean.pointers > 50
    # insn 1 (l4lb.bpf.c:189) loads skb->data: before it, r1 is the context.
    insn, regs, shown = steps[1]
    assert (insn, shown[1]) == (1, "ctx")
    faked = [*steps[:1], (insn, regs, (shown[0], "pkt+0", *shown[2:])), *steps[2:]]
    report = check_run(log, faked)
    assert [(f.step, f.insn, f.reg, f.shown, f.claim.type) for f in report.findings] == [
        (2, 1, 1, "pkt+0", "ctx")]


def test_cli_says_zero_findings(l4lb_obj: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qstep.cli", "verify-verifier", str(l4lb_obj), "--prog",
         "l4lb_ingress", "--maps", str(EXAMPLE / "maps.txt"), "--packet",
         str(EXAMPLE / "packets" / "ipv6_to_v6real.hex")], capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-2] == "  0 soundness violations: every value lies inside the verifier's bounds"
    # The IPv6 path skips the IPv4-only and the drop paths the verifier still had to prove:
    # l4lb.bpf.c:160 takes an IPv4 real's address, :107-110 count drops.
    assert lines[-1].startswith("6.1: the verifier proved 227 instructions; ")
    assert "lines 107, 109, 110" in lines[-1] and ", 160" in lines[-1]


def test_info_verifier_at_a_stop(l4lb_obj: Path) -> None:
    # insn 24 (l4lb.bpf.c:205): `if r7 > r5`, the IP header length check; r5 = ihl & 15.
    proc = subprocess.run(
        [sys.executable, "-m", "qstep.cli", "debug", str(l4lb_obj), "--prog", "l4lb_ingress",
         "--maps", str(EXAMPLE / "maps.txt"), "--packet",
         str(EXAMPLE / "packets" / "ipv4_to_v4real.hex"), "--verifier-log", "--json",
         "-ex", "break #24", "-ex", "run", "-ex", "info verifier r5 r7 r1", "-ex", "print/v $r5"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout.splitlines()[-2])
    assert json.loads(proc.stdout.splitlines()[-1])["regs"] == {"r5": view["regs"]["r5"]}
    assert view["insn"] == 24
    assert view["regs"]["r5"] == {"value": 5, "inside": True,
                                  "verifier": ["scalar(umax=15,var_off=(0x0; 0xf))"]}
    assert view["regs"]["r7"] == {"value": 5, "inside": True, "verifier": ["5"]}
    assert view["regs"]["r1"]["verifier"] == ["ctx(off=0,imm=0)"]


def test_a_log_over_its_buffer_is_a_clear_error(vm: Session, l4lb_obj: Path) -> None:
    with pytest.raises(UsageError) as err:
        vm.load(BpfObject.open(l4lb_obj), "l4lb_ingress", LoadOptions(verifier_log_size=4096))
    assert str(err.value) == (
        "loading l4lb_ingress with the verifier's detailed log: the log is over 4096 bytes, so the "
        "kernel refused the load; load it without --verifier-log")
