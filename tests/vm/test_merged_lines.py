"""Lines the compiler merged away: tests/progs/merged.bpf.c on 6.1 and 6.12.

Each early ``return`` of ``merged`` has no instruction of its own (the return value
is set before the branch, the branch goes to the shared exit; see
``qstep.debugger.mergedlines``). Each packet below takes exactly one of those paths,
known from its bytes; a breakpoint or a probe on a return line must fire on exactly
the packets that take its path, never on others, and the CPU must then go where
the path goes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import RunRequest
from qstep.errors import UsageError
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.recorder.replay import Replay
from qstep.recorder.run import record_run
from qstep.recorder.why import why
from qstep.session import Session

pytestmark = pytest.mark.vm
SOURCE_PATH = "tests/progs/merged.bpf.c"
SOURCE = (REPO_ROOT / SOURCE_PATH).read_text().splitlines()
XDP_ABORTED, XDP_DROP, XDP_PASS = 0, 1, 2


def after(fragment: str, skip: int = 1) -> int:
    """The line ``skip`` lines below the first line containing ``fragment``."""
    return next(n for n, text in enumerate(SOURCE, start=1) if fragment in text) + skip


# The merged-away return lines, and what the function returns there.
RETURNS = {
    "not_ip": (after("bpf_htons(ETH_P_IP))"), XDP_PASS),
    "short_ip": (after("(void *)(ip + 1) > data_end"), XDP_DROP),
    "ttl": (after("ip->ttl <= 1"), XDP_DROP),
    "not_udp": (after("ip->protocol != IPPROTO_UDP"), XDP_PASS),
    "short_udp": (after("(void *)(udp + 1) > data_end"), XDP_DROP),
    "blocked": (after("udp->source == bpf_htons(666)", 2), XDP_DROP),
}


def frame(ethertype: int = 0x0800, ttl: int = 64, proto: int = 17, sport: int = 1234,
          dport: int = 80, length: int = 60) -> bytes:
    """Ethernet + IPv4 10.0.0.1 -> 10.0.0.2 + UDP ports, cut or padded to ``length``."""
    data = (bytes.fromhex("020000000001" "020000000002") + struct.pack(">H", ethertype)
            + bytes([0x45, 0, 0, 28, 0, 0, 0, 0, ttl, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
            + struct.pack(">HHHH", sport, dport, 8, 0))
    return (data + bytes(length))[:length]


# packet name -> (packet, the return it takes (None: goes on), retval)
PACKETS = {
    "arp": (frame(ethertype=0x0806), "not_ip", XDP_PASS),
    "short_ip": (frame(length=24), "short_ip", XDP_DROP),
    "ttl1": (frame(ttl=1), "ttl", XDP_DROP),
    "ttl0": (frame(ttl=0), "ttl", XDP_DROP),
    "tcp": (frame(proto=6), "not_udp", XDP_PASS),
    "short_udp": (frame(length=38), "short_udp", XDP_DROP),
    "blocked": (frame(sport=666), "blocked", XDP_DROP),
    "echo": (frame(dport=7), None, XDP_DROP),
    "udp": (frame(), None, XDP_PASS),
}


@pytest.fixture
def merged(guest: Session, bpf_obj: Callable[[str], Path]) -> Iterator[LoadedProgram]:
    prog = guest.load(BpfObject.open(bpf_obj(SOURCE_PATH)), "merged")
    yield prog
    guest.unload(prog)


@pytest.mark.parametrize("name", list(PACKETS))
def test_a_breakpoint_on_a_merged_return_stops_only_on_its_path(
        guest: Session, merged: LoadedProgram, name: str) -> None:
    packet, path, ret = PACKETS[name]
    with guest.debugger(merged, RunRequest(packet)) as dbg:
        commands = CommandSet(dbg)
        numbers = {}
        for which, (line, _) in RETURNS.items():
            out = commands.execute(f"break merged.bpf.c:{line}").text
            assert out.startswith(f"merged.bpf.c:{line} has no code of its own: the compiler "
                                  "merged it into "), out
            numbers[max(dbg.breakpoints)] = which
        stops = []
        event = dbg.run()
        while event.kind == "stopped":
            assert event.breakpoint is not None and event.site is not None
            which = numbers[event.breakpoint.number]
            loc = event.breakpoint.locations[(event.location or 1) - 1]
            assert loc.path is not None
            [edge] = loc.path.edges
            assert event.site == edge.site
            if edge.target.insn.is_exit:  # straight to the exit: the return value is set
                assert dbg.regs()[0] == RETURNS[which][1]
            stops.append(which)
            event = dbg.stepi()  # the CPU goes the path's way
            assert event.site is not None and event.site.index == edge.target.index
            event = dbg.cont()
        assert event.retval == ret
    assert stops == ([path] if path else [])
    table = commands.execute("info breakpoints").text.splitlines()
    assert all(re.search(r"\(on its path: insn \d+ when it (jumps|falls through) to insn "
                         r"\d+\)$", row) for row in table[1:]), table
    hits = {which: bp.hits for bp in dbg.breakpoints.values() for which in [numbers[bp.number]]}
    assert hits == {which: int(which == path) for which in RETURNS}


def run_probes(guest: Session, prog: LoadedProgram, specs: list[str],
               repeat: int, recording: str = "auto") -> Inspector:
    inspector = Inspector(guest, prog, parse_specs(specs), recording=recording)
    inspector.attach()
    try:
        retvals = inspector.run([p for p, _, _ in PACKETS.values()], repeat)
    finally:
        inspector.detach()
    assert retvals == [r for _, _, r in PACKETS.values()]
    return inspector


def test_inspect_on_merged_returns_counts_exactly_the_packets_on_each_path(
        guest: Session, merged: LoadedProgram) -> None:
    """Six specs: four in-guest probes, two at host breakpoints."""
    group = list(RETURNS)
    inspector = run_probes(guest, merged, [f"merged.bpf.c:{RETURNS[w][0]} print $r0"
                                           for w in group], repeat=2, recording="off")
    assert [p.mode for p in inspector.probes] == ["guest"] * 4 + ["host"] * 2
    for which, probe in zip(group, inspector.probes, strict=True):
        assert probe.mode != "guest" or probe.note.startswith(
            f"merged.bpf.c:{RETURNS[which][0]} has no code of its own")
        taking = [n for n, (_, path, _) in enumerate(PACKETS.values(), start=1) if path == which]
        hits = [h for h in inspector.hits if h.probe is probe]
        assert [h.run for h in hits] == [run for run in taking for _ in range(2)]
        if probe.site.insn.jump_target == len(merged.insns) - 1:  # a jump to the exit
            assert all(h.values == [RETURNS[which][1]] for h in hits)
        assert probe.counters.true == probe.counters.printed == 2 * len(taking)


def test_a_condition_of_ones_own_and_the_host_fallback_keep_the_path(
        guest: Session, merged: LoadedProgram) -> None:
    """Five specs: the fifth goes to the host, which checks the path there too."""
    ttl = RETURNS["ttl"][0]
    specs = [f"merged.bpf.c:{ttl} print $r0 if $r1 == 1"]  # r1: the ttl at the branch
    specs += [f"merged.bpf.c:{RETURNS[w][0]} print $r0" for w in
              ("not_ip", "short_ip", "not_udp", "blocked")]
    inspector = run_probes(guest, merged, specs, repeat=1, recording="off")
    assert [p.mode for p in inspector.probes] == ["guest"] * 4 + ["host"]
    by_probe = [[h.run for h in inspector.hits if h.probe is p] for p in inspector.probes]
    names = list(PACKETS)
    assert by_probe == [[names.index("ttl1") + 1], [names.index("arp") + 1],
                        [names.index("short_ip") + 1], [names.index("tcp") + 1],
                        [names.index("blocked") + 1]]


@pytest.mark.parametrize("name", ["ttl1", "udp"])
def test_until_a_merged_return_stops_only_on_its_path(guest: Session, merged: LoadedProgram,
                                                      name: str) -> None:
    packet, path, ret = PACKETS[name]
    line = RETURNS["ttl"][0]
    with guest.debugger(merged, RunRequest(packet)) as dbg:
        dbg.add_breakpoint("merged", temporary=True)
        assert dbg.run().kind == "stopped"
        event = dbg.advance(f"merged.bpf.c:{line}")
        if path == "ttl":
            assert event.reason == "location" and event.site is not None
            assert event.site.source is not None and event.site.source.line == line - 1
            event = dbg.cont()
        assert event.kind == "exited" and event.retval == ret


def test_a_recorded_run_stops_on_a_merged_return_only_on_its_path(
        vm: Session, bpf_obj: Callable[[str], Path]) -> None:
    """The recording's registers at the branch decide, forwards and backwards."""
    prog = vm.load(BpfObject.open(bpf_obj(SOURCE_PATH)), "merged")
    try:
        replays = {name: Replay(record_run(vm, prog, PACKETS[name][0])[1])
                   for name in ("ttl1", "udp")}
    finally:
        vm.unload(prog)
    for name, replay in replays.items():
        [(number, site)] = replay.add_breakpoint(f"merged.bpf.c:{RETURNS['ttl'][0]}")
        forward = replay.cont()
        if name == "ttl1":
            assert (forward.reason, forward.breakpoint) == ("breakpoint", number)
            assert replay.rec.steps[forward.pos].site == site
            assert replay.cont().reason == "end"
            assert replay.cont(reverse=True).breakpoint == number
        else:
            assert forward.reason == "end"
            assert replay.cont(reverse=True).reason == "start"
    question = f"mem($r10 - 4, 4) at merged.bpf.c:{RETURNS['ttl'][0]}"
    answer = why(replays["ttl1"].rec, question)
    assert answer.site.insn.is_jump and answer.site.source is not None
    assert answer.site.source.line == RETURNS["ttl"][0] - 1
    with pytest.raises(UsageError, match=f"merged.bpf.c:{RETURNS['ttl'][0]} was not reached"):
        why(replays["udp"].rec, question)


