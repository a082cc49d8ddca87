"""Bad input and misbehaving guests end with one clear message; QEMU never outlives its owner."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.errors import GuestError, VerifierError
from qstep.images.guest import build_initramfs
from qstep.images.kernels import resolve_kernel
from qstep.session import Session
from qstep.vm.machine import Machine, process_exists

pytestmark = pytest.mark.vm

QSTEP = [sys.executable, "-m", "qstep.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QSTEP, *args], capture_output=True, text=True, timeout=600)


def test_verifier_rejection_yields_the_log_with_real_source_lines(
        vm: Session, bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("tests/progs/reject.bpf.c"))
    with pytest.raises(VerifierError) as info:
        vm.load(obj, "reject_main")
    log = info.value.log
    assert "invalid access to packet, off=23 size=1" in log
    lines = log.splitlines()
    insn6 = next(i for i, ln in enumerate(lines) if ln.startswith("6: (71) r0 = *(u8 *)(r1 +23)"))
    assert lines[insn6 - 1].startswith("; return iph->protocol;")
    assert lines[insn6 - 1].endswith("@ reject.bpf.c:29")
    assert "invalid access to packet" in str(info.value).splitlines()[0]
    # libbpf's own words come with it (the log it repeats is left out)
    assert "  libbpf: prog 'reject_main': BPF program load failed: Permission denied" in (
        str(info.value).splitlines()[1:4])
    assert str(info.value).count("-- BEGIN PROG LOAD LOG --") == 0
    # The guest is still usable after a rejection.
    assert vm.kallsyms("bpf_prog_test_run_skb") > 0


def test_cli_verifier_rejection_exits_nonzero_without_traceback(
        bpf_obj: Callable[[str], Path]) -> None:
    proc = run_cli("run", str(bpf_obj("tests/progs/reject.bpf.c")), "--packet", "00" * 64)
    assert proc.returncode == 1
    assert "the verifier rejected reject_main" in proc.stderr
    assert "@ reject.bpf.c:29" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "/nonexistent.o", "--packet", "00"], "/nonexistent.o"),
    (["run", "/etc/passwd", "--packet", "00"], "not an ELF"),
    (["run", "/bin/true", "--packet", "00"], "not BPF (EM_BPF = 247)"),
    (["run", "{l4lb}", "--prog", "nope", "--packet", "00"], "no program 'nope'; available: "
     "l4lb_ingress (tc)"),
    (["run", "{l4lb}", "--packet", "zz"], "--packet"),
    (["run", "{l4lb}", "--packet", "00" * 60, "--map", "stats", "1={packets: x}"],
     "map stats value"),
    (["run", "{l4lb}", "--packet", "00" * 60, "--map", "nomap", "1=2"], "unknown map 'nomap'"),
    (["run", "{l4lb}", "--packet", "00" * 60, "--map", "stats", "99999999999=1"], "map stats key"),
    (["disasm", "{l4lb}", "--kernel", "9.99"], "unknown kernel '9.99'"),
])
def test_bad_input_gives_one_clear_error(args: list[str], message: str, l4lb_obj: Path) -> None:
    proc = run_cli(*(a.replace("{l4lb}", str(l4lb_obj)) for a in args))
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("qstep: ")


PACKET = "00" * 64


@pytest.mark.parametrize("argv", [
    ["disasm", "{obj}"], ["run", "{obj}", "--packet", PACKET],
    ["debug", "{obj}", "--packet", PACKET], ["trace", "{obj}", "--packet", PACKET],
    ["inspect", "{obj}", "process_packet print $r1", "--packet", PACKET],
    ["why", "{obj}", "$r10 at process_packet", "--packet", PACKET],
])
def test_print_cmd_shows_qemu_without_booting(l4lb_obj: Path, argv: list[str]) -> None:
    proc = run_cli(*(a.replace("{obj}", str(l4lb_obj)) for a in argv), "--print-cmd")
    assert proc.returncode == 0
    argv = shlex.split(proc.stdout)
    qemu = next(a for a in argv if "=" not in a)
    assert qemu.endswith("/usr/bin/qemu-system-x86_64") and "-accel tcg" in proc.stdout
    env = {k: v for k, v in (a.split("=", 1) for a in argv[:argv.index(qemu)])}
    assert Path(qemu).is_file() and Path(env["QEMU_MODULE_DIR"]).is_dir()
    assert "qstep-recorder.so,ctl=" in proc.stdout


def _machine(*extra: str) -> Machine:
    kernel = resolve_kernel(os.environ.get("QSTEP_TEST_KERNEL", "6.1"))
    return Machine(kernel.bzimage, build_initramfs(), append_extra=extra)


def test_qemu_is_gone_after_the_body_raises() -> None:
    machine = _machine()
    with pytest.raises(RuntimeError), machine:
        pid = machine.pid
        assert pid is not None and process_exists(pid)
        raise RuntimeError("test body failed")
    assert not process_exists(pid)


def test_guest_panic_ends_quickly_with_the_console_tail() -> None:
    # An init that does not exist: the kernel panics ("No working init found").
    session = Session()
    session.prepare()
    assert session.machine is not None
    session.machine = _machine("rdinit=/nonexistent", "init=/nonexistent")
    start = time.monotonic()
    with pytest.raises(GuestError) as info, session:
        pass
    assert time.monotonic() - start < 60
    assert "Kernel panic" in str(info.value)
    assert info.value.console_tail


def test_guest_that_never_becomes_ready_ends_at_the_boot_timeout() -> None:
    # init is a shell waiting on the console: the kernel runs, the agent never starts.
    session = Session(boot_timeout=15)
    session.prepare()
    session.machine = _machine("rdinit=/bin/sh")
    start = time.monotonic()
    with pytest.raises(GuestError) as info, session:
        pass
    assert 15 <= time.monotonic() - start < 45
    assert "timed out waiting for the agent to start" in str(info.value)
    assert session.machine.pid is not None and not process_exists(session.machine.pid)


def test_qemu_dying_mid_debug_session_is_a_clear_error_and_nothing_is_left(
        l4lb_obj: Path) -> None:
    import signal

    from qstep.debugger.engine import RunRequest
    from qstep.errors import QstepError

    with Session() as session:
        prog = session.load(BpfObject.open(l4lb_obj), "l4lb_ingress")
        assert session.machine is not None
        pid = session.machine.pid
        assert pid is not None
        with pytest.raises(QstepError) as info, \
                session.debugger(prog, RunRequest(bytes(64))) as dbg:
            dbg.add_breakpoint("l4lb_ingress")
            assert dbg.run().kind == "stopped"
            os.kill(pid, signal.SIGKILL)
            dbg.stepi()
        assert "Traceback" not in str(info.value)
        assert isinstance(info.value, GuestError)
    assert not process_exists(pid)
    assert not process_exists(pid)


def test_a_long_tmpdir_does_not_break_the_sockets(l4lb_obj: Path, tmp_path: Path) -> None:
    """A TMPDIR too long for unix socket paths (sun_path: 107 bytes) once made QEMU
    exit with status 1; the VM directory then goes to /tmp."""
    long_tmp = tmp_path / ("d" * (120 - len(str(tmp_path))))
    long_tmp.mkdir()
    packet = Path(__file__).resolve().parents[2] / "examples/l4lb/packets/ipv4_to_v4real.hex"
    out = subprocess.run([*QSTEP, "run", str(l4lb_obj), "--prog", "l4lb_ingress", "--maps",
                          "examples/l4lb/maps.txt", "--packet", str(packet)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TMPDIR": str(long_tmp)},
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert "retval    7 (TC_ACT_REDIRECT)" in out.stdout
