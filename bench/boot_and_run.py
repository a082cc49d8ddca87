"""Boot and round-trip benchmark: prints figures measured in this one run.

- bare kernel: QEMU start → the first line of a trivial /init on the console
- qstep guest: QEMU start → the agent's READY line (includes the bare boot)
- agent round trip: a no-op request (``hello``)
- run round trip: load once, then ``test_run`` of the bundled example per packet

Usage: python bench/boot_and_run.py [--kernel 6.1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from pathlib import Path

from qstep.bpf.compile import compile_c
from qstep.bpf.elf import BpfObject
from qstep.images import cpio
from qstep.images.guest import build_initramfs, find_busybox
from qstep.images.kernels import resolve_kernel
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet
from qstep.vm.machine import Machine

BARE_INIT = b"#!/bin/busybox sh\necho QSTEP-BARE-INIT\n/bin/busybox poweroff -f\n"


def bare_initramfs(directory: Path) -> Path:
    entries = [cpio.directory("bin"),
               cpio.regular("bin/busybox", find_busybox().read_bytes(), executable=True),
               cpio.regular("init", BARE_INIT, executable=True)]
    path = directory / "bare.cpio.gz"
    path.write_bytes(gzip.compress(cpio.write_newc(entries)))
    return path


def time_bare_boot(kernel: Path, initrd: Path) -> float:
    start = time.monotonic()
    with Machine(kernel, initrd) as machine:
        assert machine.console is not None
        if not machine.console.wait_for("QSTEP-BARE-INIT", 120):
            raise SystemExit("bare kernel did not reach /init:\n" + machine.console_tail())
        return time.monotonic() - start


def time_agent_boot(kernel: str) -> tuple[float, Session]:
    session = Session(kernel=kernel)
    session.prepare()
    start = time.monotonic()
    session.__enter__()
    return time.monotonic() - start, session


def measure_round_trips(session: Session, count: int) -> tuple[float, float]:
    obj = BpfObject.open(compile_c(REPO_ROOT / "examples/l4lb/l4lb.bpf.c"))
    prog = session.load(obj, "l4lb_ingress")
    for entry in read_map_file(REPO_ROOT / "examples/l4lb/maps.txt"):
        key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
        session.update_map(prog, entry.map_name, key, value)
    packet = read_packet(str(REPO_ROOT / "examples/l4lb/packets/ipv4_to_v4real.hex"))
    hello = timed(session.hello, count)
    run = timed(lambda: session.test_run(prog, packet), count)
    return hello, run


def timed(fn: object, count: int) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kernel = resolve_kernel(args.kernel)
    build_initramfs()
    with tempfile.TemporaryDirectory() as tmp:
        bare = bare_initramfs(Path(tmp))
        bare_times = [time_bare_boot(kernel.bzimage, bare) for _ in range(args.rounds)]
    agent_times = []
    for _ in range(args.rounds):
        elapsed, session = time_agent_boot(args.kernel)
        agent_times.append(elapsed)
        session.__exit__(None, None, None)
    elapsed, session = time_agent_boot(args.kernel)
    try:
        hello, run = measure_round_trips(session, 50)
    finally:
        session.__exit__(None, None, None)
    bare_med, agent_med = statistics.median(bare_times), statistics.median(agent_times)
    print(f"kernel {kernel.name}, TCG, median of {args.rounds} boots")
    print(f"  bare kernel, QEMU start -> /init      {bare_med:6.2f} s")
    print(f"  qstep guest, QEMU start -> agent ready {agent_med:6.2f} s "
          f"(ratio {agent_med / bare_med:.2f}x bare)")
    print(f"  agent round trip (hello)               {hello * 1e3:6.2f} ms")
    print(f"  run round trip (l4lb, 72-byte packet)  {run * 1e3:6.2f} ms "
          f"({run / hello:.1f}x hello)")


if __name__ == "__main__":
    main()
