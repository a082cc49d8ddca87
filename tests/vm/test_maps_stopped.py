"""Maps read from guest memory while the debugger holds the guest stopped (the agent
cannot answer then), compared with what the agent dumps after the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import load_program, matrix_kernels

from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import RunRequest
from qstep.errors import UsageError
from qstep.paths import REPO_ROOT
from qstep.render import format_map_value
from qstep.session import Session
from qstep.userinput import read_packet

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PACKET = EXAMPLE / "packets" / "ipv4_to_v4real.hex"
VIP_KEY = "{addr: {v4: 10.0.0.10}, port: 80, proto: 6}"
COMMANDS = ["info maps", "break l4lb.bpf.c:178", "run", "print stats[1]", "print stats",
            f"print vip_map[{VIP_KEY}]", "print vip_map", "print stats[vip_num]",
            "print vip_map[{addr: {v4: 10.9.9.9}, port: 80, proto: 6}]", "print stats[99]"]


def debug_json(l4lb_obj: Path, kernel: str) -> list[dict[str, Any]]:
    args = [sys.executable, "-m", "qstep.cli", "debug", str(l4lb_obj), "--prog",
            "l4lb_ingress", "--maps", str(EXAMPLE / "maps.txt"), "--packet", str(PACKET),
            "--kernel", kernel, "--json"]
    for command in COMMANDS:
        args += ["-ex", command]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("kernel", matrix_kernels("6.1", "7.3"))
def test_maps_while_stopped_equal_the_agents_dump(
        l4lb_obj: Path, guests: Callable[[str], Session], kernel: str) -> None:
    (maps, _bp, stop, stats1, stats, vip, vips, by_var, missing, outside) = debug_json(
        l4lb_obj, kernel)
    assert stop["where"]["line"] == 178
    assert stats1["value"] == "{packets: 1, bytes: 72}"
    assert by_var["value"] == "{packets: 1, bytes: 72}"
    assert vip["value"] == "{flags: 0, vip_num: 1}"
    assert missing["value"] is None and outside["value"] is None

    # Truth: the agent's view after the same run on a fresh load.
    guest = guests(kernel)
    prog = load_program(guest, l4lb_obj, "l4lb_ingress", example_maps=True)
    try:
        assert guest.test_run(prog, read_packet(str(PACKET))).retval == 7
        dumped = {name: {(format_map_value(k, info.btf_key_type_id, prog.btf),
                          format_map_value(v, info.btf_value_type_id, prog.btf))
                         for k, v in guest.dump_map(prog, name)}
                  for name, info in prog.maps.items()}
        want_maps = {(i.name, i.key_size, i.value_size, i.max_entries)
                     for i in prog.maps.values()}
    finally:
        guest.unload(prog)
    assert {(m["name"], m["key_size"], m["value_size"], m["max_entries"])
            for m in maps["maps"]} == want_maps
    assert {m["name"]: m["type"] for m in maps["maps"]}["vip_map"] == "hash"
    nonzero = {(k, v) for k, v in dumped["stats"] if v != "{packets: 0, bytes: 0}"}
    assert {(e["key"], e["value"]) for e in stats["entries"]} == nonzero == {
        ("1", "{packets: 1, bytes: 72}")}
    assert {(e["key"], e["value"]) for e in vips["entries"]} == dumped["vip_map"]
    assert len(dumped["vip_map"]) == 4
    assert (f"{VIP_KEY[:-1]}, pad: 0}}", vip["value"]) in dumped["vip_map"]


MAPTYPES_COMMANDS = ["break maptypes.bpf.c:292", "run", "print cpu_stats[0]", "print cpu_stats",
                     "print flows[10.1.2.3]", "print flows", "print big[60000]",
                     "print big[1048575]", "print big", "print prefixes", "print lru_pc_hash"]


def test_percpu_lru_and_large_arrays_while_stopped(
        tmp_path: Path, bpf_obj: Callable[[str], Path], vm: Session) -> None:
    obj = bpf_obj("tests/progs/maptypes.bpf.c")
    frame = (bytes.fromhex("020000000001" "020000000002" "0800")
             + bytes([0x45, 0, 0, 46, 0, 0, 0, 0, 64, 6, 0, 0, 10, 1, 2, 3, 10, 9, 9, 9])
             + bytes.fromhex("04d20050"))
    packet = tmp_path / "p.hex"
    packet.write_text((frame + bytes(60 - len(frame))).hex())
    args = [sys.executable, "-m", "qstep.cli", "debug", str(obj), "--prog", "maptypes_main",
            "--packet", str(packet), "--json"]
    for command in MAPTYPES_COMMANDS:
        args += ["-ex", command]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr  # 'print prefixes' fails, the rest runs
    (_bp, stop, cpu0, cpu, flow, flows, hit, mark, big, lpm, pc_hash) = [
        json.loads(line) for line in proc.stdout.splitlines()]
    assert stop["where"]["line"] == 292
    assert (cpu0["value"], flow["value"], hit["value"], mark["value"]) == ("1", "1", "1",
                                                                           "43981")
    assert cpu["entries"] == [{"key": "0", "value": "1"}]
    assert flows["entries"] == [{"key": "167838211", "value": "1"}]  # as qstep run shows it
    assert pc_hash == {"command": "print lru_pc_hash", "error": "map lru_pc_hash: its "
                       "address is not known (the program's code never loads it)"}
    assert big["truncated"] and big["entries"] == []  # slots 0..4095 are all zero
    assert lpm == {"command": "print prefixes", "error": "map prefixes: reading a LPM_TRIE "
                   "map while stopped is not supported (array, percpu array, hash, LRU hash "
                   "and their percpu variants are)"}

    # Truth: the agent's dump after the same run on a fresh load.
    prog = load_program(vm, obj, "maptypes_main", example_maps=False)
    try:
        vm.test_run(prog, frame + bytes(60 - len(frame)))
        truth = {name: [(format_map_value(k, prog.maps[name].btf_key_type_id, prog.btf),
                         format_map_value(v, prog.maps[name].btf_value_type_id, prog.btf))
                        for k, v in vm.dump_map(prog, name)] for name in ("cpu_stats", "flows")}
    finally:
        vm.unload(prog)
    assert truth["flows"] == [(e["key"], e["value"]) for e in flows["entries"]]
    assert truth["cpu_stats"] == [("0", "1"), ("1", "0")]


@pytest.mark.parametrize("kernel", matrix_kernels("6.1", "7.3"))
def test_percpu_hashes_while_stopped(tmp_path: Path, bpf_obj: Callable[[str], Path],
                                     guests: Callable[[str], Session], kernel: str) -> None:
    """PERCPU_HASH and LRU_PERCPU_HASH with 4-byte keys (tests/progs/pcpuhash.bpf.c)."""
    obj = bpf_obj("tests/progs/pcpuhash.bpf.c")
    frame = bytes(range(60))
    packet = tmp_path / "p.hex"
    packet.write_text(frame.hex())
    args = [sys.executable, "-m", "qstep.cli", "debug", str(obj), "--prog", "pcpuhash_main",
            "--packet", str(packet), "--kernel", kernel, "--json"]
    for command in ["break pcpuhash.bpf.c:45", "run", "print by_proto", "print by_proto[2048]",
                    "print recent", "print recent[7]", "print recent[8]"]:
        args += ["-ex", command]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    (_bp, stop, protos, proto, recent, seven, eight) = [
        json.loads(line) for line in proc.stdout.splitlines()]
    assert stop["where"]["line"] == 45
    assert proto["value"] == "{runs: 1, len: 60}" and seven["value"] == "180"
    assert eight["value"] is None

    guest = guests(kernel)
    prog = load_program(guest, obj, "pcpuhash_main", example_maps=False)
    try:
        assert guest.test_run(prog, frame).retval == 2
        truth = {name: [(format_map_value(k, prog.maps[name].btf_key_type_id, prog.btf),
                         format_map_value(v, prog.maps[name].btf_value_type_id, prog.btf))
                        for k, v in guest.dump_map(prog, name)] for name in ("by_proto", "recent")}
    finally:
        guest.unload(prog)
    assert truth == {"by_proto": [("2048", "{runs: 1, len: 60}")], "recent": [("7", "180")]}
    assert [(e["key"], e["value"]) for e in protos["entries"]] == truth["by_proto"]
    assert [(e["key"], e["value"]) for e in recent["entries"]] == truth["recent"]


def test_any_session_debugger_reads_maps(vm: Session, l4lb_obj: Path) -> None:
    """Session.debugger fetches the kernel's BTF itself (the API, DAP and MCP front ends);
    without the object's DWARF a map key is a plain number."""
    prog = load_program(vm, l4lb_obj, "l4lb_ingress", example_maps=True)
    try:
        with vm.debugger(prog, RunRequest(read_packet(str(PACKET)))) as dbg:
            commands = CommandSet(dbg)
            commands.execute("break l4lb.bpf.c:178")
            assert commands.execute("run").data["where"]["line"] == 178
            assert commands.execute("print stats[1]").text == "{packets: 1, bytes: 72}"
            assert commands.execute("print stats[0]").text == "{packets: 0, bytes: 0}"
            no_dwarf = r"^ch_rings\[vip_num\]: key: 'vip_num' is not an integer$"
            with pytest.raises(UsageError, match=no_dwarf):
                commands.execute("print ch_rings[vip_num]")
            with pytest.raises(UsageError, match="^print/x stats: formats do not apply"):
                commands.execute("print/x stats")
            commands.execute("continue")
    finally:
        vm.unload(prog)
