"""The verifier check inside qstep trace and qstep test, and its limits: a program
loaded outside qstep, a log this qstep cannot read."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from qstep.paths import REPO_ROOT

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
INPUTS = ["--maps", str(EXAMPLE / "maps.txt"),
          "--packet", str(EXAMPLE / "packets" / "ipv4_udp_to_v6real.hex")]


def qstep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qstep.cli", *args], capture_output=True,
                          text=True, timeout=900)


def test_trace_checks_every_instruction(l4lb_obj: Path) -> None:
    # Recorded (the plugin), as JSON lines; the check's line matches its schema.
    proc = qstep("trace", str(l4lb_obj), *INPUTS, "--check-verifier", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    schema = json.loads((REPO_ROOT / "docs/schemas/trace.schema.json").read_text())
    for line in lines:
        jsonschema.validate(line, schema, cls=jsonschema.Draft202012Validator)
    check = lines[-1]["verifier_check"]
    steps = [line for line in lines if "step" in line]
    assert check["trace_insns"] == check["steps"] == len(steps) > 100
    assert (check["traced_by"], check["stopped"], check["findings"]) == ("recorder", "", [])
    assert check["prunes"] >= 1 and check["registers"] > 150 and check["pointers"] > 300
    # By stepping the same run gives the same figures.
    proc = qstep("trace", str(l4lb_obj), *INPUTS, "--check-verifier", "--stepping")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[-3] == (
        f"verifier check: {len(steps)} of {len(steps)} instructions followed on the "
        f"verifier's paths (stepping), {check['registers']} scalar values and "
        f"{check['pointers']} pointer types checked, {check['prunes']} pruning points")
    assert out[-1] == "  0 soundness violations: every value lies inside the verifier's bounds"


def test_scenario_case_with_verifier_check(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text(f"""
[scenario]
name = "lb"
source = "{EXAMPLE / 'l4lb.bpf.c'}"
program = "l4lb_ingress"
maps_file = "{EXAMPLE / 'maps.txt'}"

[[case]]
name = "udp to v6"
packet = "{EXAMPLE / 'packets' / 'ipv4_udp_to_v6real.hex'}"
expect.retval = "TC_ACT_REDIRECT"
expect.verifier_check = true
""")
    junit, results = tmp_path / "junit.xml", tmp_path / "out.json"
    proc = qstep("test", str(toml), "--junit", str(junit), "--json", str(results))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check = {c["case"]: c for c in json.loads(results.read_text())["checks"]}[
        "udp to v6"]["details"]["verifier_check"]
    assert check["findings"] == [] and check["steps"] == check["trace_insns"] > 100
    summary = proc.stdout.splitlines()
    assert summary[-2] == (
        f"        verifier check: {check['steps']} of {check['steps']} instructions followed, "
        f"{check['registers'] + check['pointers']} values checked, {check['unchecked']} not, "
        "0 soundness violations")
    out = ET.parse(junit).getroot().find("testsuite/testcase[@name='udp to v6']/system-out")
    assert out is not None and out.text is not None
    assert "0 soundness violations" in out.text


def test_a_program_loaded_outside_qstep_has_no_log(l4lb_obj: Path) -> None:
    pin = "/sys/fs/bpf/qstep_vcheck"
    loader = ["--guest-file", f"{l4lb_obj}:/tmp/l4lb.o", "--guest-cmd",
              f"/bin/qstep-agent --load-pin /tmp/l4lb.o l4lb_ingress {pin}"]
    # Refused before any guest boots, naming the reload that gets the log.
    proc = qstep("trace", "pinned", pin, *loader, *INPUTS, "--check-verifier")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"qstep: error: --check-verifier: 'pinned' names a program loaded outside qstep, and "
        "the kernel keeps no verifier log after a load; to get it, let qstep load the object "
        f"again itself, which keeps the log: qstep trace {l4lb_obj} --prog NAME "
        "--check-verifier ...")
    # The debugger says so at 'info verifier' and goes on.
    proc = qstep("debug", "pinned", pin, *loader, *INPUTS, "--verifier-log",
                 "-ex", "break process_packet", "-ex", "run", "-ex", "info verifier",
                 "-ex", "print $r1")
    assert proc.returncode == 1, proc.stderr  # one command failed
    assert ("error: this program was loaded outside qstep: the kernel keeps no verifier log "
            "after a load") in proc.stderr
    assert "qstep: note: --verifier-log: 'pinned' names a program loaded outside" in proc.stderr
    out = proc.stdout.splitlines()
    assert out[-2] == "(qstep) print $r1" and out[-1].startswith("0xffff")  # the context
