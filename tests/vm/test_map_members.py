"""Members of map values in ``print`` (``stats[1].packets``, ``vip_map[{...}].vip_num``,
``stats[key].dropped`` with a C variable as index), while stopped (guest memory) and
after the program exited (the agent), on the l4lb example and tests/progs/merged.bpf.c.
Values are what the packets imply (the example's maps and one counted packet)."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import load_program

from qstep.bpf.elf import BpfObject
from qstep.commands.inspect import c_scope
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import RunRequest
from qstep.debugger.source import SourceView
from qstep.errors import UsageError
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.probe.inspector import Inspector
from qstep.probe.records import MapValue
from qstep.probe.spec import parse_specs
from qstep.session import Session
from qstep.userinput import read_packet

pytestmark = pytest.mark.vm
EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PACKET = read_packet(str(EXAMPLE / "packets" / "ipv4_to_v4real.hex"))  # 72 bytes to VIP 1
VIP = "{addr: {v4: 10.0.0.10}, port: 80, proto: 6}"
AT_STOP = {  # at l4lb.bpf.c:178, after the stats update of VIP 1
    "print stats[1].packets": "1", "print stats[1].bytes": "72",
    "print stats[vip_num].bytes": "72", "print/x stats[vip_num].bytes": "0x48",
    f"print vip_map[{VIP}].vip_num": "1", "print reals[2].dstv6": "2001:db8:ff::2",
    "print reals[1].dst": "172.16.0.1", "print reals[3].ctl_pos": "7",
    "print ctl_array[0].mac": "02:00:00:00:0a:01", "print reals[2].dstv6[3]": "33554432",
}
BAD = {  # one line, naming the expression and the column
    "print stats[1].nope": "stats[1].nope: struct lb_stats has no member 'nope' (members: "
                           "packets, bytes) (column 9)",
    "print stats[1].packets[2]": "stats[1].packets[2]: cannot index a __u64 (not a pointer) "
                                 "(column 17)",
    "print vip_map[{addr: {v4: 10.9.9.9}, port: 80, proto: 6}].vip_num":
        "vip_map[{addr: {v4: 10.9.9.9}, port: 80, proto: 6}].vip_num: vip_map has no "
        "element {addr: {v4: 10.9.9.9}, port: 80, proto: 6}",
    "print vip_map[{addr: {v4: 10.0.0.10}, nope: 1}].vip_num":
        "vip_map[{addr: {v4: 10.0.0.10}, nope: 1}]: key: unknown field 'nope' (fields: addr, "
        "port, proto, pad)",
}


@pytest.fixture
def l4lb(vm: Session, l4lb_obj: Path) -> Iterator[tuple[LoadedProgram, BpfObject]]:
    prog = load_program(vm, l4lb_obj, "l4lb_ingress", example_maps=True)
    yield prog, BpfObject.open(l4lb_obj)
    vm.unload(prog)


def text(commands: CommandSet, command: str) -> str:
    return commands.execute(command).text


def test_members_of_map_values_while_stopped_and_after_the_exit(
        vm: Session, l4lb: tuple[LoadedProgram, BpfObject]) -> None:
    prog, obj = l4lb
    with vm.debugger(prog, RunRequest(PACKET)) as dbg:
        commands = CommandSet(dbg, SourceView(obj, dbg))
        assert text(commands, "print stats[1].packets") == "0"  # before run
        commands.execute("break l4lb.bpf.c:178")
        assert commands.execute("run").data["where"]["line"] == 178
        assert {c: text(commands, c) for c in AT_STOP} == AT_STOP
        for command, message in BAD.items():
            with pytest.raises(UsageError) as err:
                commands.execute(command)
            assert str(err.value) == message
        typed = {"print stats[1].packets + 1": "2", "print stats[vip_num].bytes * 2": "144",
                 "display stats[vip_num].bytes": "1: stats[vip_num].bytes = 72"}
        assert {c: text(commands, c) for c in typed} == typed
        assert commands.execute("continue").data["retval"] == 7
        after = {c: text(commands, c) for c in AT_STOP if "vip_num]" not in c}
        assert after == {c: v for c, v in AT_STOP.items() if "vip_num]" not in c}
        assert text(commands, "print stats[1]") == "{packets: 1, bytes: 72}"
        with pytest.raises(UsageError, match=re.escape(
                'stats[vip_num]: No symbol "vip_num" in current context (column 7)')):
            commands.execute("print stats[vip_num].bytes")  # no frame after the exit


MERGED = "tests/progs/merged.bpf.c"


def udp(sport: int, dport: int) -> bytes:
    data = (bytes.fromhex("020000000001" "020000000002" "0800")
            + bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
            + struct.pack(">HHHH", sport, dport, 8, 0))
    return data + bytes(60 - len(data))


def test_a_c_variable_as_index_and_counters_over_runs(
        vm: Session, bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj(MERGED))
    prog = vm.load(obj, "merged")
    source = (REPO_ROOT / MERGED).read_text().splitlines()
    check = next(n for n, t in enumerate(source, start=1) if "bpf_htons(666)" in t)
    try:
        with vm.debugger(prog, RunRequest(udp(666, 81))) as dbg:  # key 81 & 3 = 1: dropped
            commands = CommandSet(dbg, SourceView(obj, dbg))
            commands.execute(f"break merged.bpf.c:{check}")
            commands.execute("run")
            assert text(commands, "print key") == "1"
            assert text(commands, "print stats[key].packets") == "1"  # counted just before
            assert text(commands, "print stats[key].dropped") == "0"
            assert commands.execute("continue").data["retval"] == 1  # XDP_DROP
            assert text(commands, "print stats[1].dropped") == "1"
        with vm.debugger(prog, RunRequest(udp(1234, 81))) as dbg:  # the same slot: passed
            commands = CommandSet(dbg, SourceView(obj, dbg))
            assert commands.execute("run").data["retval"] == 2  # XDP_PASS
            assert [text(commands, f"print stats[1].{m}") for m in ("packets", "dropped",
                                                                   "passed")] == ["2", "1", "1"]
            assert text(commands, "print stats[0]") == "{packets: 0, dropped: 0, passed: 0}"
    finally:
        vm.unload(prog)


def test_inspect_prints_and_tests_members_of_map_values(
        vm: Session, l4lb: tuple[LoadedProgram, BpfObject]) -> None:
    """Compiled into the in-guest probe: the probe's own lookup, the member read at its
    DWARF offset; C variables as keys. Two packets to VIP 1: the counters go 1, 2."""
    prog, obj = l4lb
    specs = parse_specs([
        "l4lb.bpf.c:178 print stats[vip_num].packets, stats[vip_num].bytes, reals[2].ctl_pos, "
        "stats[vip_num], ctl_array[0].ifindex",
        "l4lb.bpf.c:178 if stats[vip_num].packets == 2 && reals[1].ctl_pos == 0 "
        "print stats[1].bytes"])
    inspector = Inspector(vm, prog, specs, c_scope(obj, prog))
    inspector.attach()
    try:
        assert inspector.run([PACKET, PACKET], 1) == [7, 7]
    finally:
        inspector.detach()
    first, second = inspector.probes
    assert (first.mode, second.mode) == ("guest", "guest")
    rows = [(h.probe.number, h.values[:3], h.values[4:]) for h in inspector.hits]
    assert rows == [(1, [1, 72, 1], [2]), (1, [2, 144, 1], [2]), (2, [144], [])]
    assert [h.values[3] for h in inspector.hits if h.probe is first] == [
        MapValue("stats", True, (struct.pack("<QQ", n, 72 * n),), False) for n in (1, 2)]
    assert second.counters.as_dict() == {"reached": 2, "condition_true": 1, "skipped": 0,
                                         "printed": 1, "dropped": 0}
    with pytest.raises(UsageError, match=r"^inspect: spec 1: stats\[1\]\.nope: struct "
                                         r"lb_stats has no member 'nope' \(column 30\)$"):
        Inspector(vm, prog, parse_specs(["l4lb.bpf.c:178 print stats[1].nope"]),
                  c_scope(obj, prog))


def test_a_c_object_as_a_hash_key(vm: Session, l4lb: tuple[LoadedProgram, BpfObject]) -> None:
    """At process_packet's entry pkt points to the parsed packet: pkt->vip is exactly
    a vip_map key."""
    prog, obj = l4lb
    with vm.debugger(prog, RunRequest(PACKET)) as dbg:
        commands = CommandSet(dbg, SourceView(obj, dbg))
        commands.execute("break process_packet")
        commands.execute("run")
        shown = {c: text(commands, c) for c in (
            "print vip_map[pkt->vip]", "print vip_map[pkt->vip].vip_num * 10")}
        assert shown == {"print vip_map[pkt->vip]": "{flags: 0, vip_num: 1}",
                         "print vip_map[pkt->vip].vip_num * 10": "10"}
        for command, message in {
                "print vip_map[pkt->src]": "vip_map[pkt->src]: the key is __be32[4] (16 "
                                           "bytes); vip_map has 20-byte keys",
                "print stats[pkt].packets": "stats[pkt]: the key is a pointer (struct "
                                            "pkt_desc *); use the object it points to"}.items():
            with pytest.raises(UsageError) as err:
                commands.execute(command)
            assert str(err.value) == message
