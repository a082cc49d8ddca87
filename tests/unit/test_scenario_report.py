"""Scenario results: exit codes for git bisect run, JUnit XML, deterministic JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from qstep.scenario.report import (
    CheckResult,
    exit_code,
    junit_xml,
    results_json,
    summary_text,
    write_atomically,
)

PASS = CheckResult("lb", "6.1", "ipv4", "pass", details={"retval": 7}, duration_s=1.25)
FAIL = CheckResult("lb", "6.12", "ipv4", "fail", ("retval: expected 7, got 2",))
ERROR = CheckResult("lb", "7.3", "load", "error", ("kernel 7.3 cannot be fetched",))


def test_exit_codes_follow_git_bisect_run() -> None:
    assert exit_code([PASS]) == 0
    assert exit_code([PASS, FAIL]) == 1
    assert exit_code([PASS, FAIL, ERROR]) == 125
    assert exit_code([]) == 0


def test_summary_lists_failures_and_totals() -> None:
    text = summary_text([PASS, FAIL, ERROR])
    assert text.splitlines() == [
        "PASS  lb [6.1] ipv4", "FAIL  lb [6.12] ipv4", "        retval: expected 7, got 2",
        "ERROR lb [7.3] load", "        kernel 7.3 cannot be fetched",
        "1 passed, 1 failed, 1 could not be tested"]


def test_junit_has_a_suite_per_kernel_with_counts() -> None:
    root = ET.fromstring(junit_xml([PASS, FAIL, ERROR]))
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"lb [6.1]", "lb [6.12]", "lb [7.3]"}
    assert suites["lb [6.12]"].get("failures") == "1"
    failure = suites["lb [6.12]"].find("testcase/failure")
    assert failure is not None and failure.get("message") == "retval: expected 7, got 2"
    assert suites["lb [7.3]"].get("errors") == "1"
    assert suites["lb [6.1]"].find("testcase").get("time") == "1.250"  # type: ignore[union-attr]


def test_json_keeps_durations_apart() -> None:
    first = json.loads(results_json([PASS]))
    second = json.loads(results_json([CheckResult(**{**PASS.__dict__, "duration_s": 9.0})]))
    assert first["checks"] == second["checks"]
    assert first["durations"] != second["durations"]
    assert first["checks"][0]["details"] == {"retval": 7}


def test_write_atomically_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "r.json"
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


CHECKED = CheckResult("lb", "6.1", "ipv4", "pass", details={"verifier_check": {
    "trace_insns": 149, "traced_by": "recorder", "steps": 149, "registers": 216,
    "pointers": 397, "unchecked": 536, "prunes": 2, "paths": [0, 3], "stopped": "",
    "findings": []}})


def test_a_verifier_check_shows_its_zero_findings() -> None:
    assert summary_text([CHECKED]).splitlines()[:2] == [
        "PASS  lb [6.1] ipv4",
        "        verifier check: 149 of 149 instructions followed, 613 values checked, "
        "536 not, 0 soundness violations"]
    out = ET.fromstring(junit_xml([CHECKED])).find("testsuite/testcase/system-out")
    assert out is not None and out.text is not None
    assert out.text.splitlines()[-1] == (
        "  0 soundness violations: every value lies inside the verifier's bounds")
