"""``inspect`` from recordings gives what the in-guest probes give, exactly.

On the example and on flowsum (tests/progs: a bpf_loop callback, a struct filled
through a pointer, bpf_map_update_elem of a struct, a per-class counter).

The same specs run as in-guest hardware-breakpoint probes (at most 4 locations) and
from a recording of each run (``--from-recording``; and, past 4 locations, the
automatic choice), over many packets: every hit (probe, hit number, run, location,
printed values, failed items) and every counter must be equal. The specs read
registers, packet bytes, stack slots, C variables and map values (``stats`` as the
program's own atomic adds change it, looked up and printed whole).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_flowsum import PACKETS as FLOWSUM_PACKETS

from qstep.bpf.elf import BpfObject
from qstep.commands.inspect import c_scope
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PACKETS = [read_packet(str(EXAMPLE / "packets" / f"{name}.hex")) for name in (
    "ipv4_to_v4real", "ipv6_to_v6real", "ipv4_udp_to_v6real", "ctl_lookup_fail",
    "ipv4_novip", "ipv4_vip_wrong_proto", "ipv6_to_v6real", "ipv4_to_v4real")]
SPECS = [
    "process_packet:10 print mem($r8, 16), $r9 if $r9 == 1",
    "l4lb.bpf.c:172 print stats, vip_num, stats[1], *st if st != 0",
    "l4lb.bpf.c:166 skip 1 print ctl_pos, tkey.tunnel_id, tkey.remote_ipv4, ctl_array[0]",
    "l4lb.bpf.c:181 print drops, stats[1], stats[2], ctl_pos, tkey.tunnel_ttl",
]
MORE = [
    "process_packet print $r3, stats[1] if $r3 == 1",
    "l4lb.bpf.c:148 print slot, vip_num",
]
REPEAT = 3
# make test: the example both ways on 6.1 and 6.12, the rest on one kernel each;
# make test-recorded (QSTEP_TEST_RECORDED_ALL=1): everything on both.
BOTH = ("6.1", "6.12")
ALL = bool(os.environ.get("QSTEP_TEST_RECORDED_ALL"))


def kernels(default: str) -> tuple[str, ...]:
    return BOTH if ALL else (default,)


@pytest.fixture
def l4lb(request: pytest.FixtureRequest, guests: Callable[[str], Session],
         l4lb_obj: Path) -> Iterator[tuple[Session, LoadedProgram, BpfObject]]:
    guest = guests(request.param)
    obj = BpfObject.open(l4lb_obj)
    prog = guest.load(obj, "l4lb_ingress")
    for entry in read_map_file(EXAMPLE / "maps.txt"):
        key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
        guest.update_map(prog, entry.map_name, key, value)
    yield guest, prog, obj
    guest.unload(prog)


def run(vm: Session, prog: LoadedProgram, obj: BpfObject, specs: list[str],
        recording: str, packets: list[bytes] = PACKETS, repeat: int = REPEAT,
        zeroed: tuple[str, ...] = ("stats", "drops")) -> Inspector:
    """Fresh counters in the program's maps for each way (``zeroed``)."""
    for name in zeroed:
        info = prog.maps[name]
        for i in range(info.max_entries):
            vm.update_map(prog, name, i.to_bytes(4, "little"), bytes(info.value_size))
    inspector = Inspector(vm, prog, parse_specs(specs), c_scope(obj, prog),
                          recording=recording)
    inspector.attach()
    try:
        inspector.run(packets, repeat)
    finally:
        inspector.detach()
    return inspector


def hits(ins: Inspector, numbers: range) -> list[tuple[object, ...]]:
    return sorted((h.probe.number, h.run, h.hit, h.site.index, repr(h.values),
                   sorted(h.failed), sorted(h.unrecorded)) for h in ins.hits
                  if h.probe.number in numbers)


def counters(ins: Inspector, numbers: range) -> list[dict[str, int]]:
    return [p.counters.as_dict() for p in ins.probes if p.number in numbers]


@pytest.mark.parametrize("l4lb", BOTH, indirect=True)
def test_recorded_specs_equal_in_guest_probes(
        l4lb: tuple[Session, LoadedProgram, BpfObject]) -> None:
    vm, prog, obj = l4lb
    guest = run(vm, prog, obj, SPECS, "off")
    recorded = run(vm, prog, obj, SPECS, "all")
    assert [p.attached for p in guest.probes] == ["hw_breakpoint"] * 4
    assert [p.attached for p in recorded.probes] == ["recording"] * 4
    everything = range(1, 5)
    assert hits(recorded, everything) == hits(guest, everything)
    assert counters(recorded, everything) == counters(guest, everything)
    assert [p.undecided for p in recorded.probes] == [0] * 4
    # Not vacuous: every spec printed, map values changed along the runs.
    assert [c["printed"] for c in counters(guest, everything)] == [6, 15, 17, 15]


@pytest.mark.parametrize("l4lb", kernels("6.1"), indirect=True)
def test_past_the_debug_registers_every_spec_comes_from_the_recording(
        l4lb: tuple[Session, LoadedProgram, BpfObject]) -> None:
    vm, prog, obj = l4lb
    mixed = run(vm, prog, obj, SPECS + MORE, "auto", PACKETS[:4], 2)
    alone = run(vm, prog, obj, MORE, "off", PACKETS[:4], 2)
    assert [p.attached for p in mixed.probes] == ["recording"] * 6
    assert "every spec is evaluated from a recording" in mixed.probes[4].note
    shifted = [(int(str(h[0])) - 4, *h[1:]) for h in hits(mixed, range(5, 7))]
    assert shifted == hits(alone, range(1, 3))
    assert counters(mixed, range(5, 7)) == counters(alone, range(1, 3))


FLOWSUM_SPECS = [
    "flowsum.bpf.c:118 print index, s->sum, *p if index < 8",
    "class_of print f->dport, f->proto, f->saddr, per_class",
    "flowsum.bpf.c:138 print last[0], res.sum, res.class, zero",
    "flowsum.bpf.c:140 skip 2 print per_class[3], per_class[1], *count if count != 0",
]


@pytest.mark.parametrize("kernel", kernels("6.12"))
def test_flowsum_recorded_equals_in_guest(guests: Callable[[str], Session], kernel: str,
                                          bpf_obj: Callable[[str], Path]) -> None:
    guest = guests(kernel)
    obj = BpfObject.open(bpf_obj("tests/progs/flowsum.bpf.c"))
    prog = guest.load(obj, "flowsum_main")
    packets = [*FLOWSUM_PACKETS.values(), *FLOWSUM_PACKETS.values()]
    try:
        in_guest, recorded = (run(guest, prog, obj, FLOWSUM_SPECS, recording, packets, 2,
                                  ("last", "per_class")) for recording in ("off", "all"))
    finally:
        guest.unload(prog)
    assert [p.attached for p in recorded.probes] == ["recording"] * 4
    everything = range(1, 5)
    assert hits(recorded, everything) == hits(in_guest, everything)
    assert counters(recorded, everything) == counters(in_guest, everything)
    assert [p.undecided for p in recorded.probes] == [0] * 4
    # 16 runs: 8 loop iterations each, one class_of, line 138 once, line 140 past skip 2
    assert [c["printed"] for c in counters(in_guest, everything)] == [128, 16, 16, 14]
