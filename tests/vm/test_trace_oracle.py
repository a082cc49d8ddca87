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

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import RunRequest
from qstep.loaded import LoadedProgram
from qstep.oracle.lockstep import lockstep
from qstep.paths import REPO_ROOT
from qstep.session import Session
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
    try:
        with vm.debugger(prog, RunRequest(read_packet(packet))) as dbg:
            report = lockstep(dbg)
        assert report.divergence is None, report.divergence
        assert report.checked > 10
    finally:
        vm.unload(prog)
