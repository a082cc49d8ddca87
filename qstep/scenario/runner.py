"""Check scenarios in guests: one boot per kernel, a fresh load of the program per case."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from qstep.bpf.elf import BpfObject
from qstep.bpf.progtypes import retval_name
from qstep.commands.common import VERIFIER_LOG_BYTES
from qstep.commands.inspect import value_text
from qstep.debugger.engine import RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.errors import QstepError, VerifierError
from qstep.loaded import LoadedProgram
from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.render import format_map_value
from qstep.scenario.build import object_of
from qstep.scenario.model import Case, CaseExpectation, Scenario
from qstep.scenario.report import CheckResult
from qstep.session import RunResult, Session
from qstep.userinput import MapEntry, encode_entry
from qstep.verifier.report import check_json, finding_text
from qstep.verifier.runcheck import trace_and_check

LOAD_CASE = "load"  # the name of the check of the verifier's verdict

SessionFactory = Callable[[str], Session]
ResultSink = Callable[[CheckResult], None]
# (kernel, scenario, (program as loaded, executed original instruction indexes))
CoverageSink = Callable[[str, "Prepared", tuple[LoadedProgram, list[int]]], None]


@dataclass(frozen=True)
class Prepared:
    """A scenario whose object is built and opened, ready for any kernel."""

    scenario: Scenario
    obj: BpfObject
    program: str


def prepare(scenario: Scenario) -> Prepared:
    """Build (if given as C) and open the object; pick the program. Raises QstepError."""
    obj = BpfObject.open(object_of(scenario))
    if scenario.program:
        return Prepared(scenario, obj, obj.find_program(scenario.program).name)
    if len(obj.programs) != 1:
        names = ", ".join(p.name for p in obj.programs)
        raise QstepError(f"{scenario.file}: the object has several programs ({names}); "
                         "name one with 'program'")
    return Prepared(scenario, obj, obj.programs[0].name)


def run_on_kernel(kernel: str, prepared: list[Prepared], make_session: SessionFactory,
                  sink: ResultSink, coverage: CoverageSink | None = None) -> None:
    """Boot ``kernel`` once and check every prepared scenario on it."""
    try:
        with make_session(kernel) as session:
            for item in prepared:
                check_scenario(session, kernel, item, sink, coverage)
    except QstepError as err:  # the kernel or the guest, not the program
        for item in prepared:
            sink(CheckResult(item.scenario.name, kernel, LOAD_CASE, "error",
                             (f"cannot test on {kernel}: {err}",)))


def check_scenario(session: Session, kernel: str, item: Prepared, sink: ResultSink,
                   coverage: CoverageSink | None = None) -> None:
    """The verifier's verdict, then each case on a fresh load (and traced for coverage)."""
    scenario, started = item.scenario, time.monotonic()
    try:
        session.unload(session.load(item.obj, item.program, item.scenario.load))
        verdict, log = "accept", ""
    except VerifierError as err:
        verdict, log = "reject", f"{err}\n{err.log}"
    failures = verdict_failures(scenario, verdict, log)
    sink(CheckResult(scenario.name, kernel, LOAD_CASE, "fail" if failures else "pass",
                     tuple(failures), {"verifier": verdict},
                     time.monotonic() - started))
    if verdict == "reject":
        return
    for case in scenario.cases:
        sink(check_case(session, kernel, item, case))
        if coverage is not None:
            coverage(kernel, item, trace_case(session, item, case))


def inspect_failures(session: Session, item: Prepared, case: Case,
                     details: dict[str, Any]) -> list[str]:
    """Attach the case's probes on a fresh load, run it, compare hits and printed values."""
    wanted = case.expect.inspect
    with loaded(session, item) as prog:
        fill_maps(session, prog, item.scenario, case)
        inspector = Inspector(session, prog, parse_specs([w.spec for w in wanted]))
        inspector.attach()
        try:
            inspector.run([case.packet], case.repeat)
        finally:
            inspector.detach()
    printed = {n: [[value_text(h, i, prog) for i in range(len(h.values))]
                   for h in inspector.hits if h.probe.number == n]
               for n in range(1, len(wanted) + 1)}
    details["inspect"] = [printed[n] for n in sorted(printed)]
    failures = []
    for number, want in enumerate(wanted, start=1):
        got = printed[number]
        if want.hits is not None and len(got) != want.hits:
            failures.append(f"inspect '{want.spec}': expected {want.hits} hits, got {len(got)}")
        if want.printed is not None and [tuple(h) for h in got] != list(want.printed):
            failures.append(f"inspect '{want.spec}': printed {got}, expected "
                            f"{[list(h) for h in want.printed]}")
    return failures


