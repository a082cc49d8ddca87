"""Programs with the shapes of real projects (issue 7 section 4), through every
command's core on 6.1 and 6.12: disasm (listing), run, trace, debug, inspect.

tests/progs/maptypes.bpf.c (ring buffer and a dozen other map types),
legacy.bpf.c (a pre-libbpf-1.0 section name: --prog-type), config.bpf.c
(.rodata configuration set before load, bpf_printk), conntrack.bpf.c (a kfunc
from the nf_conntrack module, loaded on demand).

Values known by construction: each program's documented packet and result,
and at one helper or kfunc call the argument registers the C source fixes
(sizeof of a struct, a constant, a field of the packet).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import clang_bpf, matrix_kernels

from qstep.bpf.elf import BpfObject
from qstep.commands.run import dump_maps, run_json, run_text
from qstep.debugger.engine import Event, RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.errors import LoadError, UsageError
from qstep.listing import build_listing, format_listing
from qstep.loaded import LoadedProgram
from qstep.loadopts import LoadOptions
from qstep.mapdump import with_record_types
from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.session import Session
from qstep.userinput import MapEntry, encode_entry

pytestmark = pytest.mark.vm
BPF_LINE = re.compile(r"^\s+(?:=>)?\s*(\d+): (.*)$")


def ipv4_tcp(dport: int, length: int = 60) -> bytes:
    """eth + IPv4 10.1.2.3 -> 10.9.9.9 (ttl 64) + TCP 1234 -> dport, zero padded."""
    frame = (bytes.fromhex("020000000001" "020000000002" "0800")
             + bytes([0x45, 0, 0, 46, 0, 0, 0, 0, 64, 6, 0, 0, 10, 1, 2, 3, 10, 9, 9, 9])
             + struct.pack(">HH", 1234, dport))
    return frame + bytes(length - len(frame))


@dataclass(frozen=True)
class Case:
    """A program, its input, and what is known about it by construction."""

    source: str
    program: str
    packet: bytes
    retval: int
    call: tuple[str, str]  # how the listing's text of one call instruction starts and ends
    at_call: dict[int, int]  # BPF registers right before that call
    options: LoadOptions = LoadOptions()
    maps: tuple[str, ...] = ()  # NAME KEY=VALUE
    printk: tuple[str, ...] = ()
    memory: tuple[int, int, bytes] | None = None  # (register, size, bytes it points to)
    check_maps: Callable[[Session, LoadedProgram], None] = field(default=lambda s, p: None)


def check_maptypes(session: Session, prog: LoadedProgram) -> None:
    dump = {name: session.dump_map_id(info.id) for name, info in prog.maps.items()}
    event = struct.pack("<I4BIi", 60, 10, 1, 2, 3, 7, 0)  # perf output worked: 0
    assert dump["events"].records == [event]
    assert dump["perf_events"].records == [event + bytes(4)]  # perf pads records
    assert dump["fifo"].entries == [(b"", struct.pack("<I", 60))]
    assert dump["lifo"].entries == [(b"", struct.pack("<I", 6))]
    assert dump["flows"].entries == [(bytes([10, 1, 2, 3]), struct.pack("<Q", 1))]
    assert dump["big"].entries == [(struct.pack("<I", 60000), struct.pack("<I", 1)),
                                   (struct.pack("<I", (1 << 20) - 1), struct.pack("<I", 0xABCD))]
    assert (dump["big"].zero_entries, dump["big"].read_entries) == ((1 << 20) - 2, 1 << 20)
    assert dump["seen"].unlisted == "a bloom filter answers membership queries only"
    assert dump["sk_data"].unlisted is not None and "cannot be iterated" in dump["sk_data"].unlisted
    assert dump["from_user"].unlisted == ("a user ring buffer is written by user space, not by "
                                          "the program")
    for name in ("task_data", "inode_data"):  # keyed by fds of tasks and files: no listing
        assert dump[name].unlisted == ("it cannot be iterated: not supported for this map "
                                       "type (ENOTSUPP)")
    for name in ("jumps", "tx_ports", "cpus", "pc_hash", "lru_pc_hash", "outer_hash",
                 "tx_hash", "socks", "sock_hash", "stacks"):  # listable, and empty
        assert (dump[name].entries, dump[name].unlisted) == ([], None), name
    assert len(prog.maps) == 29  # every map of the object was created (and .bss)


def check_legacy(session: Session, prog: LoadedProgram) -> None:
    assert session.dump_map(prog, "shot") == [(bytes(4), struct.pack("<Q", 1))]


def check_config(session: Session, prog: LoadedProgram) -> None:
    assert session.dump_map(prog, ".bss") == [(bytes(4), struct.pack("<Q", 1))]


def check_conntrack(session: Session, prog: LoadedProgram) -> None:
    # struct ct_result last = {found 0, error -ENOENT}: the guest has seen no such flow
    assert session.dump_map(prog, ".bss") == [(bytes(4), struct.pack("<Ii", 0, -2))]
    assert "nf_conntrack" in session.modules_loaded


CASES = {
    "maptypes": Case("tests/progs/maptypes.bpf.c", "maptypes_main", ipv4_tcp(80), 2,
                     ("call bpf_ringbuf_output#130", ""), {3: 16, 4: 0},
                     maps=("prefixes {prefixlen: 8, addr: 10.0.0.0}=7",),
                     memory=(2, 16, struct.pack("<I4BIi", 60, 10, 1, 2, 3, 7, 0)),
                     check_maps=check_maptypes),
    "legacy": Case("tests/progs/legacy.bpf.c", "cls_ssh_guard", ipv4_tcp(22), 2,
                   ("call bpf_map_lookup_elem#1", ""), {}, LoadOptions(prog_type=3),
                   memory=(2, 4, bytes(4)), check_maps=check_legacy),
    "config": Case("tests/progs/config.bpf.c", "config_main", ipv4_tcp(80), 3,
                   ("call bpf_trace_printk#6", ""), {2: 34, 3: 80, 4: 3},
                   LoadOptions(sets=("blocked_port=80", "block_action=3", "verbose=1")),
                   printk=("qstep-config: dport 80 verdict 3",),
                   memory=(1, 34, b"qstep-config: dport %u verdict %u\0"),
                   check_maps=check_config),
    "conntrack": Case("tests/progs/conntrack.bpf.c", "ct_main", ipv4_tcp(80), 1,
                      ("call kfunc#", "  <bpf_xdp_ct_lookup>"), {3: 12, 5: 12},
                      memory=(2, 12, bytes([10, 1, 2, 3, 10, 9, 9, 9, 4, 0xD2, 0, 80])),
                      check_maps=check_conntrack),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture
def loaded(guest: Session, case: Case,
           bpf_obj: Callable[[str], object]) -> Iterator[LoadedProgram]:
    obj = BpfObject.open(str(bpf_obj(case.source)))
    prog = guest.load(obj, case.program, case.options)
    for text in case.maps:
        name, rest = text.split(" ", 1)
        key, value = encode_entry(MapEntry(name, rest, "test"), prog.maps[name], prog.btf)
        guest.update_map(prog, name, key, value)
    yield prog
    guest.unload(prog)


def call_index(prog: LoadedProgram, text: tuple[str, str]) -> int:
    """The instruction index of the call the case names (from the listing)."""
    found = [int(m.group(1)) for line in format_listing(build_listing(prog)).splitlines()
             if (m := BPF_LINE.match(line)) and m.group(2).startswith(text[0])
             and m.group(2).endswith(text[1])]
    assert len(found) == 1, found
    return found[0]


def test_disasm(loaded: LoadedProgram, case: Case) -> None:
    listing = format_listing(build_listing(loaded))
    index = call_index(loaded, case.call)
    site = loaded.sites[index]
    assert not site.removed and site.exact and site.jit_start < site.jit_end
    assert loaded.prog_type == (case.options.prog_type or 6)
    assert f"{index:4}: {case.call[0]}" in listing and listing.count(case.call[1]) >= 1


def test_run(guest: Session, loaded: LoadedProgram, case: Case) -> None:
    result = guest.test_run(loaded, case.packet)
    assert result.retval == case.retval
    assert result.output.printk == list(case.printk)
    case.check_maps(guest, loaded)


def test_trace(guest: Session, loaded: LoadedProgram, case: Case) -> None:
    index = call_index(loaded, case.call)
    with guest.debugger(loaded, RunRequest(case.packet)) as dbg:
        items = list(trace_run(dbg, 100_000))
    records = [i for i in items if isinstance(i, TraceRecord)]
    [exited] = [i for i in items if isinstance(i, Event) and i.kind == "exited"]
    assert exited.retval == case.retval
    assert exited.output is not None and exited.output.printk == list(case.printk)
    at = [n for n, r in enumerate(records) if r.site.index == index]
    assert len(at) == 1
    before = records[at[0] - 1].regs_after
    assert before is not None
    assert {r: before[r] for r in case.at_call} == case.at_call


def test_debug(guest: Session, loaded: LoadedProgram, case: Case) -> None:
    index = call_index(loaded, case.call)
    with guest.debugger(loaded, RunRequest(case.packet)) as dbg:
        bp = dbg.add_breakpoint(f"#{index}")
        event = dbg.run()
        assert event.breakpoint is bp and event.site is not None
        assert event.site.index == index
        regs = dbg.regs()
        assert {r: regs[r] for r in case.at_call} == case.at_call
        if case.memory is not None:
            reg, size, expected = case.memory
            assert dbg.read_memory(regs[reg], size) == expected
        done = dbg.cont()
    assert done.kind == "exited" and done.retval == case.retval
    assert done.output is not None and done.output.printk == list(case.printk)


def test_inspect(guest: Session, loaded: LoadedProgram, case: Case) -> None:
    index = call_index(loaded, case.call)
    offset = index - loaded.functions[0].start_insn
    regs = sorted(case.at_call)
    items = [f"$r{r}" for r in regs]
    if case.memory is not None:
        reg, size, _ = case.memory
        items.append(f"mem($r{reg}, {min(size, 8)})")
    inspector = Inspector(guest, loaded, parse_specs([f"{case.program}:{offset} print "
                                                      + ", ".join(items)]))
    inspector.attach()
    try:
        retvals = inspector.run([case.packet], 1)
    finally:
        inspector.detach()
    assert retvals == [case.retval]
    assert [o.printk for o in inspector.outputs] == [list(case.printk)]
    [hit] = inspector.hits
    expected: list[int | bytes] = [case.at_call[r] for r in regs]
    if case.memory is not None:
        _, size, data = case.memory
        expected.append(int.from_bytes(data[:min(size, 8)], "little"))
    assert hit.values == expected


def test_legacy_section_without_type_says_what_to_do(guest: Session,
                                                     bpf_obj: Callable[[str], object]) -> None:
    obj = BpfObject.open(str(bpf_obj("tests/progs/legacy.bpf.c")))
    with pytest.raises(LoadError) as err:
        guest.load(obj, "xdp_ttl_guard")
    assert str(err.value) == (
        "loading xdp_ttl_guard failed: program 'xdp_ttl_guard': libbpf knows no program type "
        "for its section 'xdp_filter'; pass --prog-type (e.g. xdp, sched_cls) and, if the "
        "type needs one, --attach-type")
    prog = guest.load(obj, "xdp_ttl_guard", LoadOptions(prog_type=6, attach_type=37))
    assert guest.test_run(prog, ipv4_tcp(80)).retval == 2  # ttl 64: XDP_PASS
    guest.unload(prog)


def test_rodata_defaults_and_values(guest: Session, bpf_obj: Callable[[str], object]) -> None:
    obj = BpfObject.open(str(bpf_obj("tests/progs/config.bpf.c")))
    for sets, retval, printk in (((), 2, []),
                                 (("blocked_port=80",), 1, []),
                                 (("blocked_port=81", "verbose=true"), 2,
                                  ["qstep-config: dport 80 verdict 2"])):
        prog = guest.load(obj, "config_main", LoadOptions(sets=sets))
        result = guest.test_run(prog, ipv4_tcp(80))
        assert (result.retval, result.output.printk) == (retval, printk), sets
        guest.unload(prog)


MISSING_KFUNC = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
extern int bpf_qstep_no_such_kfunc(struct xdp_md *ctx) __ksym;
SEC("xdp")
int uses_missing(struct xdp_md *ctx) { return bpf_qstep_no_such_kfunc(ctx); }
char LICENSE[] SEC("license") = "GPL";
"""


