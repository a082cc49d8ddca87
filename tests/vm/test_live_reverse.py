"""Live reverse debugging (``qstep debug --reverse``): a run recorded as it goes.

The truth is a separate, plain gdbstub session stepping the same input forward:
reverse-stepi from a live stop at the program's last instruction must arrive, at
every instruction, at the state that session had there (instruction, registers,
call frames); reverse-continue must stop at the last write of a watched map value
with the values the stepped run saw; going forward again must reach the live point
and run live to the program's end with the real retval.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import load_program

from qstep.bpf.elf import BpfObject
from qstep.debugger.commands import CommandSet
from qstep.debugger.defined import DefinedRegs
from qstep.debugger.engine import Debugger, RunRequest
from qstep.debugger.reverse import ReversibleDebugger
from qstep.debugger.reverse_commands import ReverseCommands
from qstep.debugger.source import SourceView
from qstep.debugger.tailcall import TailCalled
from qstep.errors import UsageError
from qstep.listing import bpf_text
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.userinput import read_packet

pytestmark = pytest.mark.vm

PROGS = json.loads((REPO_ROOT / "tests/progs/expected.json").read_text())
CALLS = PROGS["calls"]
EXAMPLE = REPO_ROOT / "examples" / "l4lb"
L4LB = ("examples/l4lb/l4lb.bpf.c", "l4lb_ingress",
        str(REPO_ROOT / "examples/l4lb/packets/ipv6_to_v6real.hex"), True)
CALLS_CASE = ("tests/progs/calls.bpf.c", CALLS["program"], CALLS["cases"][0]["input_hex"],
              False)
KERNEL = 0xFFFF800000000000
State = tuple[int, tuple[int, ...], tuple[tuple[str, int, int], ...]]


def state(dbg: Debugger) -> State:
    """Instruction, BPF registers and call frames (function, instruction, r10)."""
    site = dbg.site()
    assert site is not None
    frames = tuple((f.function.name, f.site.index if f.site else -1, f.r10)
                   for f in dbg.frames())
    return site.index, dbg.regs().values, frames


def stepped_states(vm: Session, obj: Path, name: str, data: bytes, maps: bool
                   ) -> tuple[list[State], int]:
    """Every state of a plain gdbstub-stepped run, and its retval."""
    prog = load_program(vm, obj, name, maps)
    try:
        with vm.debugger(prog, RunRequest(data), "rsp") as dbg:
            dbg.add_breakpoint(f"#{prog.functions[0].start_insn}", temporary=True)
            event = dbg.run()
            states = []
            while event.kind == "stopped":
                states.append(state(dbg))
                event = dbg.stepi()
            assert event.retval is not None
            return states, event.retval
    finally:
        vm.unload(prog)


@contextmanager
def reversible(vm: Session, obj: Path, name: str, data: bytes, maps: bool,
               limit: int | None = None) -> Iterator[ReversibleDebugger]:
    prog = load_program(vm, obj, name, maps)
    try:
        with vm.debugger(prog, RunRequest(data), "rsp", reverse=True,
                         record_limit=limit) as dbg:
            assert isinstance(dbg, ReversibleDebugger) and dbg.recorder is not None
            yield dbg
    finally:
        vm.unload(prog)


def defined_sets(prog: LoadedProgram, states: list[State]) -> list[frozenset[int]]:
    """The registers with a defined value before each state of a run."""
    defined, live, out = DefinedRegs(), frozenset({1, 10}), []
    for index, _, _ in states:
        out.append(live)
        live = defined.after(prog.sites[index].insn)
    return out


def norm(s: State, live: frozenset[int]) -> tuple[object, ...]:
    """A state without what differs between two runs: registers with no defined value
    (left over from the kernel) are dropped; kernel addresses (the stack, the packet,
    the context move) become offsets from the frame pointer when they point into the
    stack, else just 'a kernel pointer'."""
    index, regs, frames = s
    fp = frames[-1][2]  # the outermost frame's r10

    def value(v: int) -> object:
        if v < KERNEL:
            return v
        return ("fp", v - fp) if abs(v - fp) < 1 << 16 else "kernel pointer"
    return (index, tuple(value(v) if n in live else None for n, v in enumerate(regs)),
            tuple((f, i, r10 - fp) for f, i, r10 in frames))


def comparable(prog: LoadedProgram, states: list[State]) -> list[tuple[object, ...]]:
    return [norm(s, live) for s, live in zip(states, defined_sets(prog, states), strict=True)]


def step_to_the_end(dbg: ReversibleDebugger) -> list[State]:
    """Run from the entry, stepping live through the gdbstub (recorded as it goes) to the
    main function's exit: every state on the way."""
    dbg.add_breakpoint(f"#{dbg.prog.functions[0].start_insn}", temporary=True)
    dbg.run()
    forward = [state(dbg)]
    while not (dbg.prog.sites[forward[-1][0]].insn.is_exit and len(forward[-1][2]) == 1):
        assert dbg.stepi().kind == "stopped"
        forward.append(state(dbg))
    return forward


