"""The target layer on a real guest, both backends: breakpoints, steps, memory, watchpoints.

Every VM test opens and closes its own target; closing detaches, which removes
all breakpoints and lets the shared VM run again. The first tests check the
protocol codec without a VM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import capstone
import pytest

from qstep.agent.replies import RunResult
from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import RunRequest
from qstep.listing import map_namer
from qstep.loaded import InsnSite, LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.target import KINDS, Stop, Target, TargetError
from qstep.target.base import KERNEL_BASE
from qstep.target.gdbmi import GdbMiTarget
from qstep.userinput import encode_entry, read_map_file, read_packet
from qstep.vm.machine import process_exists

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PACKET = read_packet(str(EXAMPLE / "packets" / "ipv4_to_v4real.hex"))
RETVAL = 7  # TC_ACT_REDIRECT for ipv4_to_v4real
_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


# -- on the guest -------------------------------------------------------
@pytest.fixture(scope="module")
def l4lb(vm: Session, l4lb_obj: Path) -> Iterator[LoadedProgram]:
    """l4lb loaded once for this module, maps filled from maps.txt."""
    prog = vm.load(BpfObject.open(l4lb_obj), "l4lb_ingress")
    for entry in read_map_file(EXAMPLE / "maps.txt"):
        key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
        vm.update_map(prog, entry.map_name, key, value)
    yield prog
    vm.unload(prog)


@dataclass
class Run:
    """A BPF_PROG_TEST_RUN in flight and the target stopped inside it."""

    vm: Session
    target: Target
    seq: int
    stop: Stop
    reply: RunResult | None = None

    def finish(self) -> RunResult:
        """The run's result (the VM must be running)."""
        deadline = time.monotonic() + 60
        while self.reply is None and time.monotonic() < deadline:
            self.reply = self.vm.poll_run(self.seq, 1.0)
        assert self.reply is not None, "the test run did not finish"
        return self.reply


@contextlib.contextmanager
def run_stopped_at(vm: Session, prog: LoadedProgram, kind: str, addr: int) -> Iterator[Run]:
    """A target stopped at a breakpoint ``addr`` during a test run; on exit the
    target is closed (VM running, no breakpoints) and the run has finished."""
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(vm.target(kind))
        target.set_breakpoint(addr)
        target.resume()
        seq = vm.start_run(prog, RunRequest(PACKET))
        stop = target.wait(30)
        assert stop is not None, "the breakpoint was not hit"
        run = Run(vm, target, seq, stop)
        stack.callback(run.finish)
        stack.callback(target.close)
        yield run


def first_x86_len(prog: LoadedProgram, addr: int) -> int:
    insn = next(_CS.disasm(prog.jit_bytes(addr, addr + 16), addr))
    return int(insn.size)


def points_at_packet(target: Target, skb: int) -> bool:
    """True if some pointer in the first 256 bytes at ``skb`` leads to the packet."""
    raw = target.read_memory(skb, 256)
    for (value,) in struct.iter_unpack("<Q", raw):
        if value < KERNEL_BASE:
            continue
        with contextlib.suppress(TargetError):
            if target.read_memory(value, 14) == PACKET[:14]:
                return True
    return False


@pytest.mark.vm
@pytest.mark.parametrize("kind", KINDS)
def test_break_step_and_continue_through_a_run(vm: Session, l4lb: LoadedProgram,
                                               kind: str) -> None:
    entry, sub = l4lb.functions[0], l4lb.function_named("process_packet")
    assert sub is not None
    with run_stopped_at(vm, l4lb, kind, entry.addr) as run:
        target = run.target
        assert run.stop == Stop("breakpoint", entry.addr)
        regs = target.registers()
        assert regs.rip == entry.addr
        assert regs.rdi >= KERNEL_BASE and points_at_packet(target, regs.rdi)
        end = entry.addr + entry.length
        assert target.read_memory(entry.addr, entry.length) == l4lb.jit_bytes(entry.addr, end)
        step = target.step()
        assert step == Stop("step", entry.addr + first_x86_len(l4lb, entry.addr))
        assert target.registers().rip == step.pc
        target.set_breakpoint(sub.addr)
        target.resume()
        assert target.wait(30) == Stop("breakpoint", sub.addr)
        target.clear_all()
        assert not target.breakpoints
        target.resume()
        assert run.finish().retval == RETVAL
        assert target.wait(0) is None and target.running


@pytest.mark.vm
@pytest.mark.parametrize("kind", KINDS)
def test_resume_steps_off_the_breakpoint_at_pc(vm: Session, l4lb: LoadedProgram,
                                               kind: str) -> None:
    entry, sub = l4lb.functions[0], l4lb.function_named("process_packet")
    assert sub is not None
    with run_stopped_at(vm, l4lb, kind, entry.addr) as run:
        target = run.target
        target.set_breakpoint(sub.addr, hardware=False)
        target.resume()  # the breakpoint at entry.addr stays set
        assert target.wait(30) == Stop("breakpoint", sub.addr)
        assert target.breakpoints == {(entry.addr, True), (sub.addr, False)}


