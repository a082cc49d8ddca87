"""A program whose unreachable subprograms the verifier drops (tests/progs/deadsub.bpf.c).

With ``enable_ipv6`` false (frozen .rodata) the five IPv6 subprograms are never
called, and a privileged load removes them: the kernel JITs 8 of the 13
functions of the object's func_info. Independent truths: the kernel's own
func_info of the loaded program (names, through ``info_id``), packet bytes
computed here from the documented balancing rule, and the IPv4 checksum.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.errors import UsageError
from qstep.listing import build_listing, format_listing
from qstep.loaded import LoadedProgram
from qstep.loadopts import LoadOptions
from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.session import Session

pytestmark = pytest.mark.vm

LIVE = ["lb_main", "parse_eth", "flow_hash", "count_hit", "balance_ipv4", "parse_ipv4",
        "rewrite_ipv4", "ipv4_csum"]
DEAD = ["balance_ipv6", "count_v6", "parse_ipv6", "is_vip6", "rewrite_ipv6"]
XDP_PASS, XDP_TX = 2, 3
KERNELS = ["vm", "vm612"]


def eth(proto: int) -> bytes:
    return bytes.fromhex("020000000002" "020000000001") + struct.pack(">H", proto)


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 8192, 0, 0)


def ipv4_packet(src: str, dst: str, sport: int, dport: int = 80) -> bytes:
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return eth(0x0800) + header + tcp(sport, dport)


def ipv6_packet(src: str, dst: str, sport: int, dport: int = 80) -> bytes:
    header = struct.pack(">IHBB16s16s", 6 << 28, 20, 6, 64, ipaddress.IPv6Address(src).packed,
                         ipaddress.IPv6Address(dst).packed)
    return eth(0x86DD) + header + tcp(sport, dport)


def backend_index(saddr: bytes, sport: int, dport: int) -> int:
    """The documented rule on the values as the program loads them (little endian)."""
    words = (int.from_bytes(saddr, "little"), int.from_bytes(struct.pack(">H", sport), "little"),
             int.from_bytes(struct.pack(">H", dport), "little"))
    return (words[0] ^ words[1] ^ words[2]) & 3


def checksum_ok(header: bytes) -> bool:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


# Two flows that go to different backends (checked in the tests themselves).
FLOWS = [("192.168.7.1", 1000), ("193.168.7.1", 1000)]


def flow_packet(n: int) -> tuple[bytes, int]:
    src, sport = FLOWS[n]
    return (ipv4_packet(src, "10.0.0.1", sport),
            backend_index(ipaddress.IPv4Address(src).packed, sport, 80))


@pytest.fixture(params=KERNELS)
def guest(request: pytest.FixtureRequest) -> Session:
    session: Session = request.getfixturevalue(request.param)
    return session


@pytest.fixture
def deadsub_obj(bpf_obj: Callable[[str], Path]) -> BpfObject:
    return BpfObject.open(bpf_obj("tests/progs/deadsub.bpf.c"))


@pytest.fixture
def lb(guest: Session, deadsub_obj: BpfObject) -> Iterator[LoadedProgram]:
    prog = guest.load(deadsub_obj, "lb_main")
    yield prog
    guest.unload(prog)


def test_the_kernel_keeps_the_reachable_functions_only(guest: Session,
                                                       lb: LoadedProgram) -> None:
    assert [f.name for f in lb.functions] == LIVE
    assert sorted(f.name for f in lb.removed_functions) == sorted(DEAD)
    # The kernel's own func_info of the same program names the same functions,
    # at the same addresses.
    kernel = guest.load_foreign(lb.prog_id)
    assert [(f.name, f.addr, f.length) for f in kernel.functions] == [
        (f.name, f.addr, f.length) for f in lb.functions]
    for func in lb.functions:
        assert lb.sites[func.start_insn].jit_start == func.addr
    for func in lb.removed_functions:
        sites = [s for s in lb.sites.values() if func.start_insn <= s.index < func.end_insn]
        assert sites and all(s.removed and s.function is func for s in sites)
    live = [s for s in lb.sites.values() if not s.function.removed]
    assert all(s.exact for s in live if not s.removed)
    text = format_listing(build_listing(lb))
    for func in lb.removed_functions:
        assert (f"{func.name}:  insns {func.start_insn}..{func.end_insn - 1}, removed by the "
                "verifier (unreachable), no JIT code") in text


def test_with_ipv6_enabled_every_function_is_live(guest: Session,
                                                  deadsub_obj: BpfObject) -> None:
    prog = guest.load(deadsub_obj, "lb_main", LoadOptions(sets=("enable_ipv6=true",)))
    try:
        assert sorted(f.name for f in prog.functions) == sorted(LIVE + DEAD)
        assert prog.removed_functions == []
        packet = ipv6_packet("2001:db8::99", "2001:db8::1", 4321)
        idx = backend_index(ipaddress.IPv6Address("2001:db8::99").packed[12:], 4321, 80)
        result = guest.test_run(prog, packet)
        assert result.retval == XDP_TX
        out = result.data_out
        assert out[14 + 7] == 63  # hop limit
        assert ipaddress.IPv6Address(out[14 + 24:14 + 40]) == ipaddress.IPv6Address(
            f"2001:db8:1::{idx + 1}")
    finally:
        guest.unload(prog)


def test_run_balances_ipv4_and_passes_ipv6(guest: Session, lb: LoadedProgram) -> None:
    seen = []
    for n in range(len(FLOWS)):
        packet, idx = flow_packet(n)
        seen.append(idx)
        result = guest.test_run(lb, packet)
        assert result.retval == XDP_TX
        header = result.data_out[14:34]
        assert header[16:20] == bytes([10, 1, 0, idx + 1])
        assert checksum_ok(header)
        assert result.data_out[34:] == packet[34:]
    assert len(set(seen)) == len(FLOWS)  # the flows really reach different backends
    hits = {int.from_bytes(k, "little"): int.from_bytes(v, "little")
            for k, v in guest.dump_map(lb, "hits")}
    assert hits == {i: seen.count(i) for i in range(4)}
    six = ipv6_packet("2001:db8::99", "2001:db8::1", 4321)
    result = guest.test_run(lb, six)
    assert result.retval == XDP_PASS and result.data_out == six
    assert guest.dump_map(lb, ".bss") == [(bytes(4), bytes(8))]  # v6_seen stays 0


def test_trace_walks_the_live_functions(guest: Session, lb: LoadedProgram) -> None:
    packet, _ = flow_packet(0)
    with guest.debugger(lb, RunRequest(packet)) as dbg:
        items = list(trace_run(dbg))
    records = [i for i in items if isinstance(i, TraceRecord)]
    order = [records[0].site.function.name]
    for rec in records[1:]:
        if rec.site.function.name != order[-1]:
            order.append(rec.site.function.name)
    assert order == ["lb_main", "parse_eth", "lb_main", "balance_ipv4", "parse_ipv4",
                     "balance_ipv4", "flow_hash", "balance_ipv4", "rewrite_ipv4", "ipv4_csum",
                     "rewrite_ipv4", "balance_ipv4", "count_hit", "balance_ipv4", "lb_main"]
    assert records[-1].retval == XDP_TX
    assert not any(r.site.removed for r in records)


def test_debug_stops_in_a_live_subprogram_and_explains_a_dead_one(
        guest: Session, lb: LoadedProgram) -> None:
    packet, idx = flow_packet(1)
    with guest.debugger(lb, RunRequest(packet)) as dbg:
        with pytest.raises(UsageError, match="'parse_ipv6' was removed by the verifier"):
            dbg.add_breakpoint("parse_ipv6")
        dbg.add_breakpoint("rewrite_ipv4")
        event = dbg.run()
        assert event.reason == "breakpoint" and event.site is not None
        assert event.site.function.name == "rewrite_ipv4"
        assert dbg.regs().values[2] == idx  # the second argument
        assert [f.function.name for f in dbg.frames()] == [
            "rewrite_ipv4", "balance_ipv4", "lb_main"]
        event = dbg.finish()
        assert event.site is not None and event.site.function.name == "balance_ipv4"
        assert dbg.cont().retval == XDP_TX


def test_inspect_a_live_subprogram(guest: Session, lb: LoadedProgram) -> None:
    packets, indexes = zip(*(flow_packet(n) for n in range(len(FLOWS))), strict=True)
    inspector = Inspector(guest, lb, parse_specs([f"rewrite_ipv4 print $r2 if $r2 == "
                                                  f"{indexes[1]}"]))
    inspector.attach()
    try:
        retvals = inspector.run(list(packets), 1)
    finally:
        inspector.detach()
    assert retvals == [XDP_TX, XDP_TX]
    assert [(h.run, h.values) for h in inspector.hits] == [(2, [indexes[1]])]
    counters = inspector.probes[0].counters
    assert (counters.reached, counters.true, counters.printed) == (2, 1, 1)


LONG = "lb_ipv4_only_entry_point"


def test_programs_are_found_by_their_full_name(guest: Session, deadsub_obj: BpfObject) -> None:
    ours = guest.load(deadsub_obj, LONG)
    guest.put_file("/tmp/deadsub.o", deadsub_obj.data)
    status, output = guest.guest_command(
        f"/bin/qstep-agent --load-pin /tmp/deadsub.o {LONG} /sys/fs/bpf/qstep_long")
    assert status == 0, output
    theirs = int(output.split("prog_id")[1].split()[0])
    try:
        assert (ours.name, ours.kernel_name) == (LONG, LONG[:15])
        with pytest.raises(UsageError, match=rf"several programs named {LONG}: ids "
                                             rf"{ours.prog_id}, {theirs}"):
            guest.find("name", LONG)
        guest.unload(ours)
        found = guest.find("name", LONG)
        assert (found.prog_id, found.name) == (theirs, LONG[:15])
        assert guest.find_program("name", LONG[:15]) == theirs
        assert guest.entry_name(theirs) == LONG == guest.load_foreign(theirs).name
        with pytest.raises(UsageError, match=f"no program's function is called {LONG}x"):
            guest.find("name", LONG + "x")
    finally:
        guest.guest_command("rm -f /sys/fs/bpf/qstep_long")
