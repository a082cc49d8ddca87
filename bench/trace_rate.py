"""Tracing speed: BPF instructions traced per second against the raw x86 step rate.

Measured in one run on one guest, for each debug backend:
- raw: x86 single steps per second with a full register read each (the floor
  any tracer pays per x86 instruction), stepping the example from its entry;
- trace: BPF instructions per second from ``qstep trace`` logic (all 11 BPF
  registers recorded per instruction), and x86 instructions per BPF instruction;
- breakpoint round trip: resume → stop at a breakpoint, per hit (``repeat``ed run).

Usage: python bench/trace_rate.py [--kernel 6.1]
"""

from __future__ import annotations

import argparse
import time

from qstep.bpf.compile import compile_c
from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import Debugger, RunRequest
from qstep.debugger.trace import TraceRecord, trace_run
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet

EXAMPLE = REPO_ROOT / "examples" / "l4lb"


def load_example(session: Session) -> LoadedProgram:
    obj = BpfObject.open(compile_c(EXAMPLE / "l4lb.bpf.c"))
    prog = session.load(obj, "l4lb_ingress")
    for entry in read_map_file(EXAMPLE / "maps.txt"):
        key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
        session.update_map(prog, entry.map_name, key, value)
    return prog


def raw_steps(dbg: Debugger, count: int = 100) -> float:
    """Seconds per x86 single step with a register read, from the program's entry.

    Few enough steps that they stay in the program's own code before its first
    helper call (the raw loop does not step over calls).
    """
    dbg.add_breakpoint(f"#{dbg.prog.functions[0].start_insn}", temporary=True)
    dbg.run()
    target = dbg.target
    start = time.perf_counter()
    for _ in range(count):
        target.step()
        target.registers()
    elapsed = time.perf_counter() - start
    dbg.kill()
    return elapsed / count


def traced(dbg: Debugger) -> tuple[int, int, float]:
    """(BPF instructions, x86 steps, seconds) for one full trace."""
    dbg.x86_steps = 0
    start = time.perf_counter()
    count = sum(1 for r in trace_run(dbg) if isinstance(r, TraceRecord))
    return count, dbg.x86_steps, time.perf_counter() - start


def breakpoint_round_trip(dbg: Debugger, hits: int) -> float:
    dbg.request.repeat = hits
    bp = dbg.add_breakpoint("process_packet")
    event = dbg.run()
    start = time.perf_counter()
    while event.kind == "stopped":
        event = dbg.cont()
    elapsed = time.perf_counter() - start
    dbg.delete_breakpoint(bp.number)
    dbg.request.repeat = 1
    return elapsed / max(1, bp.hits - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="6.1")
    args = parser.parse_args()
    packet = read_packet(str(EXAMPLE / "packets/ipv4_to_v4real.hex"))
    with Session(kernel=args.kernel) as session:
        prog = load_example(session)
        print(f"kernel {session.release}, TCG; l4lb_ingress on ipv4_to_v4real")
        for backend in ("rsp", "gdb"):
            with session.debugger(prog, RunRequest(packet), backend) as dbg:
                per_step = raw_steps(dbg)
                insns, steps, trace_s = traced(dbg)
                hit = breakpoint_round_trip(dbg, 30)
            raw_rate, trace_rate = 1 / per_step, insns / trace_s
            print(f"  {backend:4} raw x86 step+regs: {raw_rate:7.0f}/s   traced BPF insns: "
                  f"{trace_rate:7.0f}/s = {trace_rate / raw_rate:.0%} of raw "
                  f"({insns} insns, {steps / insns:.2f} x86 steps each)   "
                  f"breakpoint round trip {hit * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
