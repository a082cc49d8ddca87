"""Nothing dropped: 1 M probe hits printed, kept by batching vs sampled, in one run.

The in-guest probe prints on every run of the example; the runs go
- batched (the default of `qstep inspect`): in batches the ring buffer holds,
  drained between them, so no record is dropped;
- sampled (`--sample`): all at once, so the ring buffer drops what does not fit.
Prints, for each, the wall time, records printed and dropped, and hits per second.

Usage: python bench/probe_drain.py [--kernel 6.1] [--hits 1000000]
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

SPEC = "l4lb.bpf.c:144 print $r0"  # after the VIP lookup: once per run of this packet


def measure(session: Session, prog: object, packet: bytes, hits: int,
            sample: bool) -> tuple[float, int, int, int]:
    """(seconds, reached, printed, dropped) for ``hits`` runs."""
    inspector = Inspector(session, prog, parse_specs([SPEC]))  # type: ignore[arg-type]
    inspector.attach()
    start = time.monotonic()
    try:
        inspector.run([packet], hits, sample=sample)
    finally:
        inspector.detach()
    elapsed = time.monotonic() - start
    c = inspector.probes[0].counters
    return elapsed, c.reached, len(inspector.hits), c.dropped + inspector.lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--hits", type=int, default=1_000_000)
    args = parser.parse_args()
    packet = read_packet(str(EXAMPLE / "packets" / "ipv4_to_v4real.hex"))
    with Session(kernel=args.kernel) as session:
        prog = load_example(session)
        rows = [("batched (default)", *measure(session, prog, packet, args.hits, False)),
                ("sampled (--sample)", *measure(session, prog, packet, args.hits, True))]
    print(f"{args.hits} runs of the example, one probe printing on each ({args.kernel}, TCG)")
    for name, secs, reached, printed, dropped in rows:
        print(f"{name:20} {secs:7.1f} s  reached {reached}  printed {printed}  "
              f"dropped {dropped}  {printed / secs:9.0f} printed hits/s")
    print(f"batched / sampled wall time: {rows[0][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