@pytest.mark.vm
@pytest.mark.parametrize("kind", KINDS)
def test_interrupt_an_idle_guest(vm: Session, kind: str) -> None:
    with vm.target(kind) as target:
        assert not target.running
        target.resume()
        assert target.wait(0.2) is None
        stop = target.interrupt()
        assert stop.reason == "interrupt" and stop.pc >= KERNEL_BASE
        assert target.registers().rip == stop.pc
        assert target.interrupt() == stop  # already stopped: nothing to do
    assert vm.kallsyms("bpf_prog_test_run_skb") > 0  # the guest runs again
    if isinstance(target, GdbMiTarget):
        assert not process_exists(target.pid)


@pytest.mark.vm
def test_registers_are_identical_between_backends(vm: Session, l4lb: LoadedProgram) -> None:
    entry = l4lb.functions[0]
    with run_stopped_at(vm, l4lb, "rsp", entry.addr) as run:
        target = run.target
        seen = [target.registers()]
        stack = target.read_memory(seen[0].rsp, 64)
        target.clear_all()
        target.close(resume=False)  # the VM stays stopped at the same place
        for kind in ("gdb", "rsp"):
            with vm.target(kind) as other:
                seen.append(other.registers())
                assert other.read_memory(seen[0].rsp, 64) == stack
                other.close(resume=kind == "rsp")
    assert seen[0].rip == entry.addr
    assert seen[0] == seen[1] == seen[2]


@pytest.mark.vm
@pytest.mark.parametrize("kind", KINDS)
def test_large_read_equals_small_reads(vm: Session, kind: str) -> None:
    base = vm.kallsyms("bpf_prog_test_run_skb") & ~0xFFF
    with vm.target(kind) as target:
        whole = target.read_memory(base, 4096)
        parts = b"".join(target.read_memory(base + off, 100) for off in range(0, 4096, 100))
        assert len(whole) == 4096 and whole == parts[:4096]
        assert target.read_memory(base + 3, 1) == whole[3:4]


def stats_lookup_next(prog: LoadedProgram) -> InsnSite:
    """The instruction right after ``bpf_map_lookup_elem(&stats, ...)``: r0 = value."""
    sites = sorted((s for s in prog.sites.values() if not s.removed), key=lambda s: s.index)
    load = next(s for s in sites
                if s.insn.is_ldimm64 and map_namer(prog, s)(s.insn) == "stats")
    call = next(s for s in sites if s.index > load.index and s.insn.is_helper_call)
    return next(s for s in sites if s.index > call.index)


@pytest.mark.vm
@pytest.mark.parametrize("kind", KINDS)
def test_watchpoint_on_the_stats_value(vm: Session, l4lb: LoadedProgram, kind: str) -> None:
    site = stats_lookup_next(l4lb)
    assert site.jit_start is not None
    with run_stopped_at(vm, l4lb, kind, site.jit_start) as run:
        target = run.target
        assert run.stop == Stop("breakpoint", site.jit_start)
        value = target.registers().rax  # BPF r0
        assert value >= KERNEL_BASE
        packets = int.from_bytes(target.read_memory(value, 8), "little")
        target.clear_breakpoint(site.jit_start)
        target.set_watchpoint(value, 8, "write")
        target.resume()
        hit = target.wait(30)
        assert hit is not None and hit.reason == "watchpoint" and hit.watch_addr == value
        atomic = l4lb.site_at(hit.pc - 1)  # stops after the writing instruction
        assert atomic is not None and atomic.insn.mode == 0xC0  # BPF_ATOMIC
        assert int.from_bytes(target.read_memory(value, 8), "little") == packets + 1
        target.clear_watchpoint(value, 8, "write")
        assert not target.watchpoints


@pytest.mark.vm
def test_gdb_death_is_reported_and_reaped(vm: Session) -> None:
    try:
        with vm.target("gdb") as target:
            assert isinstance(target, GdbMiTarget)
            pid = target.pid
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(TargetError, match=rf"^gdb \(pid {pid}\) died \(killed by "
                                                  r"SIGKILL\) while reading 8 bytes at"):
                target.read_memory(KERNEL_BASE, 8)
            assert not process_exists(pid)
            with pytest.raises(TargetError, match="died"):
                target.step()
    finally:
        # gdb left QEMU's VM stopped: a new client detaches and the guest runs again.
        with vm.target("rsp") as again:
            assert not again.running
    assert vm.kallsyms("bpf_prog_test_run_skb") > 0
