"""Cold boot vs restoring a saved agent-ready guest: prints figures measured in this one run.

- cold boot: QEMU start → the agent's READY line (``Session(snapshot=False)``)
- restore: QEMU start with ``-incoming`` → saved guest loaded → agent answers ``hello``
- first use after a restore: load the bundled example and run one packet

Usage: python bench/snapshot_restore.py [--kernel 6.1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from qstep.bpf.compile import compile_c
from qstep.bpf.elf import BpfObject
from qstep.paths import REPO_ROOT, cache_dir
from qstep.session import Session
from qstep.userinput import read_packet
from qstep.vm import snapshot

PACKET = REPO_ROOT / "examples/l4lb/packets/ipv4_to_v4real.hex"


def ready_seconds(kernel: str, use_snapshot: bool) -> float:
    start = time.monotonic()
    with Session(kernel=kernel, snapshot=use_snapshot) as session:
        elapsed = time.monotonic() - start
        assert session.agent is not None and session.hello() > 0
    return elapsed


def first_run_seconds(kernel: str) -> float:
    obj = BpfObject.open(compile_c(REPO_ROOT / "examples/l4lb/l4lb.bpf.c"))
    start = time.monotonic()
    with Session(kernel=kernel, snapshot=True) as session:
        prog = session.load(obj, "l4lb_ingress")
        session.test_run(prog, read_packet(str(PACKET)))
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with Session(kernel=args.kernel, snapshot=True):  # make sure the snapshot exists
        pass
    cold, warm = [], []
    for _ in range(args.rounds):  # interleaved, so load changes hit both alike
        cold.append(ready_seconds(args.kernel, False))
        warm.append(ready_seconds(args.kernel, True))
    c, w = statistics.median(cold), statistics.median(warm)
    size = sum(p.stat().st_size for p in (cache_dir() / "snapshots").glob("*.vmstate"))
    print(f"kernel {args.kernel}, {args.rounds} rounds (medians)")
    print(f"cold boot → agent ready:        {c:.2f} s")
    print(f"restore   → agent ready:        {w:.2f} s  ({w / c:.2f}x the cold boot)")
    print(f"restore + load + run l4lb:      {first_run_seconds(args.kernel):.2f} s")
    print(f"snapshots in the cache:         {size / 1e6:.0f} MB "
          f"(format {snapshot.FORMAT})")


if __name__ == "__main__":
    main()
