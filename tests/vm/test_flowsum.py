"""tests/progs/flowsum.bpf.c on 6.1 and 6.12: a struct filled through a pointer by a
bpf-to-bpf call, a switch lowered to a jump chain, a bpf_loop callback.

Values known by construction: the frame's fields, the switch's classes, the
payload checksum sum((i + 1) * payload[i]) and the bpf_loop indexes 0..7.
Each part goes through disasm (listing), run, trace (recorded and stepped, which
must agree), debug and inspect.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import Debugger, Event, RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.listing import build_listing, format_listing
from qstep.loaded import LoadedProgram
from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.recorder.run import record_run
from qstep.recorder.trace import trace_records
from qstep.session import Session

pytestmark = pytest.mark.vm
SOURCE_PATH = "tests/progs/flowsum.bpf.c"
XDP_DROP, XDP_PASS, XDP_TX = 1, 2, 3
CLASSES = {22: 1, 53: 2, 80: 3, 443: 4, 8080: 5}


def frame(dport: int, payload: bytes, proto: int = 6) -> bytes:
    """eth + IPv4 10.1.2.3 -> 10.9.9.9 + TCP (20 bytes) or UDP (8) 1234 -> dport + payload."""
    l4 = struct.pack(">HH", 1234, dport) + bytes(16 if proto == 6 else 4)
    ip = bytes([0x45, 0, 0, 20 + len(l4) + len(payload), 0, 0, 0, 0, 64, proto, 0, 0,
                10, 1, 2, 3, 10, 9, 9, 9])
    return bytes.fromhex("020000000001" "020000000002" "0800") + ip + l4 + payload


PAYLOAD = bytes(range(1, 9))
PACKETS = {"http": frame(80, PAYLOAD), "ssh": frame(22, PAYLOAD),
           "dns": frame(53, bytes([3, 0, 0, 0, 0, 0, 0, 0]), proto=17),
           "other": frame(9999, PAYLOAD)}


def checksum(packet: bytes) -> int:
    off = 14 + 20 + (20 if packet[23] == 6 else 8)
    return sum((i + 1) * b for i, b in enumerate(packet[off:off + 8]))


def dport(packet: bytes) -> int:
    return int.from_bytes(packet[36:38], "big")


def klass(packet: bytes) -> int:
    return CLASSES.get(dport(packet), 0)


def verdict(packet: bytes) -> int:
    if klass(packet) == 1:
        return XDP_DROP
    return XDP_TX if checksum(packet) & 1 else XDP_PASS


def flow_bytes(packet: bytes) -> bytes:
    """struct flow as parse_flow fills it."""
    off = 14 + 20 + (20 if packet[23] == 6 else 8)
    return (packet[26:34] + struct.pack("<HHB3xI", 1234, dport(packet), packet[23], off))


@pytest.fixture
def flowsum(guest: Session, bpf_obj: Callable[[str], Path]) -> Iterator[LoadedProgram]:
    prog = guest.load(BpfObject.open(bpf_obj(SOURCE_PATH)), "flowsum_main")
    yield prog
    guest.unload(prog)


def entry(prog: LoadedProgram, name: str) -> int:
    func = prog.function_named(name)
    assert func is not None, f"{name} has no JIT code"
    return func.start_insn


def test_disasm_shows_the_calls_and_the_callback(flowsum: LoadedProgram) -> None:
    listing = format_listing(build_listing(flowsum))
    names = [f.name for f in flowsum.functions]
    assert names[0] == "flowsum_main" and set(names) == {"flowsum_main", "parse_flow",
                                                          "class_of", "sum_byte"}
    for func in flowsum.functions:
        site = flowsum.sites[func.start_insn]
        assert site.exact and site.jit_start == func.addr
    assert listing.count("call bpf_loop#181") == 1
    called = {s.insn.call_target for s in flowsum.sites.values() if s.insn.is_pseudo_call}
    assert called == {entry(flowsum, "parse_flow"), entry(flowsum, "class_of")}
    # the switch: five compares against the case values, all in class_of
    cls = flowsum.function_named("class_of")
    assert cls is not None
    compares = [s.insn.imm for i, s in flowsum.sites.items()
                if cls.start_insn <= i < cls.end_insn and s.insn.jump_target is not None
                and s.insn.op == 0x10]  # JEQ
    assert sorted(compares) == sorted(CLASSES)


def test_run_results_and_maps(guest: Session, flowsum: LoadedProgram) -> None:
    for name, packet in PACKETS.items():
        assert guest.test_run(flowsum, packet).retval == verdict(packet), name
        [(_, value)] = guest.dump_map(flowsum, "last")
        assert value == flow_bytes(packet) + struct.pack("<II", klass(packet), checksum(packet))
    counts = {int.from_bytes(k, "little"): int.from_bytes(v, "little")
              for k, v in guest.dump_map(flowsum, "per_class")}
    assert counts == {0: 1, 1: 1, 2: 1, 3: 1, 4: 0, 5: 0}


def test_trace_recorded_and_stepped_agree(guest: Session, flowsum: LoadedProgram) -> None:
    packet = PACKETS["http"]
    result, rec = record_run(guest, flowsum, packet)
    recorded = list(trace_records(rec))
    with guest.debugger(flowsum, RunRequest(packet)) as dbg:
        items = list(trace_run(dbg))
    stepped = [i for i in items if isinstance(i, TraceRecord)]
    assert isinstance(items[-1], Event) and items[-1].retval == result.retval == XDP_PASS
    assert [r.as_json() for r in recorded] == [r.as_json() for r in stepped]
    # after sum_byte's first instruction (r0 = 1): its index in r1, 0..7 in order, and
    # r3-r9 undefined (the callback has two parameters; r6-r9 are the kernel's)
    start = entry(flowsum, "sum_byte")
    at_entry = [r.as_json()["regs"] for r in stepped if r.site.index == start]
    assert [(regs["r0"], regs["r1"], sorted(regs)) for regs in at_entry] == [
        (1, k, ["r0", "r1", "r10", "r2"]) for k in range(8)]
    assert {regs["r2"] for regs in at_entry} == {"fp-0x38"}  # &sc in the caller's frame


def test_debug_struct_by_pointer_switch_and_callback(guest: Session,
                                                     flowsum: LoadedProgram) -> None:
    packet = PACKETS["http"]
    with guest.debugger(flowsum, RunRequest(packet)) as dbg:
        dbg.add_breakpoint("parse_flow", temporary=True)
        assert dbg.run().site == flowsum.sites[entry(flowsum, "parse_flow")]
        flow_ptr = dbg.regs()[2]
        assert dbg.read_memory(flow_ptr, 20) == bytes(20)  # zeroed by the caller
        finished = dbg.finish()
        assert finished.site is not None and finished.site.function.name == "flowsum_main"
        assert dbg.regs()[0] == 0 and dbg.read_memory(flow_ptr, 20) == flow_bytes(packet)
        dbg.add_breakpoint("class_of", temporary=True)
        assert dbg.cont().site == flowsum.sites[entry(flowsum, "class_of")]
        assert dbg.regs()[1] == flow_ptr  # the same struct, by pointer
        dbg.finish()
        assert dbg.regs()[0] == klass(packet) == 3
        bp = dbg.add_breakpoint("sum_byte")
        sums, retval = run_stops_from_here(dbg)
        assert bp.hits == 8
    assert retval == XDP_PASS
    # at each call: (index, the partial sum in the context struct the callback gets)
    partial = [sum((i + 1) * b for i, b in enumerate(PAYLOAD[:k])) for k in range(8)]
    assert sums == [(k, partial[k]) for k in range(8)]


def run_stops_from_here(dbg: Debugger) -> tuple[list[tuple[int, int]], int]:
    """Continue to the end; (index r1, sum_ctx.sum at r2 + 16) at each stop."""
    seen = []
    event = dbg.cont()
    while event.kind == "stopped":
        regs = dbg.regs()
        seen.append((regs[1], int.from_bytes(dbg.read_memory(regs[2] + 16, 4), "little")))
        event = dbg.cont()
    assert event.retval is not None
    return seen, event.retval


def test_inspect_callback_and_switch(guest: Session, flowsum: LoadedProgram) -> None:
    packets = [PACKETS["http"], PACKETS["ssh"], PACKETS["other"]]
    inspector = Inspector(guest, flowsum, parse_specs([
        "sum_byte print $r1, mem($r2 + 16, 4) if $r1 >= 6",
        "class_of print mem($r1 + 10, 2)"]))
    assert [p.mode for p in inspector.probes] == ["guest", "guest"]
    inspector.attach()
    try:
        assert inspector.run(packets, 1) == [verdict(p) for p in packets]
    finally:
        inspector.detach()
    callback = [(h.run, h.values) for h in inspector.hits if h.probe.number == 1]
    expected = []
    for run, packet in enumerate(packets, start=1):
        off = 14 + 20 + 20
        data = packet[off:off + 8]
        for k in (6, 7):
            expected.append((run, [k, sum((i + 1) * b for i, b in enumerate(data[:k]))]))
    assert callback == expected
    ports = [(h.run, h.values) for h in inspector.hits if h.probe.number == 2]
    assert ports == [(run, [dport(p)]) for run, p in enumerate(packets, start=1)]
    assert inspector.probes[0].counters.as_dict() == {
        "reached": 24, "condition_true": 6, "skipped": 0, "printed": 6, "dropped": 0}
