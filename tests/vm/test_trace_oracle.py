"""Lockstep check of qstep's stepping against a reference BPF interpreter.

For every BPF instruction of a real run, the oracle (qstep.oracle, RFC 9669
semantics) computes the state after the instruction from the state before it:
the xlated instructions the kernel really JIT-compiled for it, memory read from
the stopped guest, ld_imm64 constants taken from the JIT's x86 code, helper
results left unknown. qstep then steps the real program and the registers,
memory writes and next instruction it reports must agree exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import capstone
import pytest

from qstep.bpf.elf import BpfObject
from qstep.bpf.insn import Insn
from qstep.debugger.engine import Debugger, RunRequest
from qstep.listing import xlated_span
from qstep.loaded import InsnSite, LoadedProgram
from qstep.oracle import MemWrite, step
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.target import open_target
from qstep.userinput import encode_entry, read_map_file, read_packet

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PROGS = json.loads((REPO_ROOT / "tests/progs/expected.json").read_text())
CASES = [
    ("6.1", "examples/l4lb/l4lb.bpf.c", "l4lb_ingress", str(EXAMPLE / "packets" / f"{p}.hex"),
     True)
    for p in ("ipv4_to_v4real", "ipv6_to_v6real", "ctl_lookup_fail", "ipv4_udp_to_v6real")
] + [
    ("6.1", f"tests/progs/{name}.bpf.c", PROGS[name]["program"], case["input_hex"], False)
    for name in ("calls", "alu", "maps")
    for case in PROGS[name]["cases"][:2]
]
# 6.12: ISA v4 (sign extension, signed division, bswap) and another JIT prologue.
STEPPING_612 = [
    ("6.12", "tests/progs/alu_v4.bpf.c", "alu_v4_main", case["input_hex"], False)
    for case in PROGS["alu_v4"]["cases"][:2]
] + [("6.12", "examples/l4lb/l4lb.bpf.c", "l4lb_ingress",
      str(EXAMPLE / "packets" / "ipv6_to_v6real.hex"), True)]
CASES += STEPPING_612
M64 = (1 << 64) - 1


@dataclass
class Expect:
    regs: list[int]
    unknown: set[int]
    writes: list[MemWrite] = field(default_factory=list)
    next_insn: int | None = None
    call_target: int | None = None
    exits: bool = False


def _imm_loads(prog: LoadedProgram, site: InsnSite) -> Iterator[int]:
    """Immediate values the JIT loads into registers in this instruction's x86 code."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    code = prog.jit_bytes(site.jit_start or 0, site.jit_end or 0)
    for ins in md.disasm(code, site.jit_start or 0):
        ops = ins.operands
        if ins.mnemonic in ("mov", "movabs") and len(ops) == 2 and \
                ops[1].type == capstone.x86.X86_OP_IMM and ops[0].type == capstone.x86.X86_OP_REG:
            yield ops[1].imm & (M64 if ops[0].size == 8 else 0xFFFFFFFF)


class Oracle:
    """Runs the xlated span of one original instruction."""

    def __init__(self, prog: LoadedProgram, read: Callable[[int, int], bytes]) -> None:
        self.prog = prog
        self.read_guest = read
        self.orig_of_xlated = {s.xlated_index: i for i, s in prog.sites.items()
                               if s.xlated_index is not None}

    def expect(self, site: InsnSite, regs: tuple[int, ...]) -> Expect:
        span = xlated_span(self.prog, site)
        by_index = {x.index: x for x in span}
        # Verifier patches may use BPF_REG_AX (r11, x86 r10 in the JIT) as a scratch
        # register inside the span; it is written before it is read.
        exp = Expect([*regs, 0], set())
        overlay: dict[int, int] = {}
        imms = iter(_imm_loads(self.prog, site))

        def read(addr: int, size: int) -> bytes:
            data = bytearray(self.read_guest(addr, size))
            for i in range(size):
                if addr + i in overlay:
                    data[i] = overlay[addr + i]
            return bytes(data)

        def ldimm64(_insn: Insn) -> int:
            return next(imms)

        pc = span[0].index
        while pc in by_index:
            eff = step(by_index[pc], exp.regs, read, ldimm64)
            exp.regs = list(eff.regs)
            exp.unknown |= set(eff.unknown)
            for w in eff.writes:
                exp.writes.append(w)
                overlay.update({w.addr + i: b for i, b in enumerate(w.value)})
            if eff.kind == "call_bpf":
                # The kernel rewrites a JIT-ed pseudo call's imm (6.1: the subprogram
                # number), so the target comes from the original relative offset.
                exp.call_target = site.insn.call_target
                return exp
            if eff.kind == "exit":
                exp.exits = True
                return exp
            assert eff.next_pc is not None
            pc = eff.next_pc
        exp.next_insn = self.orig_of_xlated[pc]
        return exp


def _setup(vm: Session, obj_path: Path, name: str, with_maps: bool) -> LoadedProgram:
    prog = vm.load(BpfObject.open(obj_path), name)
    if with_maps:
        for entry in read_map_file(EXAMPLE / "maps.txt"):
            key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
            vm.update_map(prog, entry.map_name, key, value)
    return prog


@pytest.mark.parametrize("kernel, source, name, packet, with_maps", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_every_instruction_agrees_with_the_oracle(
        request: pytest.FixtureRequest, bpf_obj: Callable[[str], Path], kernel: str,
        source: str, name: str, packet: str, with_maps: bool) -> None:
    vm: Session = request.getfixturevalue("vm" if kernel == "6.1" else "vm612")
    prog = _setup(vm, bpf_obj(source), name, with_maps)
    assert vm.machine is not None and vm.machine.config is not None and vm.agent is not None
    try:
        with open_target("rsp", vm.machine.config.gdb_socket) as target:
            dbg = Debugger(prog, target, vm.agent, RunRequest(read_packet(packet)))
            try:
                checked = lockstep(dbg)
            finally:
                dbg.detach()
        assert checked > 10
    finally:
        vm.unload(prog)


def lockstep(dbg: Debugger) -> int:
    prog = dbg.prog
    oracle = Oracle(prog, dbg.read_memory)
    dbg.add_breakpoint(f"#{prog.functions[0].start_insn}", temporary=True)
    event = dbg.run()
    frames: list[tuple[int, ...]] = []  # caller registers at each bpf-to-bpf call
    checked = 0
    while event.kind == "stopped":
        site = event.site
        assert site is not None
        before = dbg.regs().values
        exp = oracle.expect(site, before)
        event = dbg.stepi()
        where = f"insn {site.index} ({site.function.name})"
        if exp.exits and not frames:
            assert event.kind == "exited", where
            assert event.retval == exp.regs[0] & 0xFFFFFFFF, where
            break
        assert event.kind == "stopped" and event.site is not None, where
        after = dbg.regs().values
        if exp.call_target is not None:
            assert event.site.index == exp.call_target, where
            frames.append(before)
            unknown = {10}
        elif exp.exits:
            caller = frames.pop()
            exp.regs = [exp.regs[0], *caller[1:]]
            unknown = {1, 2, 3, 4, 5}
        else:
            assert event.site.index == exp.next_insn, where
            unknown = exp.unknown
        for n in range(11):
            if n not in unknown:
                assert after[n] == exp.regs[n], f"{where}: r{n} is {after[n]:#x}, " \
                                                 f"oracle says {exp.regs[n]:#x}"
        for w in exp.writes:
            assert dbg.read_memory(w.addr, w.size) == w.value, f"{where}: write at {w.addr:#x}"
        checked += 1
    return checked
