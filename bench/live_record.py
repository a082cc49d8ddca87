"""What live recording (``qstep debug --reverse``) costs a debugged run.

One guest, one run of this script. The same debug session pattern, with a plain
debugger and with a recording one: ``run`` to a breakpoint at l4lb's line 178
(137 BPF instructions in), then ``continue`` to the end. Printed: the mean wall time
per run both ways and their ratio; what the first reverse-stepi at the stop costs
(the plugin's sync, reading and grouping the log); and the same for a run with no
breakpoint (run to the end).

Usage: python bench/live_record.py [--kernel 6.1] [--runs 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from statistics import median

from qstep.debugger.engine import Debugger, RunRequest
from qstep.debugger.reverse import ReversibleDebugger
from qstep.loaded import LoadedProgram
from qstep.session import Session
from qstep.userinput import read_packet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_rate import EXAMPLE, load_example  # noqa: E402

STOP = "l4lb.bpf.c:178"


def per_run(dbg: Debugger, runs: int, stop: bool) -> float:
    """Mean seconds per run (to the breakpoint and on to the end, or straight through)."""
    for bp in list(dbg.breakpoints):
        dbg.delete_breakpoint(bp)
    if stop:
        dbg.add_breakpoint(STOP)
    start = time.perf_counter()
    for _ in range(runs):
        event = dbg.run()
        if stop:
            assert event.reason == "breakpoint", event
            event = dbg.cont()
        assert event.kind == "exited", event
    return (time.perf_counter() - start) / runs


def stepping(dbg: Debugger, runs: int) -> float:
    """Mean seconds per live stepi (gdbstub single steps) over the run's first 100."""
    dbg.add_breakpoint(f"#{dbg.prog.functions[0].start_insn}", temporary=True)
    total = 0.0
    for _ in range(max(1, runs // 5)):
        assert dbg.run().reason == "breakpoint"
        start = time.perf_counter()
        for _ in range(100):
            dbg.stepi()
        total += time.perf_counter() - start
        dbg.add_breakpoint(f"#{dbg.prog.functions[0].start_insn}", temporary=True)
        while dbg.cont().kind != "exited":
            pass
    for number in list(dbg.breakpoints):
        dbg.delete_breakpoint(number)
    return total / (100 * max(1, runs // 5))


def first_reverse_step(dbg: ReversibleDebugger, runs: int) -> float:
    """Mean seconds of the first reverse-stepi at a live stop (sync, read, group)."""
    dbg.add_breakpoint(STOP)
    total = 0.0
    for _ in range(runs):
        assert dbg.run().reason == "breakpoint"
        start = time.perf_counter()
        assert dbg.reverse_stepi().reason == "step"
        total += time.perf_counter() - start
        assert dbg.cont().reason == "breakpoint"  # replayed to the live point
        assert dbg.cont().kind == "exited"
    return total / runs


def measure(session: Session, prog: LoadedProgram, packet: bytes, runs: int,
            rounds: int) -> list[str]:
    """Plain and recording debuggers in turn, ``rounds`` times (the host is shared with
    other work: the median round of each)."""
    times: dict[tuple[bool, bool | None], list[float]] = {}
    backs = []
    steps: dict[bool, list[float]] = {}
    for _ in range(rounds):
        for reverse in (False, True):
            with session.debugger(prog, RunRequest(packet), "rsp", reverse=reverse) as dbg:
                if reverse:
                    assert isinstance(dbg, ReversibleDebugger) and dbg.recorder is not None
                start = time.perf_counter()
                dbg.run()  # the first run arms the plugin (a translation flush)
                times.setdefault((reverse, None), []).append(time.perf_counter() - start)
                for stop in (True, False):
                    times.setdefault((reverse, stop), []).append(per_run(dbg, runs, stop))
                steps.setdefault(reverse, []).append(stepping(dbg, runs))
                if isinstance(dbg, ReversibleDebugger):
                    backs.append(first_reverse_step(dbg, runs))
    back = median(backs)
    lines = []
    kinds: list[tuple[bool | None, str]] = [
        (True, f"run to {STOP}, continue to the end"), (False, "run straight to the end"),
        (None, "a debugger's first run (recording: arms the plugin)")]
    for kind, what in kinds:
        plain, rec = median(times[(False, kind)]), median(times[(True, kind)])
        lines.append(f"{what}: {plain * 1e3:.1f} ms plain, {rec * 1e3:.1f} ms recorded "
                     f"(x{rec / plain:.2f}, {(rec - plain) * 1e3:+.1f} ms per run)")
    plain, rec = median(steps[False]), median(steps[True])
    lines.append(f"live stepi (gdbstub): {plain * 1e3:.2f} ms plain, {rec * 1e3:.2f} ms "
                 f"recorded (x{rec / plain:.2f})")
    lines.append(f"first reverse-stepi at the stop (sync + read + group 137 instructions): "
                 f"{back * 1e3:.1f} ms")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    packet = read_packet(str(EXAMPLE / "packets" / "ipv6_to_v6real.hex"))
    with Session(kernel=args.kernel) as session:
        prog = load_example(session)
        lines = measure(session, prog, packet, args.runs, args.rounds)
    print(f"kernel {args.kernel}, TCG, l4lb (ipv6_to_v6real), {args.rounds} rounds of "
          f"{args.runs} runs each way, median round")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
