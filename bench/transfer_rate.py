"""Agent channel transfer rate, measured in one run on one guest: blob bytes/s into
the guest and back as hex on the serial line (the only path of protocol v1) and
through the shared-memory window (protocol v2), and their ratio.

- into the guest: ``put`` of N bytes (the agent writes them to its tmpfs)
- back: ``get`` of the same N bytes
- load: ``Session.load`` of tests/progs/big.bpf.c (over 500 KB, BTF): the object
  goes in, the submitted instructions and line info, then ``info`` come back

Usage: python bench/transfer_rate.py [--kernel 6.1] [--rounds 3]
       [--serial-bytes 131072] [--window-bytes 8388608]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Callable

from qstep.bpf.elf import BpfObject
from qstep.paths import REPO_ROOT, cache_dir
from qstep.session import Session

BIG_SRC = REPO_ROOT / "tests" / "progs" / "big.bpf.c"
CFLAGS = ["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu"]
GUEST_FILE = "/tmp/qstep-transfer"


def best_seconds(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rates(session: Session, size: int, rounds: int) -> tuple[float, float]:
    """(bytes/s into the guest, bytes/s back), best of ``rounds``."""
    data = os.urandom(size)
    into = best_seconds(lambda: session.put_file(GUEST_FILE, data), rounds)
    back = best_seconds(lambda: session.get_file(GUEST_FILE), rounds)
    if session.get_file(GUEST_FILE) != data:
        raise SystemExit("the guest returned different bytes")
    return size / into, size / back


def big_object() -> BpfObject:
    out = cache_dir() / "build" / "bench" / "big.bpf.o"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["clang-19", *CFLAGS, "-c", str(BIG_SRC), "-o", str(out)], check=True)
    return BpfObject.open(out)


def load_seconds(session: Session, obj: BpfObject, rounds: int) -> float:
    def load_once() -> None:
        session.unload(session.load(obj, "big_main"))
    return best_seconds(load_once, rounds)


def use_window(session: Session, on: bool) -> None:
    assert session.agent is not None
    if session.agent.use_window(on) != on:
        raise SystemExit("the agent did not map the shared window")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--serial-bytes", type=int, default=128 << 10)
    ap.add_argument("--window-bytes", type=int, default=8 << 20)
    args = ap.parse_args()
    obj = big_object()
    with Session(kernel=args.kernel) as session:
        use_window(session, False)
        serial_in, serial_out = rates(session, args.serial_bytes, args.rounds)
        serial_load = load_seconds(session, obj, 1)
        use_window(session, True)
        win_in, win_out = rates(session, args.window_bytes, args.rounds)
        win_load = load_seconds(session, obj, args.rounds)
        print(f"kernel {session.release}, object {len(obj.data)} bytes")
    print(f"into the guest: serial hex {serial_in / 1e3:.0f} KB/s, window "
          f"{win_in / 1e6:.0f} MB/s ({win_in / serial_in:.0f}x)")
    print(f"back to the host: serial hex {serial_out / 1e3:.0f} KB/s, window "
          f"{win_out / 1e6:.0f} MB/s ({win_out / serial_out:.0f}x)")
    print(f"load of big.bpf.o: serial {serial_load:.2f} s, window {win_load:.2f} s "
          f"({serial_load / win_load:.0f}x)")


if __name__ == "__main__":
    main()
