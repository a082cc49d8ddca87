"""Capture the verifier's level-2 logs of the example and the test programs on a kernel
of the matrix, as the parser's fixtures (tests/fixtures/verifier_logs/NAME-KERNEL.log).

    $QSTEP_CACHE/venv/bin/python scripts/capture_verifier_logs.py 7.2
    $QSTEP_CACHE/venv/bin/python scripts/capture_verifier_logs.py 6.1 --run ipv4_udp_to_v6real

The second form records one traced run of the example with that packet, with its log
and instructions, as tests/fixtures/verifier_logs/run-l4lb-PACKET-KERNEL.json (the
checks past pruning points are unit-tested on it).

Each program is compiled with clang-19 as the tests compile it and loaded by qstep
(the agent in a guest of that kernel) with the detailed log kept; a rejected program's
log (as qstep annotates it) is written as NAME-KERNEL.rejected.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from qstep.bpf.elf import BpfObject
from qstep.bpf.insn import encode
from qstep.debugger.engine import RunRequest
from qstep.debugger.trace import trace_run
from qstep.errors import VerifierError
from qstep.loadopts import LoadOptions
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet
from qstep.verifier.runcheck import runtime_steps

sys.path.insert(0, str(REPO_ROOT / "tests"))
from conftest import compile_bpf  # noqa: E402

PROGRAMS = {  # fixture name: (source, program)
    "l4lb": ("examples/l4lb/l4lb.bpf.c", "l4lb_ingress"),
    "calls": ("tests/progs/calls.bpf.c", "calls_main"),
    "maps": ("tests/progs/maps.bpf.c", "maps_main"),
    "alu_v4": ("tests/progs/alu_v4.bpf.c", "alu_v4_main"),
    "reject": ("tests/progs/reject.bpf.c", "reject_main"),
    "deadsub": ("tests/progs/deadsub.bpf.c", "lb_main"),  # a callee's exit pruned at return
    "flowsum": ("tests/progs/flowsum.bpf.c", "flowsum_main"),
    "vars": ("tests/progs/vars.bpf.c", "vars_main"),
}
OUT = REPO_ROOT / "tests" / "fixtures" / "verifier_logs"


def main(kernel: str) -> None:
    with tempfile.TemporaryDirectory() as build, Session(kernel=kernel) as session:
        for name, (source, prog_name) in PROGRAMS.items():
            obj = BpfObject.open(compile_bpf(REPO_ROOT / source, Path(build)))
            try:
                prog = session.load(obj, prog_name, LoadOptions(verifier_log_size=64 << 20))
            except VerifierError as err:
                (OUT / f"{name}-{kernel}.rejected").write_text(err.log + "\n")
                print(f"{name}: rejected, log kept")
                continue
            (OUT / f"{name}-{kernel}.log").write_text(prog.verifier_log)
            session.unload(prog)
            print(f"{name}: {len(prog.verifier_log.splitlines())} lines")


def capture_run(kernel: str, packet: str) -> None:
    example = REPO_ROOT / "examples" / "l4lb"
    with tempfile.TemporaryDirectory() as build, Session(kernel=kernel) as session:
        source, prog_name = PROGRAMS["l4lb"]
        obj = BpfObject.open(compile_bpf(REPO_ROOT / source, Path(build)))
        prog = session.load(obj, prog_name, LoadOptions(verifier_log_size=64 << 20))
        for entry in read_map_file(example / "maps.txt"):
            key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
            session.update_map(prog, entry.map_name, key, value)
        request = RunRequest(read_packet(str(example / "packets" / f"{packet}.hex")))
        with session.debugger(prog, request) as dbg:
            steps = list(runtime_steps(trace_run(dbg)))
        session.unload(prog)
    run = {"kernel": kernel, "packet": packet, "log": prog.verifier_log,
           "insns": b"".join(encode(i) for i in prog.insns).hex(),
           "steps": [[insn, list(regs), list(shown)] for insn, regs, shown in steps]}
    (OUT / f"run-l4lb-{packet}-{kernel}.json").write_text(json.dumps(run) + "\n")
    print(f"{packet}: {len(steps)} steps")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[2] == "--run":
        capture_run(sys.argv[1], sys.argv[3])
    else:
        main(sys.argv[1])