def back_to_the_start(dbg: ReversibleDebugger) -> list[State]:
    """reverse-stepi from the live stop to the first recorded instruction, in run order."""
    assert not dbg.replaying and dbg.can_reverse
    backward = [state(dbg)]
    while True:
        event = dbg.reverse_stepi()
        if event.reason == "history-start":
            break
        assert event.reason == "step" and dbg.replaying
        backward.append(state(dbg))
    return backward[::-1]


@pytest.mark.parametrize("case", [L4LB, CALLS_CASE], ids=["l4lb", "calls"])
def test_reverse_stepi_matches_the_live_stepped_run_at_every_instruction(
        guest: Session, bpf_obj: Callable[[str], Path],
        case: tuple[str, str, str, bool]) -> None:
    """One run, stepped forward live through the gdbstub (recorded as it goes) to its
    last instruction, then gone back through: the same state at every instruction."""
    source, name, packet, maps = case
    obj, data = bpf_obj(source), read_packet(packet)
    with reversible(guest, obj, name, data, maps) as dbg:
        forward = step_to_the_end(dbg)
        assert back_to_the_start(dbg) == forward
        assert dbg.cont().kind == "exited"


@pytest.mark.parametrize("case", [L4LB, CALLS_CASE], ids=["l4lb", "calls"])
def test_reverse_stepi_from_a_breakpoint_at_the_end_matches_a_stepped_run(
        guest: Session, bpf_obj: Callable[[str], Path],
        case: tuple[str, str, str, bool]) -> None:
    """A separate gdbstub-stepped run is the truth; the recorded run went to its last
    instruction at full speed (a breakpoint). Then forward: replayed to the live
    point, and live to the real end."""
    source, name, packet, maps = case
    obj, data = bpf_obj(source), read_packet(packet)
    forward, retval = stepped_states(guest, obj, name, data, maps)
    last = forward[-1][0]
    assert [s[0] for s in forward].count(last) == 1  # the breakpoint stops there once
    with reversible(guest, obj, name, data, maps) as dbg:
        dbg.add_breakpoint(f"#{last}")
        assert dbg.run().reason == "breakpoint"
        backward = back_to_the_start(dbg)
        assert comparable(dbg.prog, backward) == comparable(dbg.prog, forward)
        assert dbg.cont().reason == "breakpoint" and not dbg.replaying
        exited = dbg.cont()
        assert exited.kind == "exited" and exited.retval == retval