def test_missing_kfunc_shows_libbpf_and_a_hint(guest: Session, tmp_path: Path) -> None:
    source = tmp_path / "missing.bpf.c"
    source.write_text(MISSING_KFUNC)
    obj = BpfObject.open(clang_bpf(source, tmp_path / "missing.bpf.o"))
    with pytest.raises(LoadError) as err:
        guest.load(obj, "uses_missing")
    lines = str(err.value).splitlines()
    assert lines[0].startswith("loading uses_missing failed: ")
    assert ("  libbpf: extern (func ksym) 'bpf_qstep_no_such_kfunc': not found in kernel or "
            "module BTFs") in lines
    assert lines[-1] == "  hint: 'bpf_qstep_no_such_kfunc' is in no kernel module of this kernel"


def test_modules_on_request(guest: Session) -> None:
    guest.load_modules(["nf_conntrack"])
    loaded = guest.modules_loaded
    assert "nf_conntrack" in loaded
    for dep in ("nf_defrag_ipv4", "nf_defrag_ipv6", "libcrc32c"):
        assert loaded.index(dep) < loaded.index("nf_conntrack")
    status, output = guest.guest_command("cat /proc/modules")
    assert status == 0 and {m.split()[0] for m in output.splitlines()} >= set(loaded)
    with pytest.raises(UsageError) as err:
        guest.load_modules(["no_such_module"])
    assert str(err.value).startswith("no kernel module 'no_such_module' in ")


