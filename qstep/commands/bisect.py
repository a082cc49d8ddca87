"""``qstep bisect``: the first kernel where a scenario's outcome changes, and why."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from qstep.commands.options import add_accel_option, add_json_option, add_kernels_option
from qstep.errors import QstepError, UsageError, VerifierError
from qstep.images.kernels import kernel_names, version_key
from qstep.scenario.bisect import BisectResult, Outcome, bisect
from qstep.scenario.kernel_diff import diff_programs, format_diff
from qstep.scenario.runner import Prepared, check_case, prepare, trace_records
from qstep.scenario.toml_load import load_scenario
from qstep.session import Session

MAX_SHOWN_DIFFS = 40
LOG_TAIL_LINES = 30


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bisect", help="find the first kernel where a scenario's outcome "
                       "(verifier verdict, retval, output, maps) changes, and explain it")
    p.add_argument("scenario", type=Path, metavar="SCENARIO",
                   help="a scenario file (TOML, see docs/scenarios.md)")
    add_kernels_option(p, "", "--kernels")
    add_accel_option(p)
    add_json_option(p, "one object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    prepared = prepare(load_scenario(args.scenario))
    kernels = sorted(kernel_names(args.kernel), key=version_key)
    if len(kernels) < 2:
        raise UsageError("--kernel needs at least two kernels to bisect between: "
                         "K1,K2[,...] or all")
    result = bisect(kernels, lambda k: outcome_on(k, prepared, args.accel))
    if args.json:
        print(json.dumps(result_json(result), indent=2, sort_keys=True))
    else:
        print("\n".join(result_text(result)))
    return 0


def outcome_on(kernel: str, item: Prepared, accel: str) -> Outcome:
    """Boot ``kernel``; the verifier's verdict and what every case did."""
    try:
        with Session(kernel=kernel, accel=accel) as session:
            try:
                prog = session.load(item.obj, item.program, item.scenario.load)
            except VerifierError as err:
                return Outcome(kernel, "reject", err.log or str(err))
            session.unload(prog)
            cases = {}
            for case in item.scenario.cases:
                checked = check_case(session, kernel, item, case)
                cases[case.name] = (checked.details if checked.status != "error"
                                    else {"error": list(checked.failures)})
            first = item.scenario.cases[0] if item.scenario.cases else None
            trace = trace_records(session, item, first) if first else []
            return Outcome(kernel, "accept", cases=cases, program=prog, trace=trace)
    except QstepError as err:
        return Outcome(kernel, "error", str(err))


def result_text(result: BisectResult) -> list[str]:
    lines = [f"bisect over {', '.join(result.kernels)}: {result.boots} boots"
             + (f", could not test {', '.join(result.skipped)}" if result.skipped else "")]
    if result.good is None or result.bad is None:
        tested = [o for o in result.outcomes.values() if o.verdict != "error"]
        lines.append("no change of outcome" if len(tested) >= 2
                     else "too few kernels could be tested")
        if len(tested) >= 2:
            lines += explain(tested[0], tested[-1])
        return lines
    lines.append(f"first change: {result.good} -> {result.bad}")
    return lines + explain(result.outcomes[result.good], result.outcomes[result.bad])


def explain(old: Outcome, new: Outcome) -> list[str]:
    """The two kernels side by side: verdicts, case results, code per instruction."""
    lines = [f"{old.kernel}: verifier {old.verdict}s", f"{new.kernel}: verifier {new.verdict}s"]
    for outcome in (old, new):
        if outcome.verdict == "reject":
            log = outcome.log.strip().splitlines()
            lines += [f"--- verifier log on {outcome.kernel} (last {LOG_TAIL_LINES} lines, "
                      "source lines from the object) ---", *log[-LOG_TAIL_LINES:]]
    both_ran = old.verdict == new.verdict == "accept"
    for name in sorted(set(old.cases) | set(new.cases)) if both_ran else ():
        a, b = old.cases.get(name), new.cases.get(name)
        if a != b:
            lines.append(f"case {name}:")
            lines += [f"  {key}: {old.kernel} {_short(a, key)} | {new.kernel} {_short(b, key)}"
                      for key in sorted(set(a or {}) | set(b or {}))
                      if (a or {}).get(key) != (b or {}).get(key)]
    if old.trace and new.trace:
        lines += trace_divergence(old, new)
    if old.program is not None and new.program is not None:
        diffs = diff_programs(old.program, new.program)
        lines.append(f"code: {len(diffs)} instructions differ between {old.kernel} and "
                     f"{new.kernel}" + (":" if diffs else ""))
        for diff in diffs[:MAX_SHOWN_DIFFS]:
            lines += format_diff(diff, old.kernel, new.kernel)
        if len(diffs) > MAX_SHOWN_DIFFS:
            lines.append(f"... and {len(diffs) - MAX_SHOWN_DIFFS} more (--json has all)")
    return lines


def trace_divergence(old: Outcome, new: Outcome) -> list[str]:
    """The first instruction where the first case's runs differ, with both states."""
    for step, (a, b) in enumerate(zip(old.trace, new.trace, strict=False), start=1):
        if a != b:
            where = f"insn {a.get('insn')} ({a.get('function')}, {a.get('file')}:{a.get('line')})"
            return [f"trace of the first case: the runs first differ at step {step}, {where}",
                    f"  {old.kernel}: {_state(a)}", f"  {new.kernel}: {_state(b)}"]
    if len(old.trace) != len(new.trace):
        return [f"trace of the first case: the same for {min(len(old.trace), len(new.trace))} "
                f"steps, then {old.kernel} ran {len(old.trace)} and {new.kernel} "
                f"{len(new.trace)} instructions"]
    return [f"trace of the first case: identical ({len(old.trace)} instructions)"]


def _state(record: dict[str, Any]) -> str:
    regs = " ".join(f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}"
                    for k, v in record.get("regs", {}).items())
    return f"insn {record.get('insn')}: {regs}" + (
        f" retval {record['retval']}" if "retval" in record else "")


def _short(case: dict[str, Any] | None, key: str) -> str:
    if case is None:
        return "(no such case)"
    return json.dumps(case.get(key))


def result_json(result: BisectResult) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kernels": result.kernels, "boots": result.boots, "skipped": result.skipped,
        "good": result.good, "bad": result.bad,
        "outcomes": {k: {"verdict": o.verdict, "log": o.log, "cases": o.cases}
                     for k, o in result.outcomes.items()}}
    pair = ((result.good, result.bad) if result.good and result.bad else None)
    tested = [o for o in result.outcomes.values() if o.verdict != "error"]
    if pair is None and len(tested) >= 2:
        pair = (tested[0].kernel, tested[-1].kernel)
    if pair is not None:
        data["explanation"] = explain(result.outcomes[pair[0]], result.outcomes[pair[1]])
    if pair is not None:
        old, new = result.outcomes[pair[0]], result.outcomes[pair[1]]
        if old.program is not None and new.program is not None:
            data["code_diff"] = [
                {"insn": d.index, "function": d.function, "source": d.source,
                 "old": {"xlated": d.old.xlated, "x86": d.old.x86, "removed": d.old.removed},
                 "new": {"xlated": d.new.xlated, "x86": d.new.x86, "removed": d.new.removed}}
                for d in diff_programs(old.program, new.program)]
    return data
