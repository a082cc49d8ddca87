"""One source line, several places: tests/progs/dupline.bpf.c on 6.1 and 6.12.

The hot line (an FNV-1a step in an inlined function) is copied by the unrolled
loop and the protocol branch. Known independently: where each copy starts
(llvm-objdump-19's line table of the object) and the value of every step
(FNV-1a of the frame's bytes, computed here). A breakpoint and a probe on the
line must fire at every copy, and a ``stop`` probe must hand over the state
before its instruction.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import Debugger, RunRequest
from qstep.debugger.regs import BpfRegs
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.listing import build_listing, format_listing
from qstep.loaded import InsnSite, LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.probe.inspector import Inspector, Probe
from qstep.probe.spec import parse_specs
from qstep.recorder.run import record_run
from qstep.recorder.trace import trace_records
from qstep.session import Session

pytestmark = pytest.mark.vm
SOURCE_PATH = "tests/progs/dupline.bpf.c"
SOURCE = (REPO_ROOT / SOURCE_PATH).read_text().splitlines()
M32 = 0xFFFFFFFF
XOR, MUL = 0xA0, 0x20


def line_of(fragment: str) -> int:
    return next(n for n, text in enumerate(SOURCE, start=1) if fragment in text)


HOT = line_of("/* HOT */")
LOAD = line_of("h = fold(h, addr[i]);")


def ipv4(proto: int, ttl: int = 64) -> bytes:
    """eth + IPv4 10.1.2.3 -> 10.9.9.9 + 4 bytes of ports, 60 bytes."""
    frame = (bytes.fromhex("020000000001" "020000000002" "0800")
             + bytes([0x45, 0, 0, 46, 0, 0, 0, 0, ttl, proto, 0, 0, 10, 1, 2, 3, 10, 9, 9, 9])
             + struct.pack(">HH", 1234, 80))
    return frame + bytes(60 - len(frame))


TCP, UDP = ipv4(6), ipv4(17)
FOLDED = {TCP: [10, 1, 2, 3, 6], UDP: [10, 1, 2, 3, 64]}  # saddr, then 6 for TCP or the ttl


def fnv(data: list[int]) -> int:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & M32
    return h


def retval(packet: bytes) -> int:
    return 2 if fnv(FOLDED[packet]) & 1 else 0  # TC_ACT_SHOT for an odd hash


def objdump_line_starts(obj: Path, line: int) -> list[int]:
    """Instructions that start a run of ``line`` in llvm-objdump-19's line table."""
    out = subprocess.run(["llvm-objdump-19", "-d", "--line-numbers", "--no-show-raw-insn",
                          str(obj)], check=True, capture_output=True, text=True).stdout
    starts, current, previous = [], None, None
    for text in out.splitlines():
        if m := re.match(r"; \S+dupline\.bpf\.c:(\d+)", text):
            current = int(m.group(1))
        elif m := re.match(r"\s+(\d+):\t", text):
            if current == line and previous != line:
                starts.append(int(m.group(1)))
            previous = current
    return starts


@pytest.fixture
def dupline_obj(bpf_obj: Callable[[str], Path]) -> Path:
    return bpf_obj(SOURCE_PATH)


@pytest.fixture
def dupline(guest: Session, dupline_obj: Path) -> Iterator[LoadedProgram]:
    prog = guest.load(BpfObject.open(dupline_obj), "dup_classify")
    yield prog
    guest.unload(prog)


def xor_operands(site: InsnSite, regs: BpfRegs) -> set[int]:
    """The two 32-bit operands of the xor at ``site`` (each copy starts with its xor)."""
    insn = site.insn
    assert insn.op == XOR, f"insn {site.index} is not the xor of a copy"
    other = regs[insn.src] if insn.uses_reg_src else insn.imm
    return {regs[insn.dst] & M32, other & M32}


def int_value(value: object) -> int:
    assert isinstance(value, int)
    return value


def expected_steps(packet: bytes) -> list[set[int]]:
    data = FOLDED[packet]
    return [{fnv(data[:k]), data[k]} for k in range(len(data))]


