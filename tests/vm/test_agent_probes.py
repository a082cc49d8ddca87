"""The agent's probe verbs (docs/probes.md) in the guest: hardware breakpoints at
JIT addresses, data watchpoints, kprobes, counters and the ring buffer.

The probes are assembled here by hand (qstep.bpf.asm), so these tests depend
on the agent and the kernel only, not on the probe code generator.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qstep.bpf import asm
from qstep.bpf.elf import BpfObject
from qstep.errors import QstepError
from qstep.loaded import InsnSite, LoadedProgram
from qstep.session import Session

pytestmark = pytest.mark.vm

HW_X, HW_W = 4, 2
RINGBUF_BYTES = 1 << 16
NO_SLOT = "no free hardware breakpoint slot (x86 has 4 debug registers)"
RUNS = 5
PACKET = bytes(range(64))

# bpf_perf_event_data: pt_regs (docs/probes.md), sample_period, addr
PT_REGS = {"r15": 0, "r14": 8, "r13": 16, "r12": 24, "rbp": 32, "rbx": 40, "r11": 48,
           "r10": 56, "r9": 64, "r8": 72, "rax": 80, "rcx": 88, "rdx": 96, "rsi": 104,
           "rdi": 112, "rip": 128, "rsp": 152}
CTX_ADDR = 176
BPF_REG_IN = ["rax", "rdi", "rsi", "rdx", "rcx", "r8", "rbx", "r13", "r14", "r15", "rbp"]

MOV, ADD, JEQ = 0xB0, 0x00, 0x10
MAP_LOOKUP_ELEM, RINGBUF_OUTPUT = 1, 130
EVENTS, COUNTERS = 0, 1  # indexes into map_refs


def counting_probe(probe_id: int, ctx_fields: tuple[int, ...] = ()) -> bytes:
    """counters[8 * probe_id] += 1 (k = 0: reached), then a ring buffer record
    {u32 probe_id, u32 flags = 0, u64 hit = that counter, one u64 per ctx offset}.
    map_refs = [events, counters]."""
    size = 16 + 8 * len(ctx_fields)
    rec = -size  # the record on the stack; the key right below it
    head = [
        asm.alu64(MOV, 6, 1),  # r6 = ctx
        asm.ldimm64(1, COUNTERS, src=1),
        asm.st(4, 10, rec - 4, 8 * probe_id),
        asm.alu64(MOV, 2, 10),
        asm.alu64(ADD, 2, imm=rec - 4),
        asm.call(MAP_LOOKUP_ELEM),
    ]
    body = [
        asm.alu64(MOV, 1, imm=1),
        asm.atomic(8, 0, 1, 0, 0x00),  # lock *(u64 *)(r0 + 0) += r1
        asm.ldx(8, 7, 0),
        asm.st(4, 10, rec, probe_id),
        asm.st(4, 10, rec + 4, 0),
        asm.stx(8, 10, 7, rec + 8),
    ]
    for i, off in enumerate(ctx_fields):
        body += [asm.ldx(8, 1, 6, off), asm.stx(8, 10, 1, rec + 16 + 8 * i)]
    body += [
        asm.ldimm64(1, EVENTS, src=1),
        asm.alu64(MOV, 2, 10),
        asm.alu64(ADD, 2, imm=rec),
        asm.alu64(MOV, 3, imm=size),
        asm.alu64(MOV, 4, imm=0),
        asm.call(RINGBUF_OUTPUT),
    ]
    skip = sum(i.size for i in body)
    tail = [asm.alu64(MOV, 0, imm=0), asm.exit_()]
    return asm.to_bytes(asm.assemble([*head, asm.jmp(JEQ, 0, imm=0, off=skip), *body, *tail]))


def u64s(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 8}Q", blob))


class Probes:
    """The agent's probe maps, and every probe a test attaches (detached at the end)."""

    def __init__(self, vm: Session) -> None:
        self.vm = vm
        channel = vm.probe_setup(RINGBUF_BYTES)
        self.events_id, self.counters_id = channel.events_map_id, channel.counters_map_id
        self.refs = struct.pack("<2I", self.events_id, self.counters_id)
        self.handles: list[int] = []
        self.drain()  # leftovers of earlier tests

    def attach(self, probe_id: int, addr: int, code: bytes, bp_type: int = HW_X,
               bp_len: int = 8, mode: str = "hw") -> str:
        """Attach; return how (kprobe / hw_breakpoint)."""
        attached = self.vm.probe_attach(probe_id, addr, code, self.refs, bp_type, bp_len, mode)
        self.handles.append(attached.handle)
        return attached.attached

    def detach(self, handle: int) -> None:
        self.vm.probe_detach(handle)
        self.handles.remove(handle)

    def drain(self) -> list[bytes]:
        drained = self.vm.probe_drain()
        assert drained.lost == 0
        return drained.records

    def counter(self, probe_id: int, k: int = 0) -> int:
        entries = dict(self.vm.dump_map_id(self.counters_id).entries)
        assert len(entries) == 512
        return u64s(entries[struct.pack("<I", 8 * probe_id + k)])[0]

    def close(self) -> None:
        for handle in list(self.handles):
            self.detach(handle)


