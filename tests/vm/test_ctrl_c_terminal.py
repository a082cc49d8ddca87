"""Ctrl-C typed in a real terminal into a running program, as a user does it.

``qstep debug`` and ``qstep trace`` run in a pseudo-terminal (the tty driver turns
the ^C byte into SIGINT for the foreground process group, QEMU and gdb being in
sessions of their own) on ``spin.bpf.c``, which runs for seconds: a Ctrl-C during
``continue`` and during ``stepi 100000`` returns to the prompt stopped at the start
of a BPF instruction; ``continue`` then runs to the exit with the value known by
construction. ``trace`` ends with exit 130. Nothing is left behind: no process
that inherited the test's TMPDIR, no VM or window directory, no traceback.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

INNER = 1 << 20  # spin.bpf.c
ROUNDS = 400  # about 5 s of 'continue' under TCG on a quiet machine (more under load)
RETVAL = ROUNDS * INNER * (INNER - 1) // 2 % 65521
PACKET = "00" * 64
PROMPT = "(qstep) "
SITE = re.compile(r"^(spin|one_round|add_one):(\d+) \(insn (\d+)\) at spin\.bpf\.c:(\d+)",
                  re.M)
BOOT = 600.0  # seconds: a first boot on a loaded machine


class Terminal:
    """A command in a pseudo-terminal: what it printed, what is typed into it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal
            os.execve(argv[0], argv, env)
        self.pid, self.fd = pid, fd
        self.seen = ""  # everything printed so far
        self.pos = 0  # where the next expect() starts looking
        self.status: int | None = None

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def ctrl_c(self) -> None:
        os.write(self.fd, b"\x03")

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until ``pattern`` appears after what earlier expects consumed."""
        regex = re.compile(pattern, re.M | re.S)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.seen, self.pos)
            if found:
                self.pos = found.end()
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"no {pattern!r} within {timeout} s; the terminal "
                                     f"showed:\n{self.seen[self.pos:][-3000:]}")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], min(timeout, 1.0))
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.seen += data.decode(errors="replace").replace("\r\n", "\n")
        return bool(data)

    def wait(self, timeout: float) -> int:
        """The exit status (reading the rest of the output meanwhile)."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                while self._read(0.1) and select.select([self.fd], [], [], 0)[0]:
                    pass
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s:\n{self.seen[-3000:]}")
            self._read(0.2)
        return self.status

    def close(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def inheritors(tmp: Path) -> list[int]:
    """Processes that inherited the test's TMPDIR (QEMU, gdb, ...)."""
    mark = f"TMPDIR={tmp}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def left_behind(pid: int, tmp: Path) -> list[str]:
    deadline = time.monotonic() + 10
    while (procs := inheritors(tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    dirs = [*tmp.glob("qstep-*"), *Path("/tmp").glob(f"qstep-vm-{pid}.*"),
            *Path("/dev/shm").glob(f"qstep-window-{pid}.*")]
    return [f"process {p}" for p in procs] + [str(d) for d in dirs]


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    started: list[Terminal] = []
    env = {**os.environ, "TMPDIR": str(tmp_path), "TERM": "dumb"}

    def start(*args: str) -> Terminal:
        term = Terminal([sys.executable, "-m", "qstep.cli", *args], env)
        started.append(term)
        return term
    yield start
    for term in started:
        term.close()


@pytest.fixture
def spin_obj(bpf_obj: Callable[[str], Path]) -> Path:
    return bpf_obj("tests/progs/spin.bpf.c")


def assert_at_instruction(term: Terminal) -> None:
    """After 'Program interrupted.': the start of a BPF instruction, registers readable."""
    site = term.expect(r"Program interrupted\.\n(.*?)" + re.escape(PROMPT), 120)
    found = SITE.search(site.group(1))
    assert found, f"not stopped at a BPF instruction:\n{site.group(1)}"
    term.type("info registers\n")
    text = term.expect(r"info registers\n(.*?)" + re.escape(PROMPT), 60).group(1)
    regs = {line.split()[0]: int(line.split()[1], 16) for line in text.splitlines()}
    assert list(regs) == [f"r{n}" for n in range(11)], text
    if found.group(1, 2) == ("add_one", "0"):  # the callback's entry: r1 is the index i
        assert regs["r1"] < INNER, text


@pytest.mark.parametrize("backend", ["rsp", "gdb"])
def test_ctrl_c_in_continue_and_stepi_stops_at_an_instruction(
        terminal: Callable[..., Terminal], spin_obj: Path, tmp_path: Path,
        backend: str) -> None:
    term = terminal("debug", str(spin_obj), "--packet", PACKET, "--map", "rounds",
                    f"0={ROUNDS}", "--backend", backend)
    term.expect(r"Breakpoint 1, spin:0 \(insn 0\).*?" + re.escape(PROMPT), BOOT)  # entry
    term.type("continue\n")
    term.expect(r"continue\n", 10)
    time.sleep(2)
    term.ctrl_c()
    assert_at_instruction(term)
    term.type("stepi 100000\n")
    term.expect(r"stepi 100000\n", 10)
    time.sleep(2)
    term.ctrl_c()
    assert_at_instruction(term)
    term.type("continue\n")
    term.expect(rf"exited: retval {RETVAL}, .*?" + re.escape(PROMPT), 900)
    term.type("quit\n")
    assert term.wait(60) == 0, term.seen[-2000:]
    assert "Traceback" not in term.seen and "internal error" not in term.seen, term.seen
    assert not left_behind(term.pid, tmp_path)


@pytest.mark.parametrize("how", ["recording", "stepping"])
def test_ctrl_c_in_trace_exits_130(terminal: Callable[..., Terminal], spin_obj: Path,
                                   tmp_path: Path, how: str) -> None:
    extra = ["--stepping"] if how == "stepping" else []
    term = terminal("trace", str(spin_obj), "--packet", PACKET, "--map", "rounds",
                    f"0={ROUNDS}", *extra)
    if how == "stepping":
        term.expect(r"^\s*\d+ ", BOOT)  # the first traced instruction
    else:
        time.sleep(8)  # booted (a restored snapshot takes about a second) and recording
    term.ctrl_c()
    assert term.wait(120) == 130, term.seen[-2000:]
    lines = term.seen.rstrip().splitlines()  # the terminal's ^C echo, then the message
    assert lines[-2].endswith("^C") and lines[-1] == "qstep: interrupted", term.seen[-2000:]
    assert "Traceback" not in term.seen and "internal error" not in term.seen, term.seen
    assert not left_behind(term.pid, tmp_path)


def test_quit_in_a_running_program_leaves_nothing(
        terminal: Callable[..., Terminal], spin_obj: Path, tmp_path: Path) -> None:
    term = terminal("debug", str(spin_obj), "--packet", PACKET, "--map", "rounds",
                    f"0={ROUNDS}")
    term.expect(r"Breakpoint 1, spin:0 \(insn 0\).*?" + re.escape(PROMPT), BOOT)
    term.type("quit\n")  # the run is stopped at its entry; the session ends at once
    assert term.wait(120) == 0, term.seen[-2000:]
    assert "exited" not in term.seen and "Traceback" not in term.seen, term.seen
    assert not left_behind(term.pid, tmp_path)
