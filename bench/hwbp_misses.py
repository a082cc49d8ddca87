"""Missed hardware-breakpoint hits under TCG, and their cause, counted in one run.

One in-guest probe on the example (printing nothing the ring could drop), run N
times in batches; the recorder plugin counts every execution of the probed
instruction and logs what was delivered there before it (qstep/recorder/hits.py).
Prints executions, probe hits, misses, the misses that followed an interrupt which
returned with RF=1 (QEMU >= 9.1's pushed-RF behaviour) and the unexplained rest.

Usage: python bench/hwbp_misses.py [--kernel 6.1] [--runs 1000000] [--batch 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.session import Session
from qstep.userinput import read_packet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_rate import EXAMPLE, load_example  # noqa: E402

SPEC = "l4lb.bpf.c:144 if $r0 == 0 print $r0"  # reached once per run, never true


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    args = parser.parse_args()
    packet = read_packet(str(EXAMPLE / "packets" / "ipv4_to_v4real.hex"))
    start = time.monotonic()
    with Session(kernel=args.kernel) as session:
        prog = load_example(session)
        inspector = Inspector(session, prog, parse_specs([SPEC]))
        if not inspector.count_in_emulator:
            sys.exit("needs the recorder plugin (QEMU 10; unset QSTEP_QEMU)")
        inspector.attach()
        try:
            for done in range(0, args.runs, args.batch):
                inspector.run([packet], min(args.batch, args.runs - done), sample=True)
        finally:
            inspector.detach()
    probe = inspector.probes[0]
    executed, reached = probe.executed or 0, probe.counters.reached
    interrupted = probe.interrupted
    print(f"{args.runs} runs of the example, one probe ({args.kernel}, TCG), "
          f"{time.monotonic() - start:.0f} s")
    print(f"executed {executed}  breakpoint hits {reached}  missed {probe.missed} "
          f"({probe.missed / max(executed, 1) * 1e6:.1f} per 10^6)")
    if interrupted is None:
        print("no vector records (the guest's kallsyms lacks idt_table)")
        return
    print(f"missed right after an interrupt that returned with RF=1: {interrupted}  "
          f"unexplained: {probe.missed - interrupted}")


if __name__ == "__main__":
    main()
