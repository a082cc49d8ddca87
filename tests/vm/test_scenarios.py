"""`qstep test`: the bundled example's scenario, its reports and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qstep.paths import REPO_ROOT

pytestmark = pytest.mark.vm

SCENARIO = REPO_ROOT / "examples" / "l4lb" / "scenario.toml"


def qstep_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qstep.cli", "test", *args],
                          capture_output=True, text=True, timeout=900)


def variant(tmp_path: Path, *changes: tuple[str, str]) -> Path:
    """A copy of the example scenario beside it (relative paths keep working)."""
    text = SCENARIO.read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new, 1)
    path = SCENARIO.parent / f".variant-{tmp_path.name}.toml"
    path.write_text(text)
    return path


def test_example_scenario_passes_with_junit_and_json(tmp_path: Path) -> None:
    junit, out = tmp_path / "junit.xml", tmp_path / "results.json"
    proc = qstep_test(str(SCENARIO), "--kernel", "6.1", "--junit", str(junit),
                      "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "9 passed, 0 failed"
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "l4lb [6.1]"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("9", "0", "0")
    results = json.loads(out.read_text())
    assert results["exit_code"] == 0
    by_case = {c["case"]: c for c in results["checks"]}
    assert by_case["ctl_lookup_fail"]["details"]["retval_name"] == "TC_ACT_SHOT"


def test_a_wrong_expectation_fails_with_exit_1(tmp_path: Path) -> None:
    path = variant(tmp_path, ('"{packets: 25, bytes: 1800}"', '"{packets: 24, bytes: 1800}"'),
                   ("hits = 25", "hits = 24"), ("insns = 144", "insns = 143"))
    try:
        proc = qstep_test(str(path), "--kernel", "6.1")
    finally:
        path.unlink()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert ("        maps: stats[1]: expected {packets: 24, bytes: 1800}, got "
            "{packets: 25, bytes: 1800}") in lines
    assert "        inspect 'l4lb.bpf.c:144 print \"vip found\"': expected 24 hits, got 25" in lines
    assert "        trace: expected 143 instructions, ran 144" in lines
    assert lines[-1] == "7 passed, 2 failed"


def test_untestable_kernel_and_source_give_125(tmp_path: Path) -> None:
    proc = qstep_test(str(SCENARIO), "--kernel", str(tmp_path / "no-such-bzImage"))
    assert proc.returncode == 125, proc.stdout + proc.stderr
    assert "ERROR l4lb" in proc.stdout
    broken = tmp_path / "broken.bpf.c"
    broken.write_text("int f(void) { return nope; }\n")
    toml = tmp_path / "s.toml"
    toml.write_text('[scenario]\nsource = "broken.bpf.c"\n')
    proc = qstep_test(str(toml))
    assert proc.returncode == 125
    assert "broken.bpf.c does not compile" in proc.stdout
    assert "use of undeclared identifier 'nope'" in proc.stdout


def test_malformed_scenario_is_a_usage_error(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('[scenario]\nsource = "x.c"\n[[case]]\npackt = "p.hex"\n')
    proc = qstep_test(str(toml))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"qstep: error: {toml}:4: unknown key 'case[0].packt'; "
                                   "expected one of: expect, inspect, maps, name, packet, "
                                   "packet_hex, repeat")


SCENARIOS = REPO_ROOT / "tests" / "scenarios"


def qstep_bisect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qstep.cli", "bisect", *args],
                          capture_output=True, text=True, timeout=900)


def test_bisect_finds_where_isa_v4_became_accepted() -> None:
    proc = qstep_bisect(str(SCENARIOS / "alu_v4.toml"), "--kernels", "6.12,6.1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["good"], result["bad"], result["boots"]) == ("6.1", "6.12", 2)
    assert result["outcomes"]["6.1"]["verdict"] == "reject"
    assert "BPF_LDX uses reserved fields" in result["outcomes"]["6.1"]["log"]
    assert result["outcomes"]["6.12"]["cases"]["b = -3"]["retval"] == 13795
    text = qstep_bisect(str(SCENARIOS / "alu_v4.toml"), "--kernels", "6.1,6.12").stdout
    assert "first change: 6.1 -> 6.12" in text.splitlines()


def test_bisect_shows_an_inlined_helper_per_instruction() -> None:
    proc = qstep_bisect(str(SCENARIOS / "cpu_id.toml"), "--kernels", "6.1,6.12")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "no change of outcome" in lines
    assert "insn 0 (cpu_id_main, cpu_id.bpf.c:13):" in lines
    rewrite = next(line for line in lines if line.startswith("  6.12: verifier rewrote"))
    assert "r0 = &(void __percpu *)(r0); r0 = *(u32 *)(r0 +0)" in rewrite
    assert "call ADDR" in next(line for line in lines if line.startswith("  6.1: x86"))
    # Both kernels ran the first case the same way, instruction by instruction.
    assert "trace of the first case: identical (3 instructions)" in lines


def test_coverage_counts_what_the_packets_imply(tmp_path: Path) -> None:
    info = tmp_path / "l4lb.info"
    proc = qstep_test(str(SCENARIO), "--kernel", "6.1", "--coverage", str(info))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = info.read_text().splitlines()
    # 8 cases run l4lb_ingress; all but the truncated packet reach process_packet.
    assert {"FNDA:8,l4lb_ingress", "FNDA:7,process_packet"} <= set(lines)
    # l4lb.bpf.c:144 runs for the 5 packets to a VIP; :158 copies an IPv6 real's address
    # (2 cases), :160 takes an IPv4 real's (3).
    assert {"DA:144,5", "DA:158,2", "DA:160,3"} <= set(lines)
    # `if (v6_real)` (insn 153): 3 IPv4 reals jump over the copy, 2 IPv6 fall through.
    assert {"BRDA:157,153,0,3", "BRDA:157,153,1,2"} <= set(lines)
    assert proc.stdout.splitlines()[-1].startswith("coverage of l4lb [6.1]: lines: ")
    html = subprocess.run(["genhtml", "--branch-coverage", "-o", str(tmp_path / "html"),
                           str(info)], capture_output=True, text=True)
    assert html.returncode == 0, html.stderr
    assert (tmp_path / "html" / "index.html").is_file()
