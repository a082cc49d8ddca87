"""Results of scenario runs: the human summary, JUnit XML, JSON; written atomically.

Exit codes follow `git bisect run`: 0 every check passed, 1 a check failed, 125 the
scenario could not be tested (a kernel that cannot be fetched, an object that does not
build, a guest that does not boot).
"""

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qstep.verifier.report import check_lines, check_summary

EXIT_GOOD, EXIT_BAD, EXIT_UNTESTABLE = 0, 1, 125

Status = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class CheckResult:
    """One case (or the load itself) of one scenario on one kernel."""

    scenario: str
    kernel: str
    case: str
    status: Status
    failures: tuple[str, ...] = ()  # what differed, one line each
    details: dict[str, Any] = field(default_factory=dict)  # observed values (JSON-able)
    duration_s: float = 0.0


def exit_code(results: list[CheckResult]) -> int:
    """`git bisect run` convention: untestable wins over bad, bad over good."""
    if any(r.status == "error" for r in results):
        return EXIT_UNTESTABLE
    if any(r.status == "fail" for r in results):
        return EXIT_BAD
    return EXIT_GOOD


def summary_text(results: list[CheckResult]) -> str:
    """Lines for people: one per check, failures indented below, then the totals."""
    lines = []
    for r in results:
        mark = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}[r.status]
        lines.append(f"{mark:5} {r.scenario} [{r.kernel}] {r.case}")
        lines.extend(f"        {failure}" for failure in r.failures)
        if "verifier_check" in r.details:
            lines.append(f"        {check_summary(r.details['verifier_check'])}")
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "error")}
    lines.append(f"{counts['pass']} passed, {counts['fail']} failed"
                 + (f", {counts['error']} could not be tested" if counts["error"] else ""))
    return "\n".join(lines)


def results_json(results: list[CheckResult]) -> str:
    """Deterministic JSON: durations apart from everything else, keys sorted."""
    checks = [{"scenario": r.scenario, "kernel": r.kernel, "case": r.case,
               "status": r.status, "failures": list(r.failures), "details": r.details}
              for r in results]
    durations = [{"scenario": r.scenario, "kernel": r.kernel, "case": r.case,
                  "seconds": round(r.duration_s, 3)} for r in results]
    return json.dumps({"exit_code": exit_code(results), "checks": checks,
                       "durations": durations}, indent=2, sort_keys=True) + "\n"


def junit_xml(results: list[CheckResult]) -> str:
    """JUnit XML: a testsuite per scenario and kernel, a testcase per case."""
    root = ET.Element("testsuites", name="qstep")
    suites: dict[tuple[str, str], ET.Element] = {}
    for r in results:
        suite = suites.get((r.scenario, r.kernel))
        if suite is None:
            suite = ET.SubElement(root, "testsuite", name=f"{r.scenario} [{r.kernel}]")
            suites[(r.scenario, r.kernel)] = suite
        case = ET.SubElement(suite, "testcase", classname=f"{r.scenario}.{r.kernel}",
                             name=r.case, time=f"{r.duration_s:.3f}")
        if r.status != "pass":
            tag = "failure" if r.status == "fail" else "error"
            node = ET.SubElement(case, tag, message=r.failures[0] if r.failures else tag)
            node.text = "\n".join(r.failures)
        if "verifier_check" in r.details:
            ET.SubElement(case, "system-out").text = "\n".join(
                check_lines(r.details["verifier_check"]))
    for (_, _), suite in suites.items():
        cases = list(suite)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