def trace_failures(session: Session, item: Prepared, case: Case,
                   details: dict[str, Any]) -> list[str]:
    """One traced run: its instruction count and the source lines it executed."""
    want = case.expect.trace
    assert want is not None
    prog, executed = trace_case(session, item, case)
    lines = sorted({s.source.line for i in executed
                    if (s := prog.sites[i]).source is not None})
    details["trace"] = {"insns": len(executed), "lines": lines}
    failures = []
    if want.insns is not None and want.insns != len(executed):
        failures.append(f"trace: expected {want.insns} instructions, ran {len(executed)}")
    missing = [n for n in want.lines if n not in lines]
    if missing:
        failures.append(f"trace: lines {', '.join(map(str, missing))} did not run")
    return failures


def trace_case(session: Session, item: Prepared, case: Case) -> tuple[LoadedProgram, list[int]]:
    """One run of the case under the debugger: the original indexes it executed, in order."""
    with loaded(session, item) as prog:
        fill_maps(session, prog, item.scenario, case)
        with session.debugger(prog, RunRequest(case.packet)) as dbg:
            executed = [r.site.index for r in trace_run(dbg) if isinstance(r, TraceRecord)]
    return prog, executed


def trace_records(session: Session, item: Prepared, case: Case) -> list[dict[str, Any]]:
    """One run of the case, traced: each executed instruction with its registers after it
    as `qstep trace --json` writes them (pointers relative, comparable across kernels)."""
    with loaded(session, item) as prog:
        fill_maps(session, prog, item.scenario, case)
        with session.debugger(prog, RunRequest(case.packet)) as dbg:
            return [r.as_json() for r in trace_run(dbg) if isinstance(r, TraceRecord)]


def verifier_check_failures(session: Session, item: Prepared, case: Case,
                            details: dict[str, Any]) -> list[str]:
    """One run (recorded when the QEMU can) on a load that keeps the verifier's log:
    every executed instruction's registers against what the verifier proved there."""
    options = dataclasses.replace(item.scenario.load, verifier_log_size=VERIFIER_LOG_BYTES)
    with session.loaded(item.obj, item.program, options) as prog:
        fill_maps(session, prog, item.scenario, case)
        data = check_json(trace_and_check(session, prog, case.packet), prog)
    details["verifier_check"] = data
    return [f"verifier soundness violation: {finding_text(f).strip().removeprefix('VIOLATION ')}"
            for f in data["findings"]]


def verdict_failures(scenario: Scenario, verdict: str, log: str) -> list[str]:
    expected = scenario.verifier
    failures = []
    if expected.verdict is None and verdict == "reject":
        failures.append(f"the verifier rejected the program: {first_line(log)}")
    elif expected.verdict is not None and expected.verdict != verdict:
        failures.append(f"verifier: expected {expected.verdict}, got {verdict}"
                        + (f": {first_line(log)}" if log else ""))
    if expected.message is not None and not expected.message.search(log):
        failures.append(f"verifier log does not match /{expected.message.pattern}/")
    return failures


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def check_case(session: Session, kernel: str, item: Prepared, case: Case) -> CheckResult:
    """Load, fill maps, run the case's packet, compare; one result."""
    scenario, started = item.scenario, time.monotonic()
    try:
        with loaded(session, item) as prog:
            fill_maps(session, prog, item.scenario, case)
            result = session.test_run(prog, case.packet, repeat=case.repeat)
            failures, details = compare(session, prog, case.expect, result)
        if case.expect.inspect:
            failures += inspect_failures(session, item, case, details)
        if case.expect.trace is not None:
            failures += trace_failures(session, item, case, details)
        if case.expect.verifier_check:
            failures += verifier_check_failures(session, item, case, details)
    except QstepError as err:
        return CheckResult(scenario.name, kernel, case.name, "error", (str(err),),
                           duration_s=time.monotonic() - started)
    return CheckResult(scenario.name, kernel, case.name, "fail" if failures else "pass",
                       tuple(failures), details, time.monotonic() - started)