def stops(dbg: Debugger) -> tuple[list[tuple[int, set[int], int | None]], int | None]:
    """Run to the end: (insn, xor operands, breakpoint location) at each stop; the retval."""
    seen = []
    event = dbg.run()
    while event.kind == "stopped":
        assert event.site is not None and event.breakpoint is not None
        seen.append((event.site.index, xor_operands(event.site, dbg.regs()), event.location))
        event = dbg.cont()
    return seen, event.retval


def test_the_compiler_really_duplicates_the_hot_line(dupline: LoadedProgram,
                                                     dupline_obj: Path) -> None:
    starts = objdump_line_starts(dupline_obj, HOT)
    assert len(starts) == 5  # four unrolled copies and the one after the protocol test
    sites = [dupline.sites[i] for i in starts]
    assert all(s.source is not None and s.source.line == HOT and s.exact for s in sites)


def test_breakpoint_on_the_hot_line_stops_at_every_copy(guest: Session, dupline: LoadedProgram,
                                                        dupline_obj: Path) -> None:
    starts = objdump_line_starts(dupline_obj, HOT)
    for packet in (TCP, UDP):
        with guest.debugger(dupline, RunRequest(packet)) as dbg:
            bp = dbg.add_breakpoint(f"dupline.bpf.c:{HOT}")
            assert [loc.site.index for loc in bp.locations] == starts
            seen, ret = stops(dbg)
        assert ret == retval(packet)
        assert [s[0] for s in seen] == starts
        assert [s[1] for s in seen] == expected_steps(packet)
        assert [s[2] for s in seen] == [1, 2, 3, 4, 5]
        assert (bp.hits, [loc.hits for loc in bp.locations]) == (5, [1] * 5)


def test_info_breakpoints_lists_locations_and_one_can_be_disabled(
        guest: Session, dupline: LoadedProgram, dupline_obj: Path) -> None:
    starts = objdump_line_starts(dupline_obj, HOT)
    with guest.debugger(dupline, RunRequest(TCP)) as dbg:
        commands = CommandSet(dbg)
        out = commands.execute(f"break dupline.bpf.c:{HOT}")
        assert out.text.splitlines()[0] == f"Breakpoint 1 at dupline.bpf.c:{HOT} (5 locations)"
        commands.execute("disable 1.2")
        seen, ret = stops(dbg)
        table = commands.execute("info breakpoints").text.splitlines()
    assert ret == retval(TCP)
    assert [s[0] for s in seen] == starts[:1] + starts[2:]
    assert [s[2] for s in seen] == [1, 3, 4, 5]
    assert re.fullmatch(rf"1 +y +4 +<MULTIPLE> +dupline\.bpf\.c:{HOT}", table[1])
    for n, (row, index) in enumerate(zip(table[2:], starts, strict=True), start=1):
        enabled, hits = ("n", 0) if n == 2 else ("y", 1)
        assert re.fullmatch(rf"1\.{n} +{enabled} +{hits} +0x[0-9a-f]{{16}} +"
                            rf"dup_classify:{index} \(insn {index}\) at dupline\.bpf\.c:{HOT}",
                            row), row


def test_until_and_tbreak_take_every_copy(guest: Session, dupline: LoadedProgram,
                                          dupline_obj: Path) -> None:
    starts = objdump_line_starts(dupline_obj, HOT)
    with guest.debugger(dupline, RunRequest(TCP)) as dbg:
        dbg.add_breakpoint(f"#{starts[0]}", temporary=True)
        assert dbg.run().site == dupline.sites[starts[0]]
        reached = []
        for _ in range(4):  # advance from one copy to the next
            event = dbg.advance(f"dupline.bpf.c:{HOT}")
            assert event.reason == "location" and event.site is not None
            reached.append(event.site.index)
        assert reached == starts[1:]
        assert dbg.cont().retval == retval(TCP)
        bp = dbg.add_breakpoint(f"dupline.bpf.c:{HOT}", temporary=True)
        assert len(bp.locations) == 5
        assert dbg.run().site == dupline.sites[starts[0]]
        assert dbg.breakpoints == {}  # a temporary breakpoint goes at its first stop
        assert dbg.cont().retval == retval(TCP)


