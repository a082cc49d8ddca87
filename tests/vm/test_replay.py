"""Reverse execution over recordings (``qstep debug --record``).

Going backwards from the end must visit exactly the instructions a gdbstub-stepped
run of the same input executed, in reverse, with the registers the recorded trace
(itself checked against stepping in test_recorder.py) had before each of them;
reverse-continue must stop at the last write of a watched field; finish and
reverse-finish must land after and at the bpf-to-bpf call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import load_program
from test_why import DADDR, IPV6
from test_why import SOURCE as TUNNEL

from qstep.debugger.engine import RunRequest
from qstep.debugger.replay_commands import ReplayCommands
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.paths import REPO_ROOT
from qstep.recorder.recording import Recording
from qstep.recorder.replay import Replay
from qstep.recorder.run import record_run
from qstep.session import Session
from qstep.userinput import read_packet

pytestmark = pytest.mark.vm

PROGS = json.loads((REPO_ROOT / "tests/progs/expected.json").read_text())
CALLS = PROGS["calls"]
EXAMPLE_PACKET = REPO_ROOT / "examples/l4lb/packets/ipv6_to_v6real.hex"


def _recording(vm: Session, obj: Path, name: str, data: bytes, maps: bool) -> Recording:
    prog = load_program(vm, obj, name, maps)
    try:
        return record_run(vm, prog, data)[1]
    finally:
        vm.unload(prog)


def _stepped_sites(vm: Session, obj: Path, name: str, data: bytes, maps: bool) -> list[int]:
    prog = load_program(vm, obj, name, maps)
    try:
        with vm.debugger(prog, RunRequest(data), "rsp") as dbg:
            return [r.site.index for r in trace_run(dbg) if isinstance(r, TraceRecord)]
    finally:
        vm.unload(prog)


@pytest.mark.parametrize("source, name, packet, maps", [
    ("examples/l4lb/l4lb.bpf.c", "l4lb_ingress", str(EXAMPLE_PACKET), True),
    ("tests/progs/calls.bpf.c", CALLS["program"], CALLS["cases"][0]["input_hex"], False),
], ids=["l4lb", "calls"])
def test_reverse_stepi_from_the_end_visits_every_instruction_backwards(
        guest: Session, bpf_obj: Callable[[str], Path], source: str, name: str, packet: str,
        maps: bool) -> None:
    obj, data = bpf_obj(source), read_packet(packet)
    rec = _recording(guest, obj, name, data, maps)
    stepped = _stepped_sites(guest, obj, name, data, maps)
    replay = Replay(rec)
    assert replay.cont().reason == "end" and replay.exited
    visited = []
    while replay.pos > 0:
        stop = replay.reverse_stepi()
        visited.append(replay.site().index if replay.site() else None)
        assert stop.reason in ("step", "start")
        assert replay.regs() == rec.steps[replay.pos].regs()  # the state before it ran
    assert visited[::-1] == stepped
    assert replay.reverse_stepi().reason == "start" and replay.pos == 0


def test_reverse_continue_stops_at_the_last_write_of_a_watched_field(
        vm: Session, bpf_obj: Callable[[str], Path]) -> None:
    rec = _recording(vm, bpf_obj(TUNNEL), "tunnel_main", IPV6, False)
    cmds = ReplayCommands(Replay(rec))
    cmds.execute("break tunnel.bpf.c:54")
    out = cmds.execute("continue")
    assert out.data["reason"] == "breakpoint" and out.data["where"]["insn"] == 36
    value = out.data["regs"]["r0"]  # the tunnel entry
    cmds.execute("delete 1")
    cmds.execute(f"watch mem({value + 4:#x}, 16)")
    seen, written = [], {}
    while True:
        out = cmds.execute("reverse-continue")
        if out.data["reason"] != "watchpoint":
            break
        assert out.data["where"]["line"] == 50 and out.text.startswith("Watchpoint: 4 bytes")
        watch = out.data["watch"]
        assert watch["old"] == "00000000"  # a fresh map: zeros before each store
        written[watch["addr"]] = bytes.fromhex(watch["new"])
        seen.append(out.data["where"]["insn"])
    assert seen == [32, 30, 28, 26] and out.data["reason"] == "start"
    assert b"".join(written[a] for a in sorted(written)) == DADDR
    # and forward again: the first write, then the state after it
    out = cmds.execute("continue")
    assert out.data["reason"] == "watchpoint" and out.data["where"]["insn"] == 27


def test_finish_and_reverse_finish_around_a_bpf_to_bpf_call(
        vm: Session, bpf_obj: Callable[[str], Path]) -> None:
    obj = bpf_obj("tests/progs/calls.bpf.c")
    rec = _recording(vm, obj, CALLS["program"], read_packet(CALLS["cases"][0]["input_hex"]),
                     False)
    replay = Replay(rec)
    calls = [k for k, s in enumerate(rec.steps) if s.site.insn.is_pseudo_call]
    first = calls[0]
    while replay.pos < first:
        replay.stepi()
    replay.stepi()  # into the callee
    assert replay.site() is not None and replay.site().function != rec.steps[first].site.function
    replay.reverse_stepi(over_calls=False)
    assert replay.pos == first
    assert replay.stepi(over_calls=True).reason == "step"  # nexti: over the whole call
    after = replay.pos
    assert rec.steps[after].site.function == rec.steps[first].site.function
    replay.reverse_stepi(over_calls=True)  # reverse-nexti: back over it to the call
    assert replay.pos == first
    replay.stepi()
    replay.stepi()
    assert replay.finish().reason == "step" and replay.pos == after
    replay.pos = first + 2
    assert replay.finish(reverse=True).reason == "step" and replay.pos == first