def eth(dest0: int) -> bytes:
    return bytes([dest0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 6]) + b"\x08\x00" + bytes(46)


@pytest.mark.parametrize(("dest0", "taken"), [(0x01, "drop"), (0x02, "pass")])
def test_either_operand_and_a_return_after_a_call(guest: Session,
                                                  bpf_obj: Callable[[str], Path],
                                                  dest0: int, taken: str) -> None:
    """``if (short || multicast) return XDP_DROP;``: two branches lead there; the last
    return follows the call of tally()."""
    prog = guest.load(BpfObject.open(bpf_obj(SOURCE_PATH)), "either")
    drop = after("(eth->h_dest[0] & 1)")
    passed = after("tally(eth->h_source[5] & 3);")
    try:
        with guest.debugger(prog, RunRequest(eth(dest0))) as dbg:
            lines = {dbg.add_breakpoint(f"merged.bpf.c:{n}").number: name
                     for n, name in ((drop, "drop"), (passed, "pass"))}
            stops = []
            event = dbg.run()
            while event.kind == "stopped":
                assert event.breakpoint is not None
                stops.append(lines[event.breakpoint.number])
                event = dbg.cont()
        assert stops == [taken] and event.retval == {"drop": 1, "pass": 2}[taken]
    finally:
        guest.unload(prog)


