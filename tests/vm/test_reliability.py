"""Kills at random moments of each command: nothing is left behind.

Each command runs as a real ``qstep`` process with its own TMPDIR; a SIGINT,
SIGTERM or SIGKILL arrives after a random delay (from during the imports to the
middle of the run). Afterwards no process of it is left (QEMU's command line
names its owner's directory, so an orphan is found by the owner's pid) and,
for SIGINT and SIGTERM, no temporary directory. A SIGKILL cannot be handled:
its directories are reaped by the next qstep that starts a guest.

``QSTEP_RELIABILITY_KILLS`` sets how many kills (default 12: each command with
each signal once); ``QSTEP_RELIABILITY_SEED`` repeats a run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

SHM = Path("/dev/shm")
KILLS = int(os.environ.get("QSTEP_RELIABILITY_KILLS", "12"))
SEED = int(os.environ.get("QSTEP_RELIABILITY_SEED", str(random.randrange(1 << 30))))
EXPECTED: dict[signal.Signals, tuple[int, str]] = {
    signal.SIGINT: (130, "qstep: interrupted"), signal.SIGTERM: (143, "qstep: terminated")}


def command_lines(obj: Path, packet: Path) -> dict[str, list[str]]:
    return {
        "run": ["run", str(obj), "--packet", str(packet), "--repeat", "100000"],
        "debug": ["debug", str(obj), "--packet", str(packet), "-ex", "break process_packet",
                  "-ex", "run", "-ex", "stepi 5", "-ex", "bt"],
        "debug-gdb": ["debug", str(obj), "--packet", str(packet), "--backend", "gdb",
                      "-ex", "break process_packet", "-ex", "run", "-ex", "stepi 5"],
        "trace": ["trace", str(obj), "--packet", str(packet), "--stepping"],
        "inspect": ["inspect", str(obj), "process_packet print $r1", "--packet", str(packet)],
    }


def owned_processes(pid: int) -> list[int]:
    """Processes whose command line names a directory owned by ``pid`` (QEMU, gdb)."""
    marks = (f"qstep-vm-{pid}.".encode(), f"qstep-window-{pid}.".encode())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(m in cmdline for m in marks):
            found.append(int(entry.name))
    return found


def inheritors(tmp: Path) -> list[int]:
    """Processes that inherited this test's TMPDIR (QEMU, gdb, ... of a killed qstep)."""
    mark = f"TMPDIR={tmp}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if mark in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def owned_dirs(pid: int, tmp: Path) -> list[Path]:
    return [*tmp.glob(f"qstep-vm-{pid}.*"), *SHM.glob(f"qstep-window-{pid}.*")]


def wait_gone(pid: int, tmp: Path, timeout: float = 10.0) -> list[int]:
    """What is left of process ``pid``'s children after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = sorted(set(owned_processes(pid) + inheritors(tmp)))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A TMPDIR short enough for qstep's VM directories (with their sockets) to go there,
    so that what a killed run leaves is seen: pytest's tmp_path is too long for a unix
    socket path, and the VM directories would go to /tmp."""
    path = Path(tempfile.mkdtemp(prefix="qstep-rel-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_kills_at_random_moments_leave_nothing(l4lb_obj: Path, short_tmp: Path) -> None:
    tmp_path = short_tmp
    rng = random.Random(SEED)
    packet = Path(__file__).resolve().parents[2] / "examples/l4lb/packets/ipv4_to_v4real.hex"
    lines = command_lines(l4lb_obj, packet)
    plan = [(name, sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
            for name in lines]
    plan = (plan * (KILLS // len(plan) + 1))[:KILLS]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    killed_pids, figures = [], {"kills": 0, "finished_first": 0, "orphans": 0,
                                "dirs_left": 0, "tracebacks": 0, "before_python": 0}
    for name, sig in plan:
        proc = subprocess.Popen([sys.executable, "-m", "qstep.cli", *lines[name]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env)
        # A quarter of the signals land during start-up (imports, boot), the rest later.
        time.sleep(rng.uniform(0.05, 0.6) if rng.random() < 0.25 else rng.uniform(0.6, 2.5))
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        context = f"{name} {sig.name} (seed {SEED}): rc {proc.returncode}, stderr {stderr!r}"
        figures["kills"] += not finished
        figures["finished_first"] += finished
        figures["tracebacks"] += "Traceback" in stderr
        assert "Traceback" not in stderr and "internal error" not in stderr, context
        if finished:
            assert proc.returncode == 0, context
        elif sig in EXPECTED:
            code, message = EXPECTED[sig]
            # 0: it ended as the signal came; -sig: the signal came while the interpreter's
            # default handler was in place (before qstep's code ran, or after it returned
            # and Python was finalizing); the shell reports 128+sig too and nothing printed.
            assert proc.returncode in (code, 0) or (proc.returncode == -sig and not stderr), \
                context
            figures["before_python"] += proc.returncode == -sig
            if proc.returncode == code:
                assert stderr.strip().splitlines()[-1] == message, context
        left = wait_gone(proc.pid, tmp_path)
        figures["orphans"] += len(left)
        assert not left, f"orphans {left} after {context}"
        if sig == signal.SIGKILL and not finished:
            killed_pids.append(proc.pid)
        else:
            dirs = owned_dirs(proc.pid, tmp_path)
            figures["dirs_left"] += len(dirs)
            assert not dirs, f"{dirs} left after {context}"
    # The next start reaps what the SIGKILLed processes could not remove.
    subprocess.run([sys.executable, "-m", "qstep.cli", *lines["run"][:4]], env=env,
                   capture_output=True, check=True, timeout=300)
    left_after_kill = [d for pid in killed_pids for d in owned_dirs(pid, tmp_path)]
    print(f"reliability figures (seed {SEED}): {figures}, SIGKILLed: {len(killed_pids)}, "
          f"their dirs left after the next start: {len(left_after_kill)}")
    assert not left_after_kill
