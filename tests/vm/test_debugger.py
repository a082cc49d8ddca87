"""The interactive debugger on the bundled example, checked against values known by construction.

Known by construction: the packet's bytes (the VIP address, ports), the calling
convention (r1 = ctx at entry, r3 = is_ipv6), the retvals of expected.json,
the BPF frame pointer of the caller seen from its entry.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import matrix_kernels

from qstep.bpf.elf import BpfObject
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import Debugger, RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.errors import UsageError
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
SOURCE = (EXAMPLE / "l4lb.bpf.c").read_text().splitlines()
IPV4 = read_packet(str(EXAMPLE / "packets/ipv4_to_v4real.hex"))
IPV6 = read_packet(str(EXAMPLE / "packets/ipv6_to_v6real.hex"))


def line_of(fragment: str) -> int:
    return next(n for n, text in enumerate(SOURCE, start=1) if fragment in text)


@pytest.fixture(scope="module", params=matrix_kernels())
def vm(request: pytest.FixtureRequest, guests: Callable[[str], Session]) -> Session:
    """These tests run on every kernel of the matrix."""
    return guests(request.param)


@pytest.fixture(scope="module")
def l4lb(vm: Session, l4lb_obj: Path) -> Iterator[LoadedProgram]:
    prog = vm.load(BpfObject.open(l4lb_obj), "l4lb_ingress")
    for entry in read_map_file(EXAMPLE / "maps.txt"):
        key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
        vm.update_map(prog, entry.map_name, key, value)
    yield prog
    vm.unload(prog)


@pytest.fixture(params=["rsp", "gdb"])
def debugger(request: pytest.FixtureRequest, vm: Session,
             l4lb: LoadedProgram) -> Iterator[Callable[[bytes], Debugger]]:
    """A factory: debugger(packet) → Debugger attached through the given backend."""
    with vm.target(request.param) as target:
        made: list[Debugger] = []

        def make(packet: bytes, repeat: int = 1) -> Debugger:
            dbg = Debugger(l4lb, target, vm, RunRequest(packet, repeat=repeat))
            made.append(dbg)
            return dbg
        yield make
        for dbg in made:
            dbg.detach()


def test_function_breakpoint_stops_at_entry_with_the_arguments(
        debugger: Callable[[bytes], Debugger]) -> None:
    for packet, is_ipv6 in ((IPV4, 0), (IPV6, 1)):
        dbg = debugger(packet)
        bp = dbg.add_breakpoint("process_packet")
        event = dbg.run()
        assert event.breakpoint is bp and bp.hits == 1
        assert event.site is not None and event.site.function.name == "process_packet"
        assert event.site.index == event.site.function.start_insn
        regs = dbg.regs()
        assert regs[3] == is_ipv6
        # r2 = &pkt: its first field is the VIP address copied from the packet.
        dst = packet[30:34] if not is_ipv6 else packet[38:54]
        assert dbg.read_memory(regs[2], len(dst)) == dst
        assert dbg.cont().retval == 7
        dbg.delete_breakpoint(bp.number)


def test_frames_and_finish_across_the_bpf_to_bpf_call(
        debugger: Callable[[bytes], Debugger]) -> None:
    dbg = debugger(IPV4)
    dbg.add_breakpoint("l4lb_ingress")
    dbg.add_breakpoint(f"l4lb.bpf.c:{line_of('vip = bpf_map_lookup_elem(&vip_map')}")
    event = dbg.run()
    entry_r10, ctx = dbg.regs()[10], dbg.regs()[1]
    event = dbg.cont()
    assert event.site is not None and event.site.source is not None
    assert event.site.source.line == line_of("vip = bpf_map_lookup_elem(&vip_map")
    frames = dbg.frames()
    assert [f.function.name for f in frames] == ["process_packet", "l4lb_ingress"]
    assert frames[1].r10 == entry_r10
    assert frames[1].site is not None and frames[1].site.insn.is_pseudo_call
    assert dbg.regs()[6] == ctx  # process_packet keeps skb in r6 (known from the listing)
    event = dbg.finish()
    assert event.site is not None and event.site.function.name == "l4lb_ingress"
    assert event.site.index == frames[1].site.index + 1
    assert dbg.regs()[0] == 7
    assert dbg.regs()[10] == entry_r10
    assert dbg.cont().retval == 7


def test_stepi_enters_the_call_and_nexti_steps_over_it(
        debugger: Callable[[bytes], Debugger], l4lb: LoadedProgram) -> None:
    call = next(s for s in l4lb.sites.values() if s.insn.is_pseudo_call)
    callee = next(f for f in l4lb.functions if f.name == "process_packet")
    for over, expected in ((False, callee.start_insn), (True, call.index + 1)):
        dbg = debugger(IPV4)
        bp = dbg.add_breakpoint(f"#{call.index}")
        dbg.run()
        event = dbg.stepi(over_calls=over)
        assert event.site is not None and event.site.index == expected
        if over:
            assert dbg.regs()[0] == 7
        dbg.delete_breakpoint(bp.number)
        assert dbg.cont().retval == 7


def test_next_walks_source_lines_in_order(debugger: Callable[[bytes], Debugger]) -> None:
    dbg = debugger(IPV4)
    dbg.add_breakpoint("process_packet")
    dbg.run()
    lines = []
    for _ in range(6):
        event = dbg.step_line(over_calls=True)
        assert event.site is not None and event.site.source is not None
        lines.append(event.site.source.line)
    assert all(a != b for a, b in zip(lines, lines[1:], strict=False))
    assert line_of("vip = bpf_map_lookup_elem(&vip_map") in lines
    dbg.kill()


def test_hit_counts_over_repeated_runs_and_until(debugger: Callable[..., Debugger]) -> None:
    dbg = debugger(IPV4, 3)
    bp = dbg.add_breakpoint("process_packet")
    event = dbg.run()
    while event.kind == "stopped":
        event = dbg.cont()
    assert bp.hits == 3 and event.retval == 7
    dbg.set_enabled(bp.number, False)
    target_line = line_of("st = bpf_map_lookup_elem(&stats")
    dbg.add_breakpoint("l4lb_ingress", temporary=True)
    dbg.run()
    event = dbg.advance(f"l4lb.bpf.c:{target_line}")
    assert event.reason == "location" and event.site is not None
    assert event.site.source is not None and event.site.source.line == target_line
    assert bp.hits == 3
    dbg.kill()


def test_bad_locations_say_why(debugger: Callable[[bytes], Debugger], vm: Session,
                               bpf_obj: Callable[[str], Path]) -> None:
    dbg = debugger(IPV4)
    blank = next(n for n, t in enumerate(SOURCE, start=1) if n > 140 and not t.strip())
    with pytest.raises(UsageError, match=rf"line {blank} of l4lb.bpf.c has no code after "
                                         r"optimisation; nearest lines with code: \d+, \d+"):
        dbg.add_breakpoint(f"l4lb.bpf.c:{blank}")
    with pytest.raises(UsageError, match="no function 'nosuch'; functions: l4lb_ingress, "
                                         "process_packet"):
        dbg.add_breakpoint("nosuch")
    with pytest.raises(UsageError, match=r"offset 9999 is outside process_packet \(0\.\.\d+\)"):
        dbg.add_breakpoint("process_packet:9999")
    ldimm = next(s for s in dbg.prog.sites.values() if s.insn.is_ldimm64)
    offset = ldimm.index + 1 - ldimm.function.start_insn
    with pytest.raises(UsageError, match="second half of the ld_imm64"):
        dbg.add_breakpoint(f"{ldimm.function.name}:{offset}")
    dbg.detach()  # the agent needs the VM running to load another program
    dead = vm.load(BpfObject.open(bpf_obj("tests/progs/deadcode.bpf.c")), "dead_main")
    try:
        removed = next(s for s in dead.sites.values() if s.removed)
        from qstep.debugger.locations import resolve
        with pytest.raises(UsageError, match="removed by the verifier"):
            resolve(dead, f"dead_main:{removed.index}")
    finally:
        vm.unload(dead)


def test_commands_print_and_examine(debugger: Callable[[bytes], Debugger]) -> None:
    dbg = debugger(IPV4)
    commands = CommandSet(dbg)
    commands.execute("b process_packet")
    out = commands.execute("r")
    assert out.data["event"] == "stopped" and out.data["breakpoint"] == 1
    r2 = dbg.regs()[2]
    assert commands.execute("p $r3").data["value"] == 0
    assert commands.execute("print $r2 + 4 - 4").data["value"] == r2
    assert commands.execute("p mem($r2, 4)").data["value"] == int.from_bytes(IPV4[30:34],
                                                                            "little")
    x = commands.execute("x/4bx $r2").data
    assert x["values"] == list(IPV4[30:34])
    assert "r10" in commands.execute("info registers").text
    assert commands.execute("bt").data["frames"][1]["where"]["function"] == "l4lb_ingress"
    assert "=>" in commands.execute("disas").text
    assert commands.execute("info breakpoints").data["breakpoints"][0]["hits"] == 1
    assert commands.execute("c").data["retval"] == 7


def test_trace_is_deterministic_and_ends_with_the_retval(
        debugger: Callable[[bytes], Debugger]) -> None:
    traces = []
    for _ in range(2):
        dbg = debugger(IPV4)
        records = [r for r in trace_run(dbg) if isinstance(r, TraceRecord)]
        traces.append([r.as_json() for r in records])
    assert traces[0] == traces[1]
    last = traces[0][-1]
    assert last["function"] == "l4lb_ingress" and last["retval"] == 7
    assert len(traces[0]) > 100
    # Only defined registers are recorded: r1 (ctx) and r10 at entry, then what is written.
    assert set(traces[0][0]["regs"]) == {"r1", "r10", "r2"}  # insn 0 writes r2
    assert traces[0][0]["regs"]["r10"] == "fp"
    assert traces[0][0]["regs"]["r1"] == "ctx"


def test_batch_cli_json(l4lb_obj: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qstep.cli", "debug", str(l4lb_obj), "--maps",
         str(EXAMPLE / "maps.txt"), "--packet", str(EXAMPLE / "packets/ipv6_to_v6real.hex"),
         "--json", "-ex", "break process_packet", "-ex", "run", "-ex", "info registers",
         "-ex", "finish", "-ex", "continue"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert out[1]["where"]["function"] == "process_packet"
    assert out[2]["regs"]["r3"] == 1
    assert out[3]["regs"]["r0"] == 7
    assert out[4] == {**out[4], "event": "exited", "retval": 7, "retval_name": "TC_ACT_REDIRECT"}
    assert re.fullmatch(r"[0-9a-f]+", out[4]["packet_out"])
