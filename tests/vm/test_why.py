"""``why`` over recordings of tests/progs/tunnel.bpf.c: a field set on one path only.

The tunnel entry's remote_v6 (16 bytes at offset 4 of the map value) is copied from
the packet for IPv6 frames and never written for IPv4 ones; hits (offset 20) is
incremented on every run, so its old value is the previous run's count.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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
