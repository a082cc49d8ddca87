"""Capture the verifier's level-2 logs of the example and the test programs on a kernel
of the matrix, as the parser's fixtures (tests/fixtures/verifier_logs/NAME-KERNEL.log).

    $QSTEP_CACHE/venv/bin/python scripts/capture_verifier_logs.py 7.2

Each program is compiled with clang-19 as the tests compile it and loaded by qstep
(the agent in a guest of that kernel) with the detailed log kept; a rejected program's
log (as qstep annotates it) is written as NAME-KERNEL.rejected.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from qstep.bpf.elf import BpfObject
from qstep.errors import VerifierError
from qstep.loadopts import LoadOptions
from qstep.paths import REPO_ROOT
from qstep.session import Session

sys.path.insert(0, str(REPO_ROOT / "tests"))
from conftest import compile_bpf  # noqa: E402

PROGRAMS = {  # fixture name: (source, program)
    "l4lb": ("examples/l4lb/l4lb.bpf.c", "l4lb_ingress"),
    "calls": ("tests/progs/calls.bpf.c", "calls_main"),
    "maps": ("tests/progs/maps.bpf.c", "maps_main"),
    "alu_v4": ("tests/progs/alu_v4.bpf.c", "alu_v4_main"),
    "reject": ("tests/progs/reject.bpf.c", "reject_main"),
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


if __name__ == "__main__":
    main(sys.argv[1])