def ipv4(saddr: bytes, length: int = 60, ethertype: str = "0800") -> bytes:
    data = (bytes.fromhex("020000000001" "020000000002" + ethertype)
            + bytes([0x45, 0, 0, 20, 0, 0, 0, 0, 33, 17, 0, 0]) + saddr + bytes([10, 0, 0, 2]))
    return (data + bytes(length))[:length]


# tc: packet -> (the return it takes: short, blocked or ok; retval)
# (the kernel refuses a test run of an IPv4 packet shorter than its header: the short
# one is a local experimental ethertype, which the program does not check)
TC_PACKETS = {"short": (ipv4(bytes([10, 0, 0, 1]), 30, "88b5"), "short", 2),
              "blocked": (ipv4(bytes([10, 0, 0, 99])), "blocked", 2),
              "ok": (ipv4(bytes([10, 0, 0, 1])), "ok", 0)}


def test_tc_act_shot_returns_break_and_count_only_on_their_paths(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    prog = guest.load(BpfObject.open(bpf_obj(SOURCE_PATH)), "shot")
    short = [n for n, t in enumerate(SOURCE, start=1) if "(void *)(ip + 1) > data_end" in t]
    lines = {"short": short[-1] + 1, "blocked": after("10.0.0.99 is blocked"),
             "ok": after("skb->mark = ip->ttl;")}
    try:
        for name, (packet, path, ret) in TC_PACKETS.items():
            with guest.debugger(prog, RunRequest(packet)) as dbg:
                numbers = {dbg.add_breakpoint(f"merged.bpf.c:{n}").number: which
                           for which, n in lines.items()}
                stops, event = [], dbg.run()
                while event.kind == "stopped":
                    assert event.breakpoint is not None
                    stops.append(numbers[event.breakpoint.number])
                    event = dbg.cont()
            assert (stops, event.retval) == ([path], ret), name
        inspector = Inspector(guest, prog, parse_specs(
            [f"merged.bpf.c:{n} print $r0" for n in lines.values()]))
        inspector.attach()
        try:
            retvals = inspector.run([p for p, _, _ in TC_PACKETS.values()], 2)
        finally:
            inspector.detach()
    finally:
        guest.unload(prog)
    assert retvals == [r for _, _, r in TC_PACKETS.values()]
    assert [p.counters.printed for p in inspector.probes] == [2, 2, 2]
    assert [[h.run for h in inspector.hits if h.probe is p] for p in inspector.probes] == [
        [1, 1], [2, 2], [3, 3]]
