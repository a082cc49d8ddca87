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
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import matrix_kernels

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import RunRequest
from qstep.loaded import LoadedProgram
from qstep.oracle.lockstep import lockstep
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PROGS = json.loads((REPO_ROOT / "tests/progs/expected.json").read_text())
L4LB = ("examples/l4lb/l4lb.bpf.c", "l4lb_ingress")


def _prog_cases(kernel: str, name: str, count: int = 2) -> list[tuple[str, ...]]:
    prog = PROGS[name]
    return [(kernel, f"tests/progs/{name}.bpf.c", prog["program"], case["input_hex"],
             case.get("ctx_hex", ""), "") for case in prog["cases"][:count]]


def _l4lb(kernel: str, packet: str) -> tuple[str, ...]:
    return (kernel, *L4LB, str(EXAMPLE / "packets" / f"{packet}.hex"), "", "maps")


# (kernel, source, program, packet, ctx hex, "maps" to fill the example's maps)
CASES = [_l4lb(k, p) for k in matrix_kernels("6.1")
         for p in ("ipv4_to_v4real", "ipv6_to_v6real", "ctl_lookup_fail", "ipv4_udp_to_v6real")]
CASES += [c for k in matrix_kernels("6.1") for n in ("calls", "alu", "maps")
          for c in _prog_cases(k, n)]
# Newer kernels: ISA v4 (sign extension, signed division, bswap), another JIT prologue,
# and from 6.13 a tracing program on a private stack (BPF r10 in x86 r9).
for k in [k for k in matrix_kernels() if k != "6.1"]:
    CASES += [*_prog_cases(k, "alu_v4"), _l4lb(k, "ipv6_to_v6real"),
              *_prog_cases(k, "calls", 1), *_prog_cases(k, "privstack")]


def _setup(vm: Session, obj_path: Path, name: str, with_maps: str) -> LoadedProgram:
    prog = vm.load(BpfObject.open(obj_path), name)
    if with_maps:
        for entry in read_map_file(EXAMPLE / "maps.txt"):
            key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
            vm.update_map(prog, entry.map_name, key, value)
    return prog


@pytest.mark.parametrize("kernel, source, name, packet, ctx, with_maps", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_every_instruction_agrees_with_the_oracle(
        guests: Callable[[str], Session], bpf_obj: Callable[[str], Path], kernel: str,
        source: str, name: str, packet: str, ctx: str, with_maps: str) -> None:
    vm = guests(kernel)
    prog = _setup(vm, bpf_obj(source), name, with_maps)
    # A tracing program runs without a packet, on its context, and only once.
    request = RunRequest(read_packet(packet), bytes.fromhex(ctx), 0) if ctx else \
        RunRequest(read_packet(packet))
    try:
        with vm.debugger(prog, request) as dbg:
            report = lockstep(dbg)
        assert report.divergence is None, report.divergence
        assert report.checked > 10
    finally:
        vm.unload(prog)