@pytest.fixture
def probes(vm: Session) -> Iterator[Probes]:
    p = Probes(vm)
    yield p
    p.close()


@pytest.fixture(scope="module")
def calls(vm: Session, bpf_obj: Callable[[str], Path]) -> Iterator[LoadedProgram]:
    prog = vm.load(BpfObject.open(bpf_obj("tests/progs/calls.bpf.c")), "calls_main")
    yield prog
    vm.unload(prog)


@pytest.fixture(scope="module")
def maps(vm: Session, bpf_obj: Callable[[str], Path]) -> Iterator[LoadedProgram]:
    prog = vm.load(BpfObject.open(bpf_obj("tests/progs/maps.bpf.c")), "maps_main")
    yield prog
    vm.unload(prog)


def jit_start(site: InsnSite) -> int:
    assert site.jit_start is not None
    return site.jit_start


def test_execute_breakpoint_counts_and_records(vm: Session, calls: LoadedProgram,
                                               probes: Probes) -> None:
    before = probes.counter(2)
    assert probes.attach(2, jit_start(calls.sites[2]), counting_probe(2), mode="auto") \
        == "hw_breakpoint"
    assert vm.test_run(calls, PACKET, repeat=RUNS).retval == 393
    assert probes.counter(2) - before == RUNS
    records = [struct.unpack("<IIQ", r) for r in probes.drain()]
    assert records == [(2, 0, before + n) for n in range(1, RUNS + 1)]
    assert probes.drain() == []


def test_probe_sees_the_interrupted_registers(vm: Session, calls: LoadedProgram,
                                              probes: Probes) -> None:
    """At insn 2 of calls_main (r1 = r7): r6 = data_end, r7 = data (rbx, r13)."""
    site = calls.sites[2]
    fields = ("rip", "rbx", "r13", "rbp", "rsp")
    probes.attach(3, jit_start(site), counting_probe(3, tuple(PT_REGS[f] for f in fields)))
    vm.test_run(calls, PACKET)
    (rec,) = probes.drain()
    regs = dict(zip(fields, u64s(rec[16:]), strict=True))
    assert regs["rip"] == site.jit_start  # an execute breakpoint: before the instruction
    assert regs["rbx"] - regs["r13"] == len(PACKET)
    assert regs["rsp"] < regs["rbp"] < regs["rsp"] + 4096  # the program's frame


def test_fifth_hardware_probe_is_refused(vm: Session, calls: LoadedProgram,
                                         probes: Probes) -> None:
    addrs = [jit_start(calls.sites[i]) for i in (0, 1, 2, 3, 5)]
    for p, addr in enumerate(addrs[:4]):
        assert probes.attach(10 + p, addr, counting_probe(10 + p)) == "hw_breakpoint"
    with pytest.raises(QstepError, match=f"^{re.escape(NO_SLOT)}$"):
        probes.attach(14, addrs[4], counting_probe(14))
    vm.test_run(calls, PACKET)
    assert sorted(struct.unpack_from("<I", r)[0] for r in probes.drain()) == [10, 11, 12, 13]

    probes.detach(probes.handles[0])  # frees a debug register
    probes.attach(14, addrs[4], counting_probe(14))
    vm.test_run(calls, PACKET)
    assert sorted(struct.unpack_from("<I", r)[0] for r in probes.drain()) == [11, 12, 13, 14]


