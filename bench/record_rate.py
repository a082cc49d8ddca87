"""Recording speed: BPF instructions recorded per second against the gdbstub tracer.

Measured in one run, side by side on the bundled example:
- gdbstub tracer: ``qstep trace --stepping`` logic (raw protocol), BPF instructions/s;
- recorder, sustained: the plugin armed once over ``--repeat`` runs of the program,
  BPF instructions (boundary records) per second of wall time, and log bytes;
- recorder, one traced run as ``qstep trace`` does it: arm, run, disarm, read and
  decode the log, build the trace, and where that time goes;
- plugin overhead: the program's own run time (the kernel's test_run duration)
  with the plugin loaded but disarmed, against a guest without the plugin.

Usage: python bench/record_rate.py [--kernel 6.1] [--repeat 2000]
"""

from __future__ import annotations

import argparse
import sys
import time

from qstep.debugger.engine import RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.images.guest import build_initramfs
from qstep.paths import REPO_ROOT
from qstep.recorder.control import RecorderControl
from qstep.recorder.log import Boundary, parse_log
from qstep.recorder.run import boundaries, jit_ranges, record_run
from qstep.recorder.trace import trace_records
from qstep.session import Session
from qstep.userinput import read_packet
from qstep.vm.machine import Machine

sys.path.insert(0, str(REPO_ROOT / "bench"))
from trace_rate import load_example  # noqa: E402

PACKET = REPO_ROOT / "examples" / "l4lb" / "packets" / "ipv4_to_v4real.hex"


def stepping_rate(session: Session, data: bytes) -> float:
    """BPF instructions per second traced through the gdbstub (raw protocol)."""
    prog = load_example(session)
    with session.debugger(prog, RunRequest(data), "rsp") as dbg:
        start = time.perf_counter()
        count = sum(1 for r in trace_run(dbg) if isinstance(r, TraceRecord))
        elapsed = time.perf_counter() - start
    session.unload(prog)
    return count / elapsed


def sustained(session: Session, data: bytes, repeat: int,
              registers: bool = True) -> tuple[int, int, float]:
    """(BPF instructions recorded, log bytes, seconds) over ``repeat`` armed runs;
    without ``registers`` no boundary is armed: memory accesses only."""
    prog = load_example(session)
    machine = session.machine
    assert machine is not None and machine.config is not None
    with RecorderControl(machine.config.recorder_socket, session.hello) as ctl:
        ctl.arm(jit_ranges(prog), boundaries(prog) if registers else [0], 1 << 34)
        start = time.perf_counter()
        session.test_run(prog, data, repeat=repeat)
        elapsed = time.perf_counter() - start
        size = ctl.disarm(1 << 34)
    records = parse_log(machine.config.recorder_log.read_bytes()[:size])
    session.unload(prog)
    return sum(isinstance(r, Boundary) for r in records), size, elapsed


def one_trace(session: Session, data: bytes) -> tuple[int, float, float]:
    """(BPF instructions, seconds end to end, seconds of which in the guest run)."""
    prog = load_example(session)
    start = time.perf_counter()
    result, rec = record_run(session, prog, data)
    count = sum(1 for _ in trace_records(rec))
    elapsed = time.perf_counter() - start
    session.unload(prog)
    return count, elapsed, result.duration_ns / 1e9


def run_ns(session: Session, data: bytes, repeat: int) -> float:
    """Mean ns per program run as the kernel measured it over ``repeat`` runs."""
    prog = load_example(session)
    best = min(session.test_run(prog, data, repeat=repeat).duration_ns for _ in range(3))
    session.unload(prog)
    return float(best)


def session_without_plugin(kernel: str) -> Session:
    session = Session(kernel=kernel)
    session.prepare()
    assert session.kernel is not None
    session.machine = Machine(session.kernel.bzimage, build_initramfs(), recorder=False)
    return session


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    data = read_packet(str(PACKET))
    with Session(kernel=args.kernel) as session:
        print(f"kernel {session.release}, TCG, QEMU 10 + recorder; l4lb_ingress on "
              "ipv4_to_v4real")
        step = stepping_rate(session, data)
        insns, size, secs = sustained(session, data, args.repeat)
        _, mem_size, mem_secs = sustained(session, data, args.repeat, registers=False)
        count, total, guest = one_trace(session, data)
        disarmed = run_ns(session, data, 100_000)
    with session_without_plugin(args.kernel) as bare:
        plain = run_ns(bare, data, 100_000)
    rate = insns / secs
    print(f"  gdbstub tracer:          {step:10.0f} BPF insns/s")
    print(f"  recorder ({args.repeat} runs armed): {rate:10.0f} BPF insns/s = {rate / step:.0f}x "
          f"the gdbstub tracer ({insns} insns, {size / insns:.0f} log bytes each)")
    print(f"  the same runs with memory accesses only (no register reads): "
          f"{mem_secs / secs:.0%} of the time ({mem_size / insns:.0f} log bytes per BPF insn)")
    print(f"  one run as qstep trace:  {count / total:10.0f} BPF insns/s = "
          f"{count / total / step:.0f}x ({count} insns in {total * 1e3:.0f} ms; the run itself "
          f"{guest * 1e6:.0f} us, the rest is arm/flush/disarm round trips and decoding)")
    print(f"  program run, plugin loaded but disarmed / no plugin: {disarmed:.0f} ns / "
          f"{plain:.0f} ns ({disarmed / plain:.2f}x)")


if __name__ == "__main__":
    main()
