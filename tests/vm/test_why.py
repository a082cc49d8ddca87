"""``why`` over recordings of tests/progs/tunnel.bpf.c: a field set on one path only.

The tunnel entry's remote_v6 (16 bytes at offset 4 of the map value) is copied from
the packet for IPv6 frames and never written for IPv4 ones; hits (offset 20) is
incremented on every run, so its old value is the previous run's count.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import load_program

from qstep.recorder.run import record_run
from qstep.recorder.why import WhyAnswer, why
from qstep.session import Session

pytestmark = pytest.mark.vm

SOURCE = "tests/progs/tunnel.bpf.c"
CHECK = "tunnel.bpf.c:54"  # the `if (t->remote_v6[0] == 0 ...)` line
SET = 50  # the memcpy line
DADDR = ipaddress.IPv6Address("2001:db8::42").packed
ETH = bytes.fromhex("020000000001020000000002")
IPV6 = ETH + b"\x86\xdd" + bytes.fromhex("60000000000011ff") + bytes(16) + DADDR + bytes(6)
IPV4 = ETH + b"\x08\x00" + bytes(46)


def _why(vm: Session, obj: Path, packets: list[bytes], question: str) -> list[WhyAnswer]:
    prog = load_program(vm, obj, "tunnel_main", False)
    try:
        return [why(record_run(vm, prog, p)[1], question) for p in packets]
    finally:
        vm.unload(prog)


def test_a_field_set_on_the_ipv6_path_shows_each_store(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    [answer] = _why(guest, bpf_obj(SOURCE), [IPV6], f"mem($r0 + 4, 16) at {CHECK}")
    writes = sorted(answer.writes, key=lambda w: w.addr)
    assert [w.site.source.line for w in writes] == [SET] * 4
    assert [w.site.index for w in writes] == [32, 30, 28, 26]
    assert b"".join(w.new for w in writes) == DADDR
    assert b"".join(w.old for w in writes) == bytes(16)  # fresh map: zeros before
    assert answer.value == DADDR
    assert answer.site.index == 36 and answer.helper_calls == []


def test_the_same_field_is_never_written_on_the_ipv4_path(
        guest: Session, bpf_obj: Callable[[str], Path]) -> None:
    [answer] = _why(guest, bpf_obj(SOURCE), [IPV4], f"mem($r0 + 4, 16) at {CHECK}")
    assert answer.writes == []
    assert answer.value is None  # the program never touched those bytes before the check


def test_old_values_come_from_memory_before_each_store(
        vm: Session, bpf_obj: Callable[[str], Path]) -> None:
    answers = _why(vm, bpf_obj(SOURCE), [IPV4, IPV4, IPV6], f"mem($r0 + 20, 4) at {CHECK}")
    for run, answer in enumerate(answers):
        [w] = answer.writes
        assert (w.site.index, w.site.source.line) == (15, 44)
        assert w.old == run.to_bytes(4, "little") and w.new == (run + 1).to_bytes(4, "little")


def test_the_cli_says_never_written(bpf_obj: Callable[[str], Path], tmp_path: Path) -> None:
    packet = tmp_path / "ipv4.hex"
    packet.write_text(IPV4.hex())
    proc = subprocess.run([sys.executable, "-m", "qstep.cli", "why", str(bpf_obj(SOURCE)),
                           f"mem($r0 + 4, 16) at {CHECK}", "--packet", str(packet)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("16 bytes at 0x") and "insn 36 (tunnel_main:36)" in lines[0]
    assert "never written on this path before that point (22 BPF instructions ran)" in lines[2]


@pytest.mark.parametrize("args", [
    ["why", "{obj}", "mem($r0, 4) at tunnel.bpf.c:54", "--packet", "00" * 60],
    ["debug", "--record", "{obj}", "--packet", "00" * 60, "-ex", "rsi"],
    ["trace", "{obj}", "--packet", "00" * 60, "--mem"],
])
def test_without_the_recorder_one_clear_error(args: list[str], bpf_obj: Callable[[str], Path],
                                              tmp_path: Path) -> None:
    """A QEMU without the recorder (the system's 7.2): a one-line error, before booting."""
    env = {**os.environ, "QSTEP_QEMU": "system"}
    argv = [a.replace("{obj}", str(bpf_obj(SOURCE))) for a in args]
    proc = subprocess.run([sys.executable, "-m", "qstep.cli", *argv], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("qstep: error: ") and "recorder" in proc.stderr
    assert "QSTEP_QEMU" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PACKETS = ROOT / "examples/l4lb/packets"
TUNNEL_KEY = "l4lb.bpf.c:178"  # bpf_skb_set_tunnel_key(skb, &tkey, ...)


def _why_cli(obj: Path, packet: str, question: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "qstep.cli", "why", str(obj), question,
                           "--prog", "l4lb_ingress", "--maps", str(ROOT / "examples/l4lb/maps.txt"),
                           "--packet", str(EXAMPLE_PACKETS / packet), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def _final_bytes(answer: dict[str, Any]) -> bytes:
    """The bytes the recorded stores left, applied in order over unknown (zero) bytes."""
    data = bytearray(answer["size"])
    for w in answer["writes"]:
        start = w["addr"] - answer["addr"]
        new = bytes.fromhex(w["new"])
        data[start:start + len(new)] = new
    return bytes(data)


def test_a_c_object_is_asked_about_by_name(l4lb_obj: Path) -> None:
    """The design's 'tunnel remote IPv6 not set up' question, in C: on the IPv6 path the
    memcpy of line 158 wrote it; on the IPv4 path only the zeroing (132) and the IPv4
    address (160, sharing the union's first bytes) did."""
    v6 = _why_cli(l4lb_obj, "ipv6_to_v6real.hex", f"tkey.remote_ipv6 at {TUNNEL_KEY}")
    assert (v6["expr"], v6["shown"], v6["size"]) == ("tkey.remote_ipv6", "2001:db8:ff::2", 16)
    assert v6["value"] == ipaddress.IPv6Address("2001:db8:ff::2").packed.hex()
    assert sorted({w["line"] for w in v6["writes"]}) == [132, 158, 160]
    assert _final_bytes(v6).hex() == v6["value"]  # every byte's last store is recorded
    v4 = _why_cli(l4lb_obj, "ipv4_to_v4real.hex", f"tkey.remote_ipv6 at {TUNNEL_KEY}")
    assert sorted({w["line"] for w in v4["writes"]}) == [132, 160]
    assert v4["value"] == "010010ac" + "00" * 12  # 172.16.0.1 in host order; rest never set
    assert _final_bytes(v4).hex() == v4["value"]
    assert v4["helper_calls"] == []  # only lookups ran: nothing else can have written it


def test_why_in_a_reverse_session_at_the_current_position(l4lb_obj: Path) -> None:
    """``why`` in ``qstep debug --reverse``: from the live point and from the past."""
    proc = subprocess.run(
        [sys.executable, "-m", "qstep.cli", "debug", str(l4lb_obj), "--prog", "l4lb_ingress",
         "--maps", str(ROOT / "examples/l4lb/maps.txt"), "--packet",
         str(EXAMPLE_PACKETS / "ipv6_to_v6real.hex"), "--reverse", "--json",
         "-ex", "break l4lb.bpf.c:165", "-ex", "run", "-ex", "why tkey.tunnel_id",
         "-ex", "watch tkey.tunnel_id", "-ex", "reverse-continue", "-ex", "why tkey.tunnel_id",
         "-ex", "why $r10 - 48"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    live, past, addr = [o for o in map(json.loads, proc.stdout.splitlines()) if "writes" in o]
    assert (live["expr"], live["shown"], live["at"]["line"]) == ("tkey.tunnel_id", "2", 165)
    assert [(w["line"], w["new"]) for w in live["writes"]] == [
        (132, "00000000"), (161, "02000000")]  # tkey = {} (over stack garbage); = vip_num
    assert live["writes"][1]["old"] == "00000000"
    # back at the store of line 161 (not yet done): only the zeroing
    assert (past["shown"], past["at"]["line"], past["at"]["insn"]) == ("0", 161, 167)
    assert [(w["line"], w["new"]) for w in past["writes"]] == [(132, "00000000")]
    assert (addr["addr"], addr["size"]) == (past["addr"], 8) and "expr" not in addr