def test_run_report_text_and_json(guest: Session, bpf_obj: Callable[[str], object]) -> None:
    """What ``qstep run`` prints for the maps it cannot list and for bpf_printk."""
    case = CASES["maptypes"]
    prog = guest.load(BpfObject.open(str(bpf_obj(case.source))), case.program)
    key, value = encode_entry(MapEntry("prefixes", "{prefixlen: 8, addr: 10.0.0.0}=7", "t"),
                              prog.maps["prefixes"], prog.btf)
    guest.update_map(prog, "prefixes", key, value)
    packets = [("pkt", case.packet)]
    results = [guest.test_run(prog, case.packet)]
    maps = dump_maps(guest, prog)
    prog.maps = with_record_types(prog.maps, prog.btf, ["events=struct event",
                                                        "perf_events=event"])
    text = run_text(guest, prog, 1, packets, results, maps)
    event = "{len: 60, saddr: 10.1.2.3, class: 7, perf_ret: 0}"
    for line in (f"    record {event}",
                 f"    record {event} +x:00000000",
                 "    [front first] 60",
                 "    (1048574 all-zero entries not shown; 1048576 of 1048576 entries read)",
                 "    (cannot list: a bloom filter answers membership queries only)"):
        assert line in text
    report = json.loads(json.dumps(run_json(guest, prog, packets, results, maps)))
    assert report["map_notes"]["events"] == {"records_hex": ["3c0000000a0102030700000000000000"],
                                             "records": [event]}
    assert report["map_notes"]["perf_events"] == {
        "records_hex": ["3c0000000a010203070000000000000000000000"],
        "records": [f"{event} +x:00000000"]}
    assert report["map_notes"]["seen"] == {
        "unlisted": "a bloom filter answers membership queries only"}
    assert report["map_notes"]["big"] == {"zero_entries": 1048574, "read_entries": 1048576}
    assert [e["value"] for e in report["maps"]["fifo"]] == ["60"]
    guest.unload(prog)

    config = CASES["config"]
    prog = guest.load(BpfObject.open(str(bpf_obj(config.source))), config.program,
                      config.options)
    results = [guest.test_run(prog, config.packet)]
    text = run_text(guest, prog, 1, packets, results, dump_maps(guest, prog))
    assert "printk    qstep-config: dport 80 verdict 3" in text
    report = run_json(guest, prog, packets, results, dump_maps(guest, prog))
    assert report["runs"][0]["output"]["printk"] == ["qstep-config: dport 80 verdict 3"]
    guest.unload(prog)


