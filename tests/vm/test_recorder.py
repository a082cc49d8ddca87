"""The recorder plugin against gdbstub stepping: the same BPF-level trace, every program.

Each case loads the program twice (fresh maps each time), records one run with the
plugin and steps another through QEMU's gdbstub, and compares every record: the
instruction, its line, which registers are defined, and their values. Stack
pointers are shown relative to what they point into (ctx, pkt, map values, fp), so
the two traces must be identical line for line, as ``qstep trace`` prints them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import load_program

from qstep.bpf import insn as bi
from qstep.debugger.engine import Event, RunRequest
from qstep.debugger.regs import MASK64
from qstep.debugger.trace import TraceRecord, format_record, trace_run
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.recorder.control import RecordingTooLarge
from qstep.recorder.recording import Recording
from qstep.recorder.run import record_run
from qstep.recorder.trace import trace_records
from qstep.session import Session
from qstep.userinput import read_packet

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PROGS = json.loads((REPO_ROOT / "tests/progs/expected.json").read_text())


def _cases(kernel: str) -> list[tuple[str, str, str, str, str, bool]]:
    """(kernel, source, program, packet, ctx hex, example maps) for every program
    (raw tracepoint programs take a context and no packet)."""
    cases = [(kernel, "examples/l4lb/l4lb.bpf.c", "l4lb_ingress",
              str(EXAMPLE / "packets" / f"{p}.hex"), "", True)
             for p in ("ipv4_to_v4real", "ipv6_to_v6real", "ctl_lookup_fail")]
    for name, spec in PROGS.items():
        if name.startswith("_") or not spec.get("cases"):
            continue
        if "ctx_hex" in spec["cases"][0]:
            continue  # a tracing program: runs on a context, no packet (test_private_stack)
        if name == "alu_v4" and kernel == "6.1":
            continue  # ISA v4 needs kernel >= 6.6
        cases += [(kernel, f"tests/progs/{name}.bpf.c", spec["program"],
                   c.get("input_hex", ""), c.get("ctx_hex", ""), False) for c in spec["cases"]]
    cases.append((kernel, "tests/progs/deadcode.bpf.c", "dead_main", "00" * 64, "", False))
    return cases


CASES = _cases("6.1") + _cases("6.12")


def _recorded(vm: Session, load: Callable[[], LoadedProgram],
              request: RunRequest) -> tuple[list[TraceRecord], int]:
    prog = load()
    try:
        result, rec = record_run(vm, prog, request.data, request.ctx, repeat=request.repeat)
        assert rec.retval == result.retval
        return list(trace_records(rec)), result.retval
    finally:
        vm.unload(prog)


def _stepped(vm: Session, load: Callable[[], LoadedProgram],
             request: RunRequest) -> tuple[list[TraceRecord], int | None]:
    prog = load()
    try:
        with vm.debugger(prog, request, "rsp") as dbg:
            items = list(trace_run(dbg))
    finally:
        vm.unload(prog)
    last = items[-1]
    assert isinstance(last, Event) and last.kind == "exited"
    return [i for i in items if isinstance(i, TraceRecord)], last.retval


def assert_same_trace(recorded: list[TraceRecord], stepped: list[TraceRecord]) -> None:
    """Line for line as ``qstep trace`` prints them (pointers relative to their base)."""
    assert [format_record(r) for r in recorded] == [format_record(s) for s in stepped]
    assert [r.as_json() for r in recorded] == [s.as_json() for s in stepped]


@pytest.mark.parametrize("kernel, source, name, packet, ctx, with_maps", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_recording_matches_stepping(request: pytest.FixtureRequest,
                                    bpf_obj: Callable[[str], Path], kernel: str, source: str,
                                    name: str, packet: str, ctx: str, with_maps: bool) -> None:
    vm: Session = request.getfixturevalue("vm" if kernel == "6.1" else "vm612")
    obj_path = bpf_obj(source)

    def load() -> LoadedProgram:
        return load_program(vm, obj_path, name, with_maps)

    run = RunRequest(read_packet(packet) if packet else b"", bytes.fromhex(ctx),
                     0 if ctx else 1)
    recorded, rec_retval = _recorded(vm, load, run)
    stepped, step_retval = _stepped(vm, load, run)
    assert rec_retval == step_retval
    assert len(recorded) > 3
    assert_same_trace(recorded, stepped)


def _record_example(vm: Session, l4lb_obj: Path, packet: str) -> Recording:
    prog = load_program(vm, l4lb_obj, "l4lb_ingress", True)
    try:
        return record_run(vm, prog, read_packet(str(EXAMPLE / "packets" / f"{packet}.hex")))[1]
    finally:
        vm.unload(prog)


def test_a_recording_over_its_limit_is_an_error_and_the_guest_stays_usable(
        vm: Session, l4lb_obj: Path) -> None:
    prog = load_program(vm, l4lb_obj, "l4lb_ingress", True)
    data = read_packet(str(EXAMPLE / "packets" / "ipv4_to_v4real.hex"))
    try:
        with pytest.raises(RecordingTooLarge, match=r"size limit \(2000 bytes\)"):
            record_run(vm, prog, data, limit=2000)
        result, rec = record_run(vm, prog, data)
        assert rec.exited and result.retval == rec.retval
        assert len(rec.steps) == len(list(trace_records(rec)))
    finally:
        vm.unload(prog)


def test_recorded_memory_accesses_are_the_programs_loads_and_stores(
        vm: Session, l4lb_obj: Path) -> None:
    """Stores to the stack at their fp offsets with the stored register's value;
    loads return what the destination register holds after the instruction."""
    rec = _record_example(vm, l4lb_obj, "ipv4_to_v4real")
    checked = 0
    ctx = rec.steps[0].regs()[1]  # context loads are rewritten by the verifier: skipped
    for k, step in enumerate(rec.steps[:-1]):
        ins = step.site.insn
        before, after = step.regs(), rec.steps[k + 1].regs()
        if before[ins.src] == ctx:
            continue
        if ins.cls == bi.STX and ins.mode == bi.MODE_MEM:
            [a] = step.accesses
            assert a.store and a.addr == (before[ins.dst] + ins.off) & MASK64
            assert a.value == before[ins.src] & ((1 << (8 * a.size)) - 1)
            checked += 1
        elif ins.cls == bi.LDX and ins.mode == bi.MODE_MEM:
            [a] = step.accesses
            assert not a.store and a.addr == (before[ins.src] + ins.off) & MASK64
            assert a.value == after[ins.dst]
            checked += 1
    assert checked > 20


def test_old_values_agree_with_what_the_recording_saw_before(
        vm: Session, l4lb_obj: Path) -> None:
    """A store's old value equals the last recorded access to the same bytes, unless a
    helper call ran in between (helpers are not recorded; they reuse the stack below
    the program's frame, where calls push return addresses)."""
    rec = _record_example(vm, l4lb_obj, "ipv6_to_v6real")
    xlated = {ins.index: ins for ins in rec.prog.xlated}
    memory: dict[int, int] = {}  # byte address -> value, as far as the recording saw
    checked = with_old = 0
    for step in rec.steps:
        for a in step.frame_accesses + step.accesses:
            if a.store and a.old is not None:
                with_old += 1
                known = [memory.get(a.addr + i) for i in range(a.size)]
                if None not in known:
                    assert bytes(known) == a.old.to_bytes(a.size, "little"), step.site.index
                    checked += 1
            memory.update({a.addr + i: (a.value >> (8 * i)) & 0xFF for i in range(a.size)})
        call = xlated.get(step.site.xlated_index if step.site.xlated_index is not None else -1)
        if call is not None and call.is_helper_call:
            memory.clear()
    stores = sum(a.store for s in rec.steps for a in s.accesses + s.frame_accesses)
    assert with_old == stores  # every store of the JIT's code has its old value
    assert checked > 5