@pytest.mark.parametrize("recording, mode", [("off", "host"), ("auto", "recording")])
def test_probe_on_the_hot_line_fires_at_every_copy(guest: Session, dupline: LoadedProgram,
                                                   dupline_obj: Path, recording: str,
                                                   mode: str) -> None:
    """Five locations: more than the four debug registers, so the host evaluates them all
    at breakpoints, or (with the recorder) they are evaluated from a recording."""
    starts = objdump_line_starts(dupline_obj, HOT)
    inspector = Inspector(guest, dupline, parse_specs([f"dupline.bpf.c:{HOT} print $r2, $r3"]),
                          recording=recording)
    [probe] = inspector.probes
    assert [s.index for s in probe.sites] == starts and probe.mode == mode
    inspector.attach()
    try:
        assert inspector.run([TCP, UDP], 1) == [retval(TCP), retval(UDP)]
    finally:
        inspector.detach()
    assert [(h.run, h.hit, h.site.index) for h in inspector.hits] == [
        (run, hit, index) for run in (1, 2) for hit, index in enumerate(starts, start=run * 5 - 4)]
    steps = expected_steps(TCP) + expected_steps(UDP)
    for hit, step in zip(inspector.hits, steps, strict=True):
        values = {2: int_value(hit.values[0]), 3: int_value(hit.values[1])}
        assert xor_operands(hit.site, BpfRegs(tuple(values.get(n, 0) for n in range(11)))
                            ) == step
    assert probe.counters.as_dict() == {"reached": 10, "condition_true": 10, "skipped": 0,
                                        "printed": 10, "dropped": 0}


def test_guest_probe_on_a_line_with_four_copies(guest: Session, dupline: LoadedProgram,
                                                dupline_obj: Path) -> None:
    """The loads of the unrolled loop: four locations, one in-guest probe each, one spec."""
    starts = objdump_line_starts(dupline_obj, LOAD)
    assert len(starts) == 4
    inspector = Inspector(guest, dupline, parse_specs([f"dupline.bpf.c:{LOAD} skip 1 print $r2"]))
    [probe] = inspector.probes
    assert [s.index for s in probe.sites] == starts and probe.mode == "guest"
    inspector.attach()
    try:
        assert inspector.run([TCP], 1) == [retval(TCP)]
    finally:
        inspector.detach()
    # r2 holds h after the k-th step when the (k+1)-th byte is loaded; skip 1 drops the first
    assert [(h.hit, h.site.index, int_value(h.values[0]) & M32) for h in inspector.hits] == [
        (k + 1, starts[k], fnv(FOLDED[TCP][:k])) for k in (1, 2, 3)]
    assert probe.counters.as_dict() == {"reached": 4, "condition_true": 4, "skipped": 1,
                                        "printed": 3, "dropped": 0}


def test_stop_hands_over_the_state_before_the_probed_instruction(
        guest: Session, dupline: LoadedProgram, dupline_obj: Path) -> None:
    """The second copy's xor (one x86 instruction): stopped there, it has not run yet."""
    index = objdump_line_starts(dupline_obj, HOT)[1]
    seen: list[tuple[int | None, dict[str, int], dict[str, int], int | None, int]] = []

    def on_stop(dbg: Debugger, probe: Probe, before: BpfRegs) -> None:
        where = dbg.site()
        now = dbg.regs().as_dict()
        stepped = dbg.stepi()
        seen.append((where.index if where else None, before.as_dict(), now,
                     stepped.site.index if stepped.site else None, dbg.regs()[2]))

    inspector = Inspector(guest, dupline, parse_specs([f"dup_classify:{index} stop"]))
    inspector.on_stop = on_stop
    inspector.attach()
    try:
        assert inspector.run([TCP], 1) == [retval(TCP)]
    finally:
        inspector.detach()
    [(where, before, now, after, r2_after)] = seen
    assert where == index and now == before
    assert {before["r2"] & M32, before["r3"]} == {fnv([10]), 1}
    assert after == index + 1 and r2_after & M32 == fnv([10]) ^ 1
    with guest.debugger(dupline, RunRequest(TCP)) as dbg:  # a gdb breakpoint right there
        dbg.add_breakpoint(f"#{index}")
        assert dbg.run().site == dupline.sites[index]
        at_breakpoint = dbg.regs().as_dict()
        assert dbg.cont().retval == retval(TCP)
    assert frame_relative(at_breakpoint) == frame_relative(before)