def bss_site(prog: LoadedProgram) -> tuple[InsnSite, InsnSite]:
    """The ld_imm64 of the .bss value in maps_main, and the next live instruction."""
    (ld,) = [s for s in prog.sites.values() if s.insn.size == 2 and s.insn.src == 2
             and s.source is not None and "bss_packets" in s.source.text]
    after = min((s for s in prog.sites.values() if s.index > ld.index and not s.removed),
                key=lambda s: s.index)
    return ld, after


def test_write_watchpoint_on_a_global(vm: Session, maps: LoadedProgram,
                                      probes: Probes) -> None:
    # The address of bss_packets: what the ld_imm64 left in its register, as the
    # probe at the next instruction sees it; the JIT's movabs holds the same.
    ld, after = bss_site(maps)
    reg = PT_REGS[BPF_REG_IN[ld.insn.dst]]
    probes.attach(20, jit_start(after), counting_probe(20, (reg,)))
    vm.test_run(maps, bytes(60))
    (rec,) = probes.drain()
    (addr,) = u64s(rec[16:])
    movabs = maps.jit_bytes(jit_start(ld), jit_start(ld) + 10)
    assert movabs[0] in (0x48, 0x49) and 0xB8 <= movabs[1] <= 0xBF
    assert addr == u64s(movabs[2:])[0]
    probes.detach(probes.handles[-1])

    before = vm.dump_map(maps, ".bss")[0][1]
    assert probes.attach(21, addr, counting_probe(21, (CTX_ADDR, PT_REGS["rip"])),
                         bp_type=HW_W, bp_len=8, mode="auto") == "hw_breakpoint"
    vm.test_run(maps, bytes(60), repeat=RUNS)
    records = [struct.unpack("<IIQQQ", r) for r in probes.drain()]
    assert [r[:4] for r in records] == [(21, 0, n, addr) for n in range(1, RUNS + 1)]
    # a data breakpoint traps after the write: rip is past the store instruction
    store = next(s for s in maps.sites.values() if s.index > ld.index and s.insn.cls == 0x03)
    assert {r[4] for r in records} == {store.jit_end}
    after_runs = vm.dump_map(maps, ".bss")[0][1]
    assert u64s(after_runs)[0] - u64s(before)[0] == RUNS


def test_kprobe_mode(vm: Session, calls: LoadedProgram, probes: Probes) -> None:
    """No kprobe in JIT code on a stock kernel; elsewhere a kprobe runs the probe."""
    addr = jit_start(calls.sites[2])
    with pytest.raises(QstepError) as err:
        probes.attach(30, addr, counting_probe(30), mode="kprobe")
    assert str(err.value) == (
        f"kprobe at {addr:#x}: perf_event_open: Invalid argument "
        "(the kernel refuses kprobes in BPF JIT code; use mode hw)")

    # A kernel function the test run goes through once per request.
    func = vm.kallsyms("bpf_prog_test_run_xdp")
    assert probes.attach(30, func, counting_probe(30), mode="kprobe") == "kprobe"
    vm.test_run(calls, PACKET, repeat=RUNS)
    assert [struct.unpack("<IIQ", r)[:2] for r in probes.drain()] == [(30, 0)]
    # a kprobe's context is pt_regs only: a probe reading addr loads as perf_event
    # but not as a kprobe; auto mode then falls back to a hardware breakpoint
    with pytest.raises(QstepError, match="loading the probe as a kprobe program"):
        probes.attach(31, func, counting_probe(31, (CTX_ADDR,)), mode="kprobe")
    assert probes.attach(31, func, counting_probe(31, (CTX_ADDR,)), mode="auto") \
        == "hw_breakpoint"
