"""A booted guest saved once and restored instead of cold-booting (qstep.vm.snapshot)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import RunRequest
from qstep.session import Session
from qstep.vm.qemu_cmd import DEFAULT_APPEND, VmConfig
from qstep.vm.snapshot import prune, snapshot_key, snapshot_path

MEMORY_MB = 448  # a configuration no other test uses: its own snapshot
CALLS_IN = bytes(range(64))  # tests/progs/expected.json "calls": retval 393


def test_key_follows_what_decides_the_guest(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    kernel, initrd = tmp_path / "bzImage", tmp_path / "initrd"
    kernel.write_bytes(b"k" * 100)
    initrd.write_bytes(b"i" * 100)
    base = VmConfig(kernel=kernel, initrd=initrd, workdir=tmp_path / "a")
    key = snapshot_key(base)
    assert snapshot_key(VmConfig(kernel=kernel, initrd=initrd, workdir=tmp_path / "b")) == key
    assert snapshot_key(VmConfig(kernel=kernel, initrd=initrd, workdir=tmp_path,
                                 memory_mb=1024)) != key
    monkeypatch.setattr("qstep.vm.snapshot.DEFAULT_APPEND", [*DEFAULT_APPEND, "nosmp"])
    assert snapshot_key(base) != key  # the kernel command line, not only its extras
    monkeypatch.undo()
    initrd.write_bytes(b"j" * 100)
    assert snapshot_key(base) != key


def test_prune_keeps_the_most_recently_used(tmp_path: Path) -> None:
    for n in range(5):
        f = tmp_path / f"{n}.vmstate"
        f.write_bytes(b"x")
        os.utime(f, (1000 + n, 1000 + n))
    (tmp_path / ".0.vmstate.lock").write_bytes(b"")
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".0.vmstate.lock", "3.vmstate",
                                                          "4.vmstate"]


@pytest.mark.vm
def test_broken_snapshot_boots_cold_then_a_good_one_restores(
        bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("tests/progs/calls.bpf.c"))
    probe = Session(kernel="6.1", memory_mb=MEMORY_MB)
    machine = probe.prepare()
    path = snapshot_path(machine.make_config(Path("/nonexistent")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a saved guest")
    releases, restored = [], []
    for _ in range(2):  # 1st: the broken file is dropped, cold boot, saved; 2nd: restored
        with Session(kernel="6.1", memory_mb=MEMORY_MB) as session:
            releases.append(session.release)
            restored.append(session.restored)
            assert path.stat().st_size > 1_000_000
            prog = session.load(obj, "calls_main")
            assert session.test_run(prog, CALLS_IN).retval == 393
            with session.debugger(prog, RunRequest(CALLS_IN)) as dbg:
                dbg.add_breakpoint("mix")
                event = dbg.run()
                assert event.site is not None and event.site.function.name == "mix"
                assert (dbg.regs()[1], dbg.regs()[2]) == (120, 16)  # sum_bytes, data[16]
                assert dbg.cont().retval == 393
    assert releases == ["6.1.0-56-cloud-amd64"] * 2
    assert restored == [False, True]
