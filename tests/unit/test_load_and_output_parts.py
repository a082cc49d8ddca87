"""Pure parts behind --set/--prog-type/--modules, load failure messages, map dump
rendering and a run's printed output (qstep.loadopts, loadfail, mapdump,
runoutput, images.modules)."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from qstep.agent.protocol import Reply
from qstep.agent.replies import MapDump, MapInfo, decode_dump, decode_run
from qstep.bpf.elf import BpfObject
from qstep.bpf.uapi import MapType
from qstep.cli import build_parser
from qstep.commands.common import load_options
from qstep.errors import UsageError
from qstep.images.modules import canonical, dependencies
from qstep.loadfail import explain, libbpf_messages, missing_ksyms
from qstep.loadopts import (
    LoadOptions,
    global_variables,
    initial_values,
    parse_attach_type,
    parse_prog_type,
)
from qstep.mapdump import body_text, limits_text, notes_json, record_text, with_record_types
from qstep.runoutput import split_trace


@pytest.fixture(scope="module")
def config(bpf_obj: Callable[[str], Path]) -> BpfObject:
    return BpfObject.open(bpf_obj("tests/progs/config.bpf.c"))


def test_globals_and_their_sections(config: BpfObject) -> None:
    found = global_variables(config)
    assert {n: (s, off) for n, (s, off, _) in found.items()} == {
        "blocked_port": (".rodata", 0), "block_action": (".rodata", 4),
        "verbose": (".rodata", 8), "blocked": (".bss", 0)}  # no static locals (fmt strings)


def test_initial_values_patch_the_section_contents(config: BpfObject) -> None:
    rodata = config.section_data(".rodata")
    values = initial_values(config, ("blocked_port=80", "block_action=3", "verbose=true"))
    assert list(values) == [".rodata"]
    data = values[".rodata"]
    assert len(data) == len(rodata)
    assert data[:9] == struct.pack("<HxxIB", 80, 3, 1)
    assert data[9:] == rodata[9:]  # the printk format string stays
    assert initial_values(config, ("blocked=5",)) == {".bss": struct.pack("<Q", 5)}
    assert LoadOptions(prog_type=3, sets=("verbose=0",)).agent_tokens(config) == [
        "prog_type", 3, "initial_value", ".rodata", rodata[:8] + b"\0" + rodata[9:]]


@pytest.mark.parametrize(("sets", "message"), [
    (("nope=1",), "--set nope: no global variable 'nope' in config.bpf.o (globals: "
                  "block_action, blocked, blocked_port, verbose)"),
    (("blocked_port=70000",), "--set blocked_port: 70000 does not fit in 2 bytes"),
    (("verbose=2",), "--set verbose: a bool takes true, false, 1 or 0, not '2'"),
    (("verbose",), "expected KEY=VALUE, got 'verbose'"),
])
def test_bad_sets(config: BpfObject, sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError) as err:
        initial_values(config, sets)
    assert str(err.value) == message


def test_program_and_attach_type_names() -> None:
    assert [parse_prog_type(t) for t in ("xdp", "tc", "classifier", "SCHED_CLS",
                                          "BPF_PROG_TYPE_SOCKET_FILTER", "6")] == [6, 3, 3, 3, 1, 6]
    assert [parse_attach_type(t) for t in ("xdp", "BPF_XDP", "cgroup_inet_ingress")] == [37, 37, 0]
    with pytest.raises(UsageError, match="unknown program type 'xpd'; known: "):
        parse_prog_type("xpd")


LIBBPF_KFUNC = (
    "libbpf: extern (func ksym) 'bpf_xdp_ct_lookup': not found in kernel or module BTFs\n"
    "libbpf: failed to load object 'qstep'\n")


def test_load_failure_explained() -> None:
    assert missing_ksyms(LIBBPF_KFUNC) == ["bpf_xdp_ct_lookup"]
    assert explain("ct_main", "loading program 'ct_main' failed: Invalid argument",
                   LIBBPF_KFUNC, {"bpf_xdp_ct_lookup": []}).splitlines() == [
        "loading ct_main failed: loading program 'ct_main' failed: Invalid argument",
        "  libbpf: extern (func ksym) 'bpf_xdp_ct_lookup': not found in kernel or module BTFs",
        "  libbpf: failed to load object 'qstep'",
        "  hint: 'bpf_xdp_ct_lookup' is in no kernel module of this kernel"]
    assert explain("p", "e", LIBBPF_KFUNC, {}).endswith(
        "hint: 'bpf_xdp_ct_lookup' may come from a kernel module: pass --modules NAME")
    # libbpf repeats the verifier log between markers: shown once, by the verifier part
    assert libbpf_messages("libbpf: prog 'x': BPF program load failed: Permission denied\n"
                           "libbpf: prog 'x': -- BEGIN PROG LOAD LOG --\n0: (b7) r0 = 0\n"
                           "-- END PROG LOAD LOG --\nlibbpf: failed\n") == [
        "libbpf: prog 'x': BPF program load failed: Permission denied", "libbpf: failed"]


def reply(*lines: tuple[str, list[object]]) -> Reply:
    r = Reply(1)
    r.lines = [(k, list(v)) for k, v in lines]  # type: ignore[misc]
    return r


def info(map_type: MapType, max_entries: int = 4) -> MapInfo:
    return MapInfo("m", 1, int(map_type), 4, 4, max_entries, 0, 0)


def test_huge_array_summary_says_what_was_read() -> None:
    dump = decode_dump(reply(("value_size", [4]), ("entry", [b"\1\0\0\0", b"\7\0\0\0"]),
                             ("zero_entries", [99]), ("read_entries", [100]),
                             ("truncated", [1])))
    assert (dump.zero_entries, dump.read_entries, dump.truncated) == (99, 100, True)
    assert limits_text(info(MapType.ARRAY, 1 << 25), dump) == [
        "    (99 all-zero entries not shown; 100 of 33554432 entries read)",
        "    (reading stopped at the agent's limit: entries from index 100 on were not read)"]
    assert notes_json(info(MapType.ARRAY, 1 << 25), dump) == {
        "zero_entries": 99, "read_entries": 100, "truncated": True}


def test_unlisted_ring_buffer_and_queue_rendering(config: BpfObject) -> None:
    empty = config.btf  # the maps below have no BTF types: values show as raw bytes
    ring = decode_dump(reply(("value_size", [0]), ("record", [b"\x3c\0\0\0"])))
    assert body_text(info(MapType.RINGBUF), ring, empty) == ["    record x:3c000000"]
    assert notes_json(info(MapType.RINGBUF), ring) == {"records_hex": ["3c000000"]}
    queue = MapDump([(b"", b"\1\0\0\0"), (b"", b"\2\0\0\0")])
    assert body_text(info(MapType.QUEUE), queue, empty) == [
        "    [front first] x:01000000, x:02000000"]
    bloom = decode_dump(reply(("value_size", [4]), ("unlisted", [b"a bloom filter answers "
                                                                  b"membership queries only"])))
    assert bloom.entries == [] and limits_text(info(MapType.BLOOM_FILTER), bloom) == [
        "    (cannot list: a bloom filter answers membership queries only)"]


def test_run_output_from_trace_pipe_and_streams() -> None:
    raw = ("           <...>-71      [000] d..31    12.345678: bpf_trace_printk: dport 80\n"
           " qstep-agent-70 [000] ..... 5.000001: some_event: other\n")
    assert split_trace(raw) == (["dport 80"],
                                ["qstep-agent-70 [000] ..... 5.000001: some_event: other"])
    result = decode_run(reply(("retval", [2]), ("duration", [5]), ("data_out", [b""]),
                              ("ctx_out", [b""]), ("printk", [raw.encode()]),
                              ("stream_stdout", [b"hi\n"]), ("stream_stderr", [b""])))
    assert result.output.printk == ["dport 80"] and result.output.stdout == "hi\n"
    assert result.output.text() == [
        "printk    dport 80", "trace     qstep-agent-70 [000] ..... 5.000001: some_event: other",
        "stdout    hi"]
    assert decode_run(reply(("retval", [2]), ("duration", [5]), ("data_out", [b""]),
                            ("ctx_out", [b""]))).output.is_empty()


def test_module_dependencies_from_modinfo() -> None:
    assert canonical("crc32c-intel") == "crc32c_intel"
    assert dependencies({"depends": ["nf_defrag_ipv4,nf_defrag_ipv6,libcrc32c"],
                         "softdep": ["pre: crc32c post: foo-bar"]}) == [
        "nf_defrag_ipv4", "nf_defrag_ipv6", "libcrc32c", "crc32c"]
    assert dependencies({"depends": [""]}) == []


@pytest.mark.parametrize("command", [
    ["run", "p.o", "--packet", "00"], ["disasm", "p.o"], ["debug", "p.o", "--packet", "00"],
    ["trace", "p.o", "--packet", "00"], ["inspect", "p.o", "f:1 print $r1", "--packet", "00"],
    ["verify-jit", "p.o", "--packet", "00"]])
def test_every_command_takes_the_load_options(command: list[str]) -> None:
    args = build_parser().parse_args([*command, "--prog-type", "tc", "--attach-type", "xdp",
                                      "--set", "a=1", "--set", "b={x: 2}",
                                      "--modules", "nf_conntrack,nf_nat", "--modules", "x"])
    assert load_options(args) == LoadOptions(3, 37, ("a=1", "b={x: 2}"),
                                             ("nf_conntrack", "nf_nat", "x"))


def test_record_types_name_a_ring_buffer_and_a_btf_type(bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("tests/progs/maptypes.bpf.c"))
    maps = {"events": info(MapType.RINGBUF), "flows": info(MapType.LRU_HASH)}
    event = obj.btf.find_by_name("event", "STRUCT")
    assert event is not None
    typed = with_record_types(maps, obj.btf, ["events=struct event"])
    assert typed["events"].btf_value_type_id == event.id and typed["flows"] == maps["flows"]
    record = struct.pack("<I4BIi", 60, 10, 1, 2, 3, 7, 0)
    assert record_text(record + bytes(4), event.id, obj.btf) == (
        "{len: 60, saddr: 10.1.2.3, class: 7, perf_ret: 0} +x:00000000")
    assert record_text(record[:8], event.id, obj.btf) == "x:3c0000000a010203"  # too short
    for given, message in (("flows=struct event", "'flows' is not a ring buffer or perf event "
                            "array of the program (those: events)"),
                           ("events=struct nope", "no type 'struct nope' in the object's BTF")):
        with pytest.raises(UsageError, match=re.escape(message)):
            with_record_types(maps, obj.btf, [given])


def test_a_saturated_run_duration_says_so() -> None:
    from qstep.runkinds import duration_text
    assert duration_text(3296506) == "3296506 ns"
    assert duration_text(0xFFFFFFFF) == "at least 4294967295 ns (the kernel's 32-bit limit)"
