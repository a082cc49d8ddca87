"""Stepping and breakpoint speed of the two target backends (l4lb, TCG).

Per backend:
- x86 single steps per second, ``step()`` only;
- the same with a full ``registers()`` read after every step;
- the breakpoint round trip: ``resume()`` → stop at a breakpoint on instruction 0,
  once per repetition of one repeated test run.
Every stepping pass starts from a fresh run stopped at instruction 0 and ends
when rip leaves the program's JIT code (the first helper call); then the
breakpoints are cleared and the run finishes.

Usage: python bench/step_rate.py [--kernel 6.1] [--steps 3000] [--hits 300]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from qstep.bpf.compile import compile_c
from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import RunRequest
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.target import KINDS, Target
from qstep.userinput import encode_entry, read_map_file, read_packet

EXAMPLE = REPO_ROOT / "examples" / "l4lb"


@dataclass
class Bench:
    session: Session
    prog: LoadedProgram
    packet: bytes

    def send_run(self, repeat: int = 1) -> int:
        return self.session.start_run(self.prog, RunRequest(self.packet, repeat=repeat))

    def finish(self, target: Target, seq: int) -> None:
        """Clear breakpoints, let the run end, collect its reply, stop the idle guest."""
        target.clear_all()
        target.resume()
        result = self.session.poll_run(seq, 120)
        assert result is not None and result.retval == 7, result
        target.interrupt()

    def in_jit(self, pc: int) -> bool:
        return any(f.contains(pc) for f in self.prog.functions)

    @property
    def entry(self) -> int:
        return self.prog.functions[0].addr


def setup(session: Session) -> Bench:
    obj = BpfObject.open(compile_c(EXAMPLE / "l4lb.bpf.c"))
    prog = session.load(obj, "l4lb_ingress")
    for entry in read_map_file(EXAMPLE / "maps.txt"):
        key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
        session.update_map(prog, entry.map_name, key, value)
    return Bench(session, prog, read_packet(str(EXAMPLE / "packets" / "ipv4_to_v4real.hex")))


def stop_at_entry(bench: Bench, target: Target, repeat: int = 1) -> int:
    """Start a run and wait until it stops at instruction 0; returns the run's seq."""
    target.set_breakpoint(bench.entry)
    target.resume()
    seq = bench.send_run(repeat)
    stop = target.wait(60)
    assert stop is not None and stop.pc == bench.entry, stop
    return seq


def step_pass(bench: Bench, target: Target, with_regs: bool) -> tuple[int, float]:
    """Step from instruction 0 until rip leaves the JIT code: (steps, seconds)."""
    seq = stop_at_entry(bench, target)
    target.clear_breakpoint(bench.entry)
    steps, pc = 0, bench.entry
    start = time.perf_counter()
    while bench.in_jit(pc):
        pc = target.step().pc
        if with_regs:
            pc = target.registers().rip
        steps += 1
    elapsed = time.perf_counter() - start
    bench.finish(target, seq)
    return steps, elapsed


def steps_per_second(bench: Bench, kind: str, with_regs: bool, min_steps: int) -> float:
    total_steps, total_time = 0, 0.0
    with bench.session.target(kind) as target:
        while total_steps < min_steps:
            steps, elapsed = step_pass(bench, target, with_regs)
            total_steps += steps
            total_time += elapsed
    return total_steps / total_time


def hit_round_trip(bench: Bench, kind: str, hits: int) -> float:
    """Seconds per resume → breakpoint stop, over one run repeated ``hits`` times."""
    with bench.session.target(kind) as target:
        seq = stop_at_entry(bench, target, repeat=hits)
        start = time.perf_counter()
        for _ in range(hits - 1):
            target.resume()
            stop = target.wait(60)
            assert stop is not None and stop.pc == bench.entry, stop
        elapsed = time.perf_counter() - start
        bench.finish(target, seq)
    return elapsed / (hits - 1)


def steps_per_run(bench: Bench) -> int:
    with bench.session.target("rsp") as target:
        return step_pass(bench, target, with_regs=False)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--steps", type=int, default=3000, help="steps per measurement")
    parser.add_argument("--hits", type=int, default=300, help="breakpoint hits")
    args = parser.parse_args()
    rows: dict[str, tuple[float, float, float]] = {}
    with Session(kernel=args.kernel) as session:
        bench = setup(session)
        per_run = steps_per_run(bench)
        for kind in KINDS:
            rows[kind] = (steps_per_second(bench, kind, False, args.steps),
                          steps_per_second(bench, kind, True, args.steps),
                          hit_round_trip(bench, kind, args.hits))
        release = session.release
    print(f"kernel {release}, TCG; l4lb_ingress: {per_run} x86 steps from insn 0 to the "
          f"first helper call; >= {args.steps} steps and {args.hits} hits per figure")
    print(f"{'backend':8} {'steps/s':>10} {'steps/s + regs':>15} {'bp round trip':>14}")
    for kind, (plain, regs, trip) in rows.items():
        print(f"{kind:8} {plain:10.0f} {regs:15.0f} {trip * 1e3:11.2f} ms")
    rsp, gdb = rows["rsp"], rows["gdb"]
    print(f"{'rsp/gdb':8} {rsp[0] / gdb[0]:9.1f}x {rsp[1] / gdb[1]:14.1f}x "
          f"{gdb[2] / rsp[2]:10.1f}x faster")


if __name__ == "__main__":
    main()