@contextmanager
def loaded(session: Session, item: Prepared) -> Iterator[LoadedProgram]:
    with session.loaded(item.obj, item.program, item.scenario.load) as prog:
        yield prog


def fill_maps(session: Session, prog: LoadedProgram, scenario: Scenario, case: Case) -> None:
    lines = list(scenario.maps) + [(text, str(case.where)) for text in case.maps]
    for text, origin in lines:
        name, _, rest = text.strip().partition(" ")
        entry = MapEntry(name, rest.strip(), origin)
        info = prog.maps.get(name)
        if info is None:
            raise QstepError(f"{origin}: unknown map '{name}'; maps: "
                             f"{', '.join(sorted(prog.maps))}")
        key, value = encode_entry(entry, info, prog.btf)
        session.update_map(prog, name, key, value)


def compare(session: Session, prog: LoadedProgram, expect: CaseExpectation,
            result: RunResult) -> tuple[list[str], dict[str, Any]]:
    """What differs from the expectation, and the observed values."""
    name = retval_name(prog.prog_type, result.retval)
    details: dict[str, Any] = {"retval": result.retval, "retval_name": name,
                               "packet_out": result.data_out.hex()}
    dumps = {name: dict(session.dump_map(prog, name)) for name in sorted(prog.maps)}
    details["maps"] = maps_details(prog, dumps)
    failures = retval_failures(expect.retval, result.retval, name)
    failures += packet_failures(expect, result.data_out)
    failures += map_failures(prog, expect, dumps)
    return failures, details


MAX_DETAIL_ENTRIES = 64


def maps_details(prog: LoadedProgram, dumps: dict[str, dict[bytes, bytes]]
                 ) -> dict[str, list[list[str]]]:
    """Non-zero entries of each map as typed text (at most 64 a map), sorted by key."""
    out: dict[str, list[list[str]]] = {}
    for name, entries in dumps.items():
        info = prog.maps[name]
        rows = [[format_map_value(k, info.btf_key_type_id, prog.btf),
                 format_map_value(v, info.btf_value_type_id, prog.btf)]
                for k, v in sorted(entries.items()) if any(v)]
        out[name] = rows[:MAX_DETAIL_ENTRIES]
    return out


def retval_failures(expected: int | str | None, retval: int, name: str | None) -> list[str]:
    if expected is None:
        return []
    signed = retval - (1 << 32) if retval >= 1 << 31 else retval
    shown = f"{retval}" + (f" ({name})" if name else "")
    if isinstance(expected, str):
        return [] if expected == name else [f"retval: expected {expected}, got {shown}"]
    return [] if expected in (retval, signed) else [f"retval: expected {expected}, got {shown}"]


def packet_failures(expect: CaseExpectation, out: bytes) -> list[str]:
    if expect.packet_out is None:
        return []
    want, mask = expect.packet_out, expect.packet_out_mask
    if len(out) != len(want):
        return [f"packet_out: expected {len(want)} bytes, got {len(out)}"]
    mask = mask if mask is not None else b"\xff" * len(want)
    for i, (a, b) in enumerate(zip(want, out, strict=True)):
        m = mask[i] if i < len(mask) else 0xFF
        if a & m != b & m:
            return [f"packet_out: byte {i}: expected {a:#04x}, got {b:#04x} (mask {m:#04x})"]
    return []


def map_failures(prog: LoadedProgram, expect: CaseExpectation,
                 dumps: dict[str, dict[bytes, bytes]]) -> list[str]:
    failures = []
    for map_name, key_text, wanted_text in expect.maps:
        info = prog.maps.get(map_name)
        if info is None:
            failures.append(f"maps: no map '{map_name}'")
            continue
        key, want = encode_entry(MapEntry(map_name, f"{key_text}={wanted_text}", "expect"),
                                 info, prog.btf)
        got = dumps[map_name].get(key)
        if got is None:
            failures.append(f"maps: {map_name}[{key_text}] is absent")
        elif got != want:
            failures.append(f"maps: {map_name}[{key_text}]: expected "
                            f"{format_map_value(want, info.btf_value_type_id, prog.btf)}, got "
                            f"{format_map_value(got, info.btf_value_type_id, prog.btf)}")
    return failures


def kernels_of(scenarios: list[Prepared], override: list[str] | None) -> list[str]:
    """The kernels to boot, in first-seen order."""
    names = override if override else [k for p in scenarios for k in p.scenario.kernels]
    return list(dict.fromkeys(names))
