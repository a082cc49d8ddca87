"""Signals, owned temporary directories and cache entries shared between processes."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from qstep import interrupts
from qstep.images.cachelock import build_file
from qstep.vm.tempdirs import (
    SUN_PATH_MAX,
    make_private_dir,
    owner_alive,
    owner_tag,
    reap,
    socket_dir_parent,
    start_time,
)


def test_owner_tag_names_this_process_and_its_start() -> None:
    pid, start = owner_tag().split(".")
    assert int(pid) == os.getpid()
    assert int(start) == start_time(os.getpid()) and int(start) > 0


def test_a_dead_owners_directory_is_reaped_and_a_live_owners_kept(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from qstep.vm.tempdirs import make_private_dir; "
         f"d = make_private_dir('qstep-vm-', Path({str(tmp_path)!r})); "
         "(d / 'qmp.sock').write_text('x'); print(d)"],
        capture_output=True, text=True, check=True)
    dead = Path(child.stdout.strip())
    assert dead.is_dir() and owner_alive(dead.name, "qstep-vm-") is False
    mine = make_private_dir("qstep-vm-", tmp_path)  # reaps the dead one first
    assert not dead.exists()
    assert owner_alive(mine.name, "qstep-vm-") is True
    foreign = tmp_path / "qstep-vm-abc123"  # no owner in the name: never touched
    foreign.mkdir()
    assert reap("qstep-vm-", tmp_path) == []
    assert mine.is_dir() and foreign.is_dir()


def test_sockets_go_to_tmp_when_tmpdir_is_too_long(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    long = tmp_path / ("x" * 60)  # pytest's own tmp_path is already over 50 bytes
    long.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(long))
    assert socket_dir_parent("qstep-vm-", "recorder.sock") == Path("/tmp")
    short = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        monkeypatch.setattr("tempfile.tempdir", str(short))
        assert socket_dir_parent("qstep-vm-", "recorder.sock") == short
        made = make_private_dir("qstep-vm-", short) / "recorder.sock"
        assert len(str(made)) <= SUN_PATH_MAX
    finally:
        shutil.rmtree(short)


def test_a_recycled_pid_is_not_the_owner(tmp_path: Path) -> None:
    stale = tmp_path / f"qstep-window-{os.getpid()}.1-xyz"  # our pid, another start time
    stale.mkdir()
    assert reap("qstep-window-", tmp_path) == [stale]


def _build_in_child(dest: str, counter: str) -> None:
    def build(tmp: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.3)
        tmp.write_text("complete")
    assert build_file(Path(dest), build).read_text() == "complete"


def test_concurrent_first_builds_build_once_and_all_see_the_whole_file(
        tmp_path: Path) -> None:
    dest, counter = tmp_path / "entry" / "agent", tmp_path / "count"
    dest.parent.mkdir()
    (dest.parent / ".agent.tmp-killed").write_text("partial")  # a build killed earlier
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_build_in_child, args=(str(dest), str(counter)))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert counter.read_text() == "built\n"
    assert sorted(f.name for f in dest.parent.iterdir()) == [".agent.lock", "agent"]


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("compiler failed")
    with pytest.raises(RuntimeError):
        build_file(tmp_path / "x", fail)
    assert [f.name for f in tmp_path.iterdir()] == [".x.lock"]


def test_deferred_holds_sigint_until_the_block_ends() -> None:
    interrupts.install()
    try:
        finished = False
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal is pending, not delivered
                finished = True
            time.sleep(1)  # never reached: delivered when the block ends
        assert finished
        # While unwinding, a second signal is held back; rearm() takes signals again.
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        interrupts.rearm()
        with pytest.raises(interrupts.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        interrupts.rearm()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
