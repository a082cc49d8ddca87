"""Large objects and blobs cross the agent channel (shared-memory window) on real guests.

Truths: the documented result of tests/progs/big.bpf.c (computed here), the
object file itself (instructions, functions), and the bytes the test sent.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import clang_bpf

from qstep.agent.window import HostWindow
from qstep.bpf.elf import BpfObject
from qstep.errors import GuestError, UsageError
from qstep.listing import build_listing, format_listing
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.session import Session

pytestmark = pytest.mark.vm

BIG_SRC = REPO_ROOT / "tests" / "progs" / "big.bpf.c"
XDP_DROP, XDP_TX = 1, 3
PACKET = bytes(range(64))
STAGES = [f"stage_{k}" for k in range(16)]


def folded(packet: bytes) -> int:
    """big.bpf.c's result: stage_k(acc, b) = acc * 31 + b + k over bytes 0..15,
    from acc = the packet's length."""
    acc = len(packet)
    for k in range(16):
        acc = (acc * 31 + packet[k] + k) & 0xFFFFFFFF
    return acc


@pytest.fixture(scope="module")
def big_obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = clang_bpf(BIG_SRC, tmp_path_factory.mktemp("big") / "big.bpf.o")
    return path


@pytest.fixture(scope="module")
def huge_obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = clang_bpf(BIG_SRC, tmp_path_factory.mktemp("big") / "big6.bpf.o",
                           "-DBIG_COPIES=6")
    return path


@pytest.fixture
def big(guest: Session, big_obj: Path) -> Iterator[LoadedProgram]:
    prog = guest.load(BpfObject.open(big_obj), "big_main")
    yield prog
    guest.unload(prog)


def window_of(session: Session) -> HostWindow:
    assert session.machine is not None and session.machine.window is not None
    return session.machine.window


def test_the_big_object_is_over_500_kb_with_btf(big_obj: Path) -> None:
    obj = BpfObject.open(big_obj)
    assert len(big_obj.read_bytes()) > 500_000
    assert obj.btf is not None
    assert {p.name for p in obj.programs} == {"big_main"}
    assert sorted(p.name for p in obj.subprograms) == sorted(STAGES)


def test_big_program_runs_with_the_documented_result(guest: Session,
                                                     big: LoadedProgram) -> None:
    result = guest.test_run(big, PACKET)
    assert result.retval == XDP_TX
    assert result.data_out == PACKET[:60] + struct.pack("<I", folded(PACKET))
    short = guest.test_run(big, bytes(range(63)))
    assert (short.retval, short.data_out) == (XDP_DROP, bytes(range(63)))


def test_big_program_disassembles_every_function(guest: Session, big_obj: Path,
                                                 big: LoadedProgram) -> None:
    obj = BpfObject.open(big_obj)
    assert [f.name for f in big.functions] == ["big_main", *STAGES]
    assert sum(f.length for f in big.functions) == len(big.jited_image)
    own = [i.code for p in [*obj.programs, *obj.subprograms] for i in p.insns]
    assert sorted(s.insn.code for s in big.sites.values()) == sorted(own)
    assert all(s.jit_start is not None and s.jit_end is not None for s in big.sites.values())
    listing = build_listing(big)
    assert sorted(i.index for fl in listing for b in fl.blocks for i in b.insns) == sorted(
        big.sites)
    text = format_listing(listing)
    assert "acc = stage_15(acc, p[15]);" in text
    assert "*(__u32 *)(p + 60) = acc;" in text


def test_multi_megabyte_object_loads_and_runs(guest: Session, huge_obj: Path) -> None:
    assert len(huge_obj.read_bytes()) > 4_000_000
    prog = guest.load(BpfObject.open(huge_obj), "big_main")
    try:
        result = guest.test_run(prog, PACKET)
        assert result.retval == XDP_TX
        assert result.data_out[60:] == struct.pack("<I", folded(PACKET))
    finally:
        guest.unload(prog)


def test_blobs_cross_the_window_both_ways(vm: Session) -> None:
    window, agent = window_of(vm), vm.agent
    assert agent is not None and agent.use_window(True)
    assert not window.path.exists()  # nothing left in /dev/shm if qstep is killed
    data = os.urandom(8 << 20)
    sent_before, got_before = window.guest_consumed, window.host_consumed
    vm.put_file("/tmp/transport-blob", data)
    assert window.guest_consumed - sent_before >= len(data)
    assert agent.request("get", "/tmp/transport-blob").blob("data") == data
    assert window.host_consumed - got_before >= len(data)


def test_hex_on_the_serial_line_still_works(vm: Session) -> None:
    window, agent = window_of(vm), vm.agent
    assert agent is not None
    data = os.urandom(50_000)
    try:
        assert not agent.use_window(False)
        sent_before, got_before = window.guest_consumed, window.host_consumed
        vm.put_file("/tmp/transport-hex", data)
        assert agent.request("get", "/tmp/transport-hex").blob("data") == data
        assert (window.guest_consumed, window.host_consumed) == (sent_before, got_before)
    finally:
        assert agent.use_window(True)


def test_a_reply_timeout_is_a_guest_error_and_the_channel_recovers(vm: Session) -> None:
    agent = vm.agent
    assert agent is not None
    with pytest.raises(GuestError, match="timed out waiting for the agent's 'exec' reply"):
        agent.request("exec", b"sleep 2", timeout=0.5)
    assert agent.request("get", "/proc/sys/kernel/ostype").blob("data") == b"Linux\n"


def test_a_missing_guest_file_is_a_usage_error(vm: Session) -> None:
    with pytest.raises(UsageError, match="copying /nonexistent out of the guest: "
                                         "/nonexistent: No such file or directory"):
        vm.get_file("/nonexistent")
