"""A program that leaves through bpf_tail_call (tests/progs/tailcall.bpf.c), on 6.1 and 6.12.

Its prog array is initialised in the object, so the agent loads the tail-called
programs with it (libbpf fills the array). ``run`` gives the tail-called program's
return value; the recorded and the stepped trace end at the tail call with the same
records and one clear last line; the debugger says where the program left and
finishes the run on ``continue``; the lockstep oracle stops there, both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import RunRequest
from qstep.debugger.tailcall import LEFT, TailCalled
from qstep.debugger.trace import TraceRecord, format_record, trace_run
from qstep.loaded import LoadedProgram
from qstep.oracle.lockstep import lockstep
from qstep.oracle.recorded import lockstep_recording
from qstep.paths import REPO_ROOT
from qstep.probe.inspector import Inspector
from qstep.probe.records import MapValue
from qstep.probe.spec import parse_specs
from qstep.recorder.run import record_run
from qstep.recorder.trace import trace_records
from qstep.session import Session
from qstep.userinput import read_packet

pytestmark = pytest.mark.vm

PACKETS = REPO_ROOT / "examples" / "l4lb" / "packets"
IPV4 = read_packet(str(PACKETS / "ipv4_to_v4real.hex"))  # TCP: tail_v4 gives XDP_TX
IPV6 = read_packet(str(PACKETS / "ipv6_to_v6real.hex"))  # tail_v6 gives XDP_DROP
ARP = bytes.fromhex("ffffffffffff020000000001" "0806") + bytes(46)  # slot 2 is empty
TAIL_CALL_OFFSET = 30  # tail_main:30 is the bpf_tail_call (checked below)


@pytest.fixture
def tail(guest: Session,
         bpf_obj: Callable[[str], Path]) -> Iterator[tuple[Session, LoadedProgram]]:
    obj = BpfObject.open(bpf_obj("tests/progs/tailcall.bpf.c"))
    prog = guest.load(obj, "tail_main")
    yield guest, prog
    guest.unload(prog)


def seen(vm: Session, prog: LoadedProgram) -> list[int]:
    return [int.from_bytes(v, "little") for _, v in sorted(vm.dump_map(prog, "seen"))]


def test_run_gives_the_tail_called_programs_retval(tail: tuple[Session, LoadedProgram]) -> None:
    vm, prog = tail
    assert [vm.test_run(prog, p).retval for p in (IPV4, IPV6, ARP)] == [3, 1, 2]
    assert seen(vm, prog) == [3, 1, 1]  # main every time, tail_v4 once, tail_v6 once


def test_traces_end_at_the_tail_call_recorded_as_stepped(
        tail: tuple[Session, LoadedProgram]) -> None:
    vm, prog = tail
    site = prog.sites[prog.functions[0].start_insn + TAIL_CALL_OFFSET]
    assert site.insn.is_helper_call and site.insn.imm == 12
    result, rec = record_run(vm, prog, IPV4)
    assert result.retval == rec.retval == 3
    recorded = list(trace_records(rec))
    with vm.debugger(prog, RunRequest(IPV4), "rsp") as dbg:
        items = list(trace_run(dbg))
    stepped = [i for i in items if isinstance(i, TraceRecord)]
    assert [format_record(r) for r in recorded] == [format_record(s) for s in stepped]
    last = recorded[-1]
    assert (last.site, last.regs_after, last.retval, last.left) == (site, None, 3, LEFT)
    assert format_record(last).endswith("bpf_tail_call: left for another program (not "
                                         "followed), retval 3")
    assert len(recorded) == len(rec.steps) > 20
    end = items[-1]
    assert not isinstance(end, TraceRecord) and (end.kind, end.retval) == ("exited", 3)


def test_the_debugger_says_where_the_program_left_and_goes_on(
        tail: tuple[Session, LoadedProgram]) -> None:
    vm, prog = tail
    with vm.debugger(prog, RunRequest(IPV6)) as dbg:
        dbg.add_breakpoint(f"tail_main:{TAIL_CALL_OFFSET}")
        event = dbg.run()
        assert event.site is not None and event.site.index == TAIL_CALL_OFFSET
        with pytest.raises(TailCalled) as err:
            dbg.stepi()
        assert str(err.value) == (
            "tail_main tail-called another program at insn 30 (tailcall.bpf.c:84); qstep "
            "does not follow into it (its code is not mapped): 'continue' finishes the run")
        event = dbg.cont()
        assert (event.kind, event.retval) == ("exited", 1)
        event = dbg.run()  # usable: the next run stops at the breakpoint again
        assert event.kind == "stopped" and event.site is not None
        assert event.site.index == TAIL_CALL_OFFSET
        event = dbg.cont()
        assert (event.kind, event.retval) == ("exited", 1)


def test_the_lockstep_oracle_stops_at_the_tail_call_both_ways(
        tail: tuple[Session, LoadedProgram]) -> None:
    vm, prog = tail
    rec = record_run(vm, prog, IPV6)[1]
    recorded = lockstep_recording(rec)
    with vm.debugger(prog, RunRequest(IPV6)) as dbg:
        stepped = lockstep(dbg)
    for report in (recorded, stepped):
        assert report.divergence is None
        assert report.checked == len(rec.steps) - 1
        assert report.unsupported == (f"step {len(rec.steps)}, insn {TAIL_CALL_OFFSET}: the "
                                      "program tail-called another program, which qstep does "
                                      "not follow")


@pytest.mark.parametrize("guest", ["6.1"], indirect=True)
def test_inspect_from_the_recording_equals_the_probes_up_to_the_tail_call(
        tail: tuple[Session, LoadedProgram]) -> None:
    """The tail-called programs change ``seen`` outside the recording: each run is
    recorded on its own, after a fresh dump of the maps."""
    vm, prog = tail
    specs = parse_specs([f"tail_main:{TAIL_CALL_OFFSET} print seen, seen[1], $r3",
                         "tail_main print seen[0]"])
    ways = []
    for recording in ("off", "all"):
        for slot in range(3):
            vm.update_map(prog, "seen", slot.to_bytes(4, "little"), bytes(8))
        inspector = Inspector(vm, prog, specs, recording=recording)
        inspector.attach()
        try:
            assert inspector.run([IPV4, IPV6, ARP], 2) == [3, 1, 2]
        finally:
            inspector.detach()
        ways.append(sorted((h.probe.number, h.run, h.hit, repr(h.values), sorted(h.unrecorded))
                           for h in inspector.hits))
    assert ways[0] == ways[1]
    assert len(ways[0]) == 12
    five = MapValue("seen", True, ((5).to_bytes(8, "little"),))
    assert ways[0][-1] == (2, 3, 6, repr([five]), [])  # seen[0] before the 6th run: 5 frames
