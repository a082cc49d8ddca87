"""``qstep test``: check scenario files on one or more kernels (CI, git bisect run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qstep.commands.options import add_accel_option, add_kernels_option
from qstep.errors import QstepError
from qstep.images.kernels import kernel_names
from qstep.loaded import LoadedProgram
from qstep.scenario.coverage import (
    Coverage,
    coverage_text,
    function_calls,
    lcov,
    line_coverage,
)
from qstep.scenario.report import (
    EXIT_UNTESTABLE,
    CheckResult,
    exit_code,
    junit_xml,
    results_json,
    summary_text,
    write_atomically,
)
from qstep.scenario.runner import LOAD_CASE, Prepared, kernels_of, prepare, run_on_kernel
from qstep.scenario.toml_load import load_scenario
from qstep.session import Session


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("test", help="check scenario files (TOML) on kernels; exit 0 good, "
                       "1 bad, 125 cannot test (git bisect run)")
    p.add_argument("scenarios", nargs="+", type=Path, metavar="SCENARIO",
                   help="scenario files (TOML, see docs/scenarios.md)")
    add_kernels_option(p, "each scenario's own")
    add_accel_option(p)
    p.add_argument("--junit", type=Path, metavar="FILE",
                   help="write the results as JUnit XML to FILE")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--coverage", type=Path, metavar="FILE",
                   help="trace each case once and write the source lines and branch "
                   "directions it executed as lcov data (genhtml reads it)")
    p.add_argument("--coverage-text", action="store_true",
                   help="with --coverage, also print the coverage line by line")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    scenarios = [load_scenario(path) for path in args.scenarios]  # bad files fail first
    results: list[CheckResult] = []
    prepared: list[Prepared] = []
    for scenario in scenarios:
        try:
            prepared.append(prepare(scenario))
        except QstepError as err:
            report_one(results, CheckResult(scenario.name, "-", LOAD_CASE, "error", (str(err),)))
    override = kernel_names(args.kernel) if args.kernel else None
    collected = CoverageCollector() if args.coverage else None
    for kernel in kernels_of(prepared, override):
        wanted = [p for p in prepared if override or kernel in p.scenario.kernels]
        run_on_kernel(kernel, wanted, lambda k: Session(kernel=k, accel=args.accel),
                      lambda r: report_one(results, r), collected)
    print(summary_text(results).splitlines()[-1])
    if collected is not None and args.coverage:
        write_atomically(args.coverage, collected.lcov())
        print("\n".join(collected.text(args.coverage_text)))
    if args.junit:
        write_atomically(args.junit, junit_xml(results))
    if args.json:
        write_atomically(args.json, results_json(results))
    return exit_code(results) if results else EXIT_UNTESTABLE


class CoverageCollector:
    """Coverage per scenario and kernel, accumulated over its cases."""

    def __init__(self) -> None:
        self.by_run: dict[tuple[str, str], Coverage] = {}

    def __call__(self, kernel: str, item: Prepared,
                 traced: tuple[LoadedProgram, list[int]]) -> None:
        prog, executed = traced
        key = (item.scenario.name, kernel)
        if key not in self.by_run:
            self.by_run[key] = Coverage(prog)
        self.by_run[key].add_run(executed)

    def lcov(self) -> str:
        return "".join(lcov(f"{name}[{kernel}]", line_coverage(cov), function_calls(cov))
                       for (name, kernel), cov in self.by_run.items())

    def text(self, per_line: bool) -> list[str]:
        out = []
        for (name, kernel), cov in self.by_run.items():
            lines = coverage_text(line_coverage(cov))
            out.append(f"coverage of {name} [{kernel}]: {lines[-1]}")
            if per_line:
                out += lines[:-1]
        return out


def report_one(results: list[CheckResult], result: CheckResult) -> None:
    """Keep a result and show it at once (a long run shows progress)."""
    results.append(result)
    print("\n".join(summary_text([result]).splitlines()[:-1]), flush=True, file=sys.stdout)