def test_reverse_continue_stops_at_the_last_write_of_a_watched_map_value(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    """l4lb adds 1 to its per-VIP packet counter (a map value) with one instruction;
    stepped to live (the truth: the gdbstub's registers there), then run on at full
    speed, watched and gone back to."""
    source, name, packet, maps = L4LB
    obj, data = bpf_obj(source), read_packet(packet)
    with reversible(guest, obj, name, data, maps) as dbg:
        adds = [s.index for s in dbg.prog.sites.values()
                if bpf_text(dbg.prog, s).startswith("lock *(u64 *)(r0 +0) += r1")
                and s.source is not None and "st->packets" in s.source.text]
        assert adds, "no atomic add in the program"
        dbg.add_breakpoint(f"#{adds[0]}", temporary=True)
        assert dbg.run().reason == "breakpoint"
        at_add = state(dbg)
        counter, added = at_add[1][0], at_add[1][1]
        before = dbg.read_memory(counter, 8)
        for _ in range(3):
            dbg.stepi()
        later = dbg.add_breakpoint(f"#{state(dbg)[0]}")
        now = dbg.read_memory(counter, 8)
        assert int.from_bytes(now, "little") == int.from_bytes(before, "little") + added
        dbg.set_watchpoint(counter, 8, "write")
        event = dbg.reverse_continue()
        assert event.reason == "watchpoint" and event.watch_addr == counter
        assert state(dbg) == at_add  # before the write
        stop = dbg.last_replay_stop
        assert stop is not None and stop.watch is not None
        assert stop.watch[1:] == (counter, before, now)
        assert dbg.read_memory(counter, 8) == before  # memory in the past
        assert dbg.stepi().reason == "watchpoint" and dbg.read_memory(counter, 8) == now
        assert dbg.cont().reason == "breakpoint" and not dbg.replaying
        dbg.delete_breakpoint(later.number)
        assert dbg.cont().kind == "exited"


def test_live_part_is_recorded_and_breakpoints_hit_going_backwards(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    source, name, packet, maps = CALLS_CASE
    obj, data = bpf_obj(source), read_packet(packet)
    forward, retval = stepped_states(guest, obj, name, data, maps)
    first, second = len(forward) // 3, 2 * len(forward) // 3
    with reversible(guest, obj, name, data, maps) as dbg:
        live = defined_sets(dbg.prog, forward)

        def at(j: int) -> bool:
            return norm(state(dbg), live[j]) == norm(forward[j], live[j])
        a = dbg.add_breakpoint(f"#{forward[first][0]}")
        k = [s[0] for s in forward].index(forward[first][0])
        assert dbg.run().reason == "breakpoint" and at(k)
        for back in range(1, 4):
            dbg.reverse_stepi()
            assert at(k - back) and dbg.replaying
        dbg.delete_breakpoint(a.number)
        for n in range(1, 4):  # replayed forward to the live point
            dbg.stepi()
            assert at(k - 3 + n)
        assert not dbg.replaying
        for n in range(1, second - k + 1):  # live stepping, recorded as it goes
            dbg.stepi()
            assert at(k + n)
        dbg.add_breakpoint(f"#{forward[k][0]}")
        event = dbg.reverse_continue()  # back across the old live point
        assert event.reason == "breakpoint" and event.breakpoint is not None
        hits = [j for j in range(k, second) if forward[j][0] == forward[k][0]]
        assert at(hits[-1]) and dbg.replaying
        dbg.delete_breakpoint(event.breakpoint.number)
        exited = dbg.cont()
        assert exited.kind == "exited" and exited.retval == retval


def test_over_the_size_limit_one_message_and_the_live_debugger_goes_on(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    source, name, packet, maps = L4LB
    obj, data = bpf_obj(source), read_packet(packet)
    with reversible(guest, obj, name, data, maps, limit=4096) as dbg:
        dbg.add_breakpoint("l4lb.bpf.c:178")
        assert dbg.run().reason == "breakpoint"
        with pytest.raises(UsageError, match=r"size limit \(4096 bytes\)"):
            dbg.reverse_stepi()
        assert not dbg.can_reverse and dbg.record_info().problem is not None
        dbg.stepi()
        dbg.delete_breakpoint(1)
        assert dbg.cont().kind == "exited"


def _debug(l4lb_obj: Path, *commands: str) -> dict[str, str]:
    """``qstep debug --reverse`` in batch: each command's output (stdout and errors)."""
    argv = [sys.executable, "-m", "qstep.cli", "debug", str(l4lb_obj), "--maps",
            str(EXAMPLE / "maps.txt"), "--packet", str(EXAMPLE / "packets/ipv6_to_v6real.hex"),
            "--reverse"]
    for command in commands:
        argv += ["-ex", command]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    parts = proc.stdout.split("(qstep) ")[1:]
    assert [p.split("\n", 1)[0] for p in parts] == list(commands), proc.stdout
    return {f"{n}: {p.split(chr(10), 1)[0]}": p.split("\n", 1)[1] for n, p in enumerate(parts)}


def test_cli_watch_a_stack_slot_backwards_and_forwards(l4lb_obj: Path) -> None:
    """tkey.tunnel_id (a stack slot) is zeroed at line 132 and set to vip_num (2 for this
    packet, from maps.txt) at line 161: reverse-continue from line 178 finds both writes
    with their bytes, then the start of the run; forward, the same writes again."""
    out = list(_debug(l4lb_obj, "break l4lb.bpf.c:178", "run", "info record",
                      "watch tkey.tunnel_id", "reverse-continue", "print vip_num",
                      "x/1wx $r10 - 48", "rc", "rc", "info record", "continue",
                      "continue", "continue", "kill").values())
    assert out[2] == ("Recording: on (the recorder plugin, size limit 268435456 bytes)\n"
                      "Recorded 137 BPF instructions in this run\n")
    assert out[4].startswith("Going back: process_packet:92 (insn 167) at l4lb.bpf.c:161 wrote "
                             "02000000 over 00000000 (4 bytes at 0x")
    assert "161\t\ttkey.tunnel_id = vip_num;" in out[4]
    assert "[replaying: instruction 117 of 137 recorded;" in out[4]
    assert out[5] == "2\n"  # vip_num
    slot = re.search(r"\(4 bytes at (0x[0-9a-f]+)\)", out[3])
    assert slot is not None and "=>  167: *(u32 *)(r10 -48) = r6" in out[4]
    assert out[6] == f"{slot.group(1)}:  0x00000000\n"  # the slot before the write
    assert re.match(r"Going back: process_packet:9 \(insn 84\) at l4lb.bpf.c:132 wrote 00000000 "
                    r"over [0-9a-f]{8} ", out[7])
    assert out[8].startswith("No more reverse-execution history.\nl4lb_ingress:0 (insn 0)")
    assert "Replay mode: at instruction 1\n" in out[9]
    assert "accessed by insn 84 (l4lb.bpf.c:132)" in out[10] and "New value = 0" in out[10]
    assert "accessed by insn 167 (l4lb.bpf.c:161)" in out[11] and "New value = 2" in out[11]
    assert out[12].startswith("Breakpoint 1, process_packet:125 (insn 200) at l4lb.bpf.c:178")
    assert "[replaying" not in out[12]  # back at the live point
    assert out[13].startswith("[program exited: retval 7 (TC_ACT_REDIRECT)")  # live


def test_cli_back_from_a_live_watchpoint_stop_and_record_stop(l4lb_obj: Path) -> None:
    """A live watchpoint stops inside the writing instruction: reverse-stepi goes to its
    start (the slot not yet written); 'record stop' ends reverse execution, not the run."""
    out = list(_debug(l4lb_obj, "break l4lb.bpf.c:158", "run", "watch tkey.tunnel_id",
                      "continue", "reverse-stepi", "x/1wx $r10 - 48", "stepi",
                      "x/1wx $r10 - 48", "record stop", "reverse-stepi", "info record",
                      "kill").values())
    assert "accessed by insn 167 (l4lb.bpf.c:161)" in out[3] and "New value = 2" in out[3]
    assert "[replaying" not in out[3]
    assert out[4].startswith("process_packet:92 (insn 167) at l4lb.bpf.c:161\n")
    assert "[replaying: instruction" in out[4]
    slot = re.search(r"\(4 bytes at (0x[0-9a-f]+)\)", out[2])
    assert slot is not None and "=>  167: *(u32 *)(r10 -48) = r6" in out[4]
    assert out[5] == f"{slot.group(1)}:  0x00000000\n"  # before the write, in the past
    assert out[7] == f"{slot.group(1)}:  0x00000002\n"  # live again
    assert out[8].startswith("Process record is stopped")
    assert out[9].startswith("error: no reverse execution for this run: recording was "
                             "stopped ('record stop')")
    assert "Recording: off" in out[10]
    assert out[11].startswith("[program exited: retval 7 (TC_ACT_REDIRECT)")


def test_a_tail_call_ends_reverse_execution_with_one_message(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    """tests/progs/tailcall.bpf.c leaves at tail_main:30 for another program (tail_v6,
    retval 1 for an IPv6 packet): before it, reverse execution works; once the CPU is
    in the other program, one message, and the run still finishes."""
    obj = BpfObject.open(bpf_obj("tests/progs/tailcall.bpf.c"))
    prog = guest.load(obj, "tail_main")
    packet = read_packet(str(EXAMPLE / "packets" / "ipv6_to_v6real.hex"))
    try:
        with guest.debugger(prog, RunRequest(packet), "rsp", reverse=True) as dbg:
            assert isinstance(dbg, ReversibleDebugger)
            dbg.add_breakpoint("tail_main:30")
            assert dbg.run().reason == "breakpoint"
            live = state(dbg)
            dbg.reverse_stepi()
            assert dbg.replaying and state(dbg)[0] < live[0]
            assert dbg.cont().reason == "breakpoint" and state(dbg) == live
            with pytest.raises(TailCalled):
                dbg.stepi()
            with pytest.raises(UsageError, match=r"outside it \(0x[0-9a-f]+; a tail call"):
                dbg.reverse_stepi()
            assert not dbg.can_reverse
            exited = dbg.cont()
            assert (exited.kind, exited.retval) == ("exited", 1)
    finally:
        guest.unload(prog)


def test_reverse_finish_and_reverse_nexti_around_a_bpf_to_bpf_call(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    """In one run stepped live to its end (the truth: gdbstub states), back to inside a
    subprogram: reverse-finish stops at its call, stepi enters it again, finish (replayed)
    stops after the return, reverse-nexti from there goes back over the call."""
    source, name, packet, maps = CALLS_CASE
    obj, data = bpf_obj(source), read_packet(packet)
    with reversible(guest, obj, name, data, maps) as dbg:
        forward = step_to_the_end(dbg)
        depth = [len(s[2]) for s in forward]
        call = depth.index(2) - 1  # the first bpf-to-bpf call
        inside = call + 3
        assert depth[inside] == 2 and dbg.prog.sites[forward[call][0]].insn.is_pseudo_call
        back = next(j for j in range(inside, len(forward)) if depth[j] == 1)
        for _ in range(len(forward) - 1 - inside):
            dbg.reverse_stepi()
        assert state(dbg) == forward[inside]
        assert dbg.reverse_finish().reason == "step" and state(dbg) == forward[call]
        assert dbg.stepi().reason == "step" and state(dbg) == forward[call + 1]
        assert dbg.finish().reason == "step" and state(dbg) == forward[back]
        assert dbg.reverse_stepi(over_calls=True).reason == "step"
        assert state(dbg) == forward[call]
        assert dbg.replaying
        assert dbg.cont().kind == "exited"


def test_c_variables_in_the_past_are_the_live_runs(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    """l4lb stepped live to its end, 'info locals' and 'info args' at every instruction
    (the gdbstub's view), then gone back through: the same lines at every instruction,
    except values the recording cannot vouch for, which say so (never another value)."""
    source, name, packet, maps = L4LB
    obj, data = bpf_obj(source), read_packet(packet)
    with reversible(guest, obj, name, data, maps) as dbg:
        cmds = CommandSet(dbg, SourceView(BpfObject.open(obj), dbg))

        def variables() -> list[str]:
            return [line for what in ("locals", "args")
                    for line in cmds.execute(f"info {what}").text.splitlines()]
        dbg.add_breakpoint(f"#{dbg.prog.functions[0].start_insn}", temporary=True)
        dbg.run()
        forward = [variables()]
        while not (dbg.prog.sites[state(dbg)[0]].insn.is_exit and len(dbg.frames()) == 1):
            dbg.stepi()
            forward.append(variables())
        backward = [variables()]
        while dbg.reverse_stepi().reason != "history-start":
            backward.append(variables())
        backward.reverse()
        assert len(backward) == len(forward)
        shown = unknown = 0
        for live, past in zip(forward, backward, strict=True):
            assert len(live) == len(past)
            for a, b in zip(live, past, strict=True):
                if "unavailable" in b and "unavailable" not in a:
                    unknown += 1
                else:
                    assert a == b
                    shown += 1
        assert shown > 20 * unknown  # nearly everything is known
        tkey = [n for n, lines in enumerate(backward) if any(
            line.startswith("tkey = {tunnel_id = 2,") for line in lines)]
        assert tkey and all("tkey = <unavailable" not in line for lines in backward[tkey[0]:]
                            for line in lines)


def test_cli_json(l4lb_obj: Path) -> None:
    """--json: each reverse stop says whether it is in the past and where."""
    argv = [sys.executable, "-m", "qstep.cli", "debug", str(l4lb_obj), "--maps",
            str(EXAMPLE / "maps.txt"), "--packet", str(EXAMPLE / "packets/ipv6_to_v6real.hex"),
            "--reverse", "--json"]
    for command in ("break l4lb.bpf.c:178", "run", "rsi 2", "info record", "rc", "continue",
                    "continue"):
        argv += ["-ex", command]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o.get("reason") or o.get("event") for o in out[1:]] == [
        "breakpoint", "step", None, "history-start", "breakpoint", "exited"]
    live, back, info, start, again, end = out[1:]
    assert live["replaying"] is False and live["where"]["insn"] == 200
    assert back["replaying"] is True and (back["replay_position"], back["recorded"]) == (136, 137)
    assert info == {"recording": True, "instructions": 137, "position": 136,
                    "limit": 256 << 20, "problem": None}
    assert start["where"]["insn"] == 0 and start["replay_position"] == 1
    assert again["replaying"] is False and again["regs"] == live["regs"]
    assert (end["event"], end["retval"]) == ("exited", 7)


def test_record_at_a_stop_records_from_there_on(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    """'record stop' at the entry, stepped live into a subprogram, then 'record' (gdb's
    record full at a stop): stepped on, out of the subprogram; going back ends exactly
    at the 'record' point, with the live-stepped state (frames included: the callers
    from before the recording) at every instruction."""
    source, name, packet, maps = CALLS_CASE
    obj, data = bpf_obj(source), read_packet(packet)
    with reversible(guest, obj, name, data, maps) as dbg:
        cmds = ReverseCommands(CommandSet(dbg), dbg)
        dbg.add_breakpoint(f"#{dbg.prog.functions[0].start_insn}", temporary=True)
        dbg.run()
        assert cmds.execute("record stop").data == {"recording": False}
        while len(dbg.frames()) < 2:
            dbg.stepi()
        for _ in range(2):
            dbg.stepi()
        with pytest.raises(UsageError, match=r"recording was stopped \(.record stop.\)"):
            dbg.reverse_stepi()
        assert cmds.execute("record").text == "recording from here on"
        forward = [state(dbg)]
        while len(forward[-1][2]) >= 2:  # deeper calls too, until back in main
            dbg.stepi()
            forward.append(state(dbg))
        for _ in range(3):
            dbg.stepi()
            forward.append(state(dbg))
        assert len(forward[-1][2]) == 1  # back in the main function
        assert back_to_the_start(dbg) == forward
        assert dbg.reverse_stepi().reason == "history-start" and state(dbg) == forward[0]
        assert cmds.execute("info record").data["instructions"] == len(forward) - 1
        exited = dbg.cont()
        assert exited.kind == "exited" and exited.retval == CALLS["cases"][0]["retval"]