def test_cli_run_with_set(bpf_obj: Callable[[str], object],
                                          tmp_path: Path) -> None:
    """The command line end to end (one boot): --set, and printk in --json."""
    packet = tmp_path / "tcp80.hex"
    packet.write_text(ipv4_tcp(80).hex())
    proc = subprocess.run(
        [sys.executable, "-m", "qstep.cli", "run", str(bpf_obj("tests/progs/config.bpf.c")),
         "--packet", str(packet), "--set", "blocked_port=80", "--set", "block_action=3",
         "--set", "verbose=true", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["runs"][0]["retval_name"] == "XDP_TX"
    assert report["runs"][0]["output"]["printk"] == ["qstep-config: dport 80 verdict 3"]
    assert [e["value"] for e in report["maps"][".bss"]] == ["{blocked: 1}"]


@pytest.mark.parametrize("kernel", matrix_kernels())
def test_bpf_stream_output_is_shown_where_the_kernel_has_streams(
        guests: Callable[[str], Session], kernel: str,
        bpf_obj: Callable[[str], object]) -> None:
    """tests/progs/streams.bpf.c prints to its BPF stdout (bpf_stream_vprintk, 7.x); 6.x
    kernels have no streams: the output says so with None, and the program prints nothing."""
    session = guests(kernel)
    prog = session.load(BpfObject.open(str(bpf_obj("tests/progs/streams.bpf.c"))),
                        "stream_main")
    result = session.test_run(prog, ipv4_tcp(80))
    assert result.retval == 2
    has_streams = not kernel.startswith("6.")
    assert (result.output.stdout, result.output.stderr) == (
        ("qstep-stream: len 60\n", "") if has_streams else (None, None))
    if has_streams:
        assert result.output.text() == ["stdout    qstep-stream: len 60"]
    session.unload(prog)