def frame_relative(regs: dict[str, int]) -> dict[str, int | tuple[str, int]]:
    """Registers with kernel stack addresses as offsets from r10 (the stack base moves
    between runs)."""
    r10 = regs["r10"]
    return {name: ("r10", value - r10) if abs(value - r10) < 1 << 14 else value
            for name, value in regs.items()}


def test_stop_on_the_hot_line_from_the_host(guest: Session, dupline: LoadedProgram,
                                            dupline_obj: Path) -> None:
    """Five locations go to the host; 'skip 2 stop' stops at the third copy, exactly."""
    starts = objdump_line_starts(dupline_obj, HOT)
    seen: list[tuple[int | None, set[int], bool]] = []

    def on_stop(dbg: Debugger, probe: Probe, before: BpfRegs) -> None:
        site = dbg.site()
        assert site is not None
        seen.append((site.index, xor_operands(site, dbg.regs()), before == dbg.regs()))

    inspector = Inspector(guest, dupline, parse_specs([f"dupline.bpf.c:{HOT} skip 2 stop"]))
    assert inspector.probes[0].mode == "host"
    inspector.on_stop = on_stop
    inspector.attach()
    try:
        assert inspector.run([TCP], 1) == [retval(TCP)]
    finally:
        inspector.detach()
    assert seen == [(starts[k], expected_steps(TCP)[k], True) for k in (2, 3, 4)]
    assert inspector.probes[0].counters.as_dict() == {
        "reached": 5, "condition_true": 5, "skipped": 2, "printed": 3, "dropped": 0}


def test_disasm_run_and_trace(guest: Session, dupline: LoadedProgram, dupline_obj: Path) -> None:
    """The listing shows each copy at its line; run stores the hash; traces agree."""
    starts = objdump_line_starts(dupline_obj, HOT)
    listing = format_listing(build_listing(dupline))
    assert listing.count("/* HOT */") >= len(starts)  # the source line above each copy
    for packet in (TCP, UDP):
        assert guest.test_run(dupline, packet).retval == retval(packet)
        assert guest.dump_map(dupline, "last_hash") == [
            (bytes(4), struct.pack("<I", fnv(FOLDED[packet])))]
    _, rec = record_run(guest, dupline, TCP)
    recorded = list(trace_records(rec))
    with guest.debugger(dupline, RunRequest(TCP)) as dbg:
        stepped = [i for i in trace_run(dbg) if isinstance(i, TraceRecord)]
    assert [r.as_json() for r in recorded] == [r.as_json() for r in stepped]
    # each copy's multiply leaves h after that byte in its destination register
    muls = [r for r in stepped if r.site.source is not None and r.site.source.line == HOT
            and r.site.insn.op == MUL and r.regs_after is not None]
    assert [(r.regs_after[r.site.insn.dst] or 0) & M32 for r in muls if r.regs_after] == [
        fnv(FOLDED[TCP][:k]) for k in range(1, 6)]


def test_inspect_command_counts_a_line_as_one_spec(dupline_obj: Path) -> None:
    """The CLI: one summary row for the hot line's five locations, every hit printed."""
    out = subprocess.run([sys.executable, "-m", "qstep.cli", "inspect", str(dupline_obj),
                          f"dupline.bpf.c:{HOT} print $r2", "--packet", TCP.hex()],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(line.startswith("probe 1 at dup_classify:") for line in lines) == 5
    [row] = [line for line in lines if line.startswith("1 ")]
    assert row.split()[1:4] == [f"dupline.bpf.c:{HOT}", "(5", "locations)"]
    assert row.split()[-5:] == ["5", "5", "0", "5", "0"]
