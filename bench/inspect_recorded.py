"""Cost of inspect locations past the 4 debug registers: recording vs host breakpoints.

One guest, one run of this script. Four specs take the hardware breakpoints; more
locations are evaluated either at host gdb breakpoints (the fallback without the
recorder) or from a recording of each batch of runs. For a few extra locations
(2) and for many (16, each hit on every run), the script prints the wall time of
the whole inspect run both ways, their ratio, and checks that both ways produced
the same hits and counters.

Usage: python bench/inspect_recorded.py [--kernel 6.1] [--repeat 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from qstep.loaded import LoadedProgram
from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.session import Session
from qstep.userinput import read_packet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_rate import EXAMPLE, load_example  # noqa: E402

GUEST = [f"process_packet:{i} print $r1 if $r1 == 1" for i in range(1, 5)]
FEW = ["process_packet:10 print mem($r8, 16), $r9 if $r9 == 1",
       "process_packet print $r3 if $r3 == 1"]
MANY = [f"process_packet:{i} print $r4, $r3 if $r4 != 7" for i in [27, *range(30, 45)]]
PACKETS = ["ipv4_to_v4real", "ipv6_to_v6real"]


def timed(session: Session, prog: LoadedProgram, specs: list[str], packets: list[bytes],
          repeat: int, recording: str) -> tuple[float, Inspector]:
    inspector = Inspector(session, prog, parse_specs(specs), recording=recording)
    inspector.attach()
    try:
        start = time.perf_counter()
        inspector.run(packets, repeat)
        return time.perf_counter() - start, inspector
    finally:
        inspector.detach()


def outcome(ins: Inspector) -> tuple[object, ...]:
    extra = range(len(GUEST) + 1, len(ins.probes) + 1)
    return (sorted((h.probe.number, h.run, h.hit, repr(h.values)) for h in ins.hits
                   if h.probe.number in extra),
            [p.counters.as_dict() for p in ins.probes if p.number in extra])


def compare(session: Session, prog: LoadedProgram, extra: list[str], packets: list[bytes],
            repeat: int) -> str:
    specs = GUEST + extra
    host, by_host = timed(session, prog, specs, packets, repeat, "off")
    rec, by_rec = timed(session, prog, specs, packets, repeat, "mixed")
    every, by_all = timed(session, prog, specs, packets, repeat, "auto")
    assert {p.attached for p in by_host.probes[4:]} == {"host breakpoint"}
    assert {p.attached for p in by_rec.probes[4:]} == {"recording"}
    hits = sum(p.counters.reached for p in by_rec.probes[4:])
    same = outcome(by_host) == outcome(by_rec) == outcome(by_all)
    runs = len(packets) * repeat
    ms = 1e3 / runs
    return (f"  4 in-guest + {len(extra):2} more locations ({hits:5} hits of them):\n"
            f"    extra ones at host breakpoints {host:7.2f} s ({host * ms:6.1f} ms/run)\n"
            f"    extra ones from the recording  {rec:7.2f} s ({rec * ms:6.1f} ms/run), "
            f"host / recording {host / rec:5.2f}x\n"
            f"    all from the recording (default) {every:5.2f} s ({every * ms:6.1f} ms/run), "
            f"host / recording {host / every:5.2f}x\n"
            f"    same hits and counters all three ways: {same}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    packets = [read_packet(str(EXAMPLE / "packets" / f"{p}.hex")) for p in PACKETS]
    with Session(kernel=args.kernel) as session:
        prog = load_example(session)
        lines = [compare(session, prog, extra, packets, args.repeat) for extra in (FEW, MANY)]
    print(f"kernel {args.kernel}, TCG, l4lb, {len(packets) * args.repeat} runs ({args.repeat} x "
          f"{len(packets)} packets), whole inspect runs")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
