"""Cost of inspect probes, measured in one run on one guest (TCG).

- in-guest probe, condition false: extra time per program run (= per probe hit),
  from BPF_PROG_TEST_RUN's own per-run duration with and without the probe;
- in-guest probe, condition true and printing: the same, with a ring buffer record;
- host fallback (gdb breakpoint, condition evaluated on the host): extra wall time
  per hit over a ``repeat``ed run;
- the ratio host / in-guest, and the overhead of one probe on a repeated run.

Usage: python bench/probe_cost.py [--kernel 6.1] [--repeat 2000]
"""

from __future__ import annotations

import argparse
import sys
import time

from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.session import Session
from qstep.userinput import read_packet

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from trace_rate import EXAMPLE, load_example  # noqa: E402

FALSE = "process_packet:10 print $r1 if $r1 == 1"
TRUE = "process_packet:10 print $r1, mem($r8, 16) if $r1 != 1"
FILLERS = [f"process_packet:{i} print $r1 if $r1 == 1" for i in range(1, 5)]


def per_run_ns(session: Session, prog: object, packet: bytes, repeat: int) -> float:
    return float(session.test_run(prog, packet, repeat=repeat).duration_ns)  # type: ignore[arg-type]


def with_probes(session: Session, prog: object, specs: list[str], packet: bytes,
                repeat: int) -> tuple[float, float, Inspector]:
    """(kernel ns per run, wall seconds for the whole repeated run, inspector)."""
    inspector = Inspector(session, prog, parse_specs(specs))  # type: ignore[arg-type]
    inspector.attach()
    try:
        if any(p.mode == "host" for p in inspector.probes):
            start = time.perf_counter()
            inspector.run([packet], repeat)
            return 0.0, time.perf_counter() - start, inspector
        start = time.perf_counter()
        ns = per_run_ns(session, prog, packet, repeat)
        wall = time.perf_counter() - start
        inspector._drain(1)
        return ns, wall, inspector
    finally:
        inspector.detach()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--host-repeat", type=int, default=40)
    args = parser.parse_args()
    packet = read_packet(str(EXAMPLE / "packets/ipv4_to_v4real.hex"))
    with Session(kernel=args.kernel) as session:
        prog = load_example(session)
        base = per_run_ns(session, prog, packet, args.repeat)
        false_ns, _, _ = with_probes(session, prog, [FALSE], packet, args.repeat)
        true_ns, _, ins = with_probes(session, prog, [TRUE], packet, args.repeat)
        printed = len(ins.hits)
        start = time.perf_counter()
        session.test_run(prog, packet, repeat=args.host_repeat)
        plain_wall = time.perf_counter() - start
        _, host_wall, host = with_probes(session, prog, [*FILLERS, FALSE], packet,
                                         args.host_repeat)
        assert host.probes[-1].mode == "host"
        guest_fillers_ns, _, _ = with_probes(session, prog, FILLERS, packet, args.repeat)
    guest_cost = (false_ns - base) * 1e-9
    filler_cost = (guest_fillers_ns - base) * 1e-9 * args.host_repeat
    host_cost = (host_wall - plain_wall - filler_cost) / args.host_repeat
    print(f"kernel {args.kernel}, TCG, l4lb on ipv4_to_v4real; probe at process_packet:10")
    print(f"  program run, no probe:              {base:9.0f} ns per run")
    print(f"  in-guest probe, condition false:    {false_ns:9.0f} ns per run "
          f"(+{false_ns - base:.0f} ns per hit; {false_ns / base:.1f}x the bare run)")
    print(f"  in-guest probe, true and printing:  {true_ns:9.0f} ns per run "
          f"(+{true_ns - base:.0f} ns per hit; {printed} records)")
    print(f"  host fallback, condition false:     {host_cost * 1e6:9.0f} us per hit")
    print(f"  host / in-guest cost per hit:       {host_cost / guest_cost:9.0f}x")


if __name__ == "__main__":
    main()
