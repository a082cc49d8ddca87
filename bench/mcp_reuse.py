"""``qstep mcp`` guest reuse: a tool call on the kept guest vs a fresh ``qstep run``.

Measured in this one run, on the bundled l4lb example (2 packets, the maps file):
- fresh ``qstep run --json`` as a child process (boots or restores its own guest),
  with the snapshot (default) and with a full boot (``QSTEP_SNAPSHOT=0``)
- the MCP server's first ``run`` call (boots its guest) and later ``run`` calls on the
  same guest, through the MCP SDK's own client over stdio

Usage: python bench/mcp_reuse.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

from qstep.bpf.compile import compile_c
from qstep.paths import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PACKETS = [str(EXAMPLE / "packets" / "ipv4_to_v4real.hex"),
           str(EXAMPLE / "packets" / "ipv4_novip.hex")]
MAPS = str(EXAMPLE / "maps.txt")
QSTEP = str(Path(sys.executable).parent / "qstep")


def fresh_run(obj: Path, snapshot: bool) -> float:
    argv = [QSTEP, "run", str(obj), *(a for p in PACKETS for a in ("--packet", p)),
            "--maps", MAPS, "--json"]
    env = {**os.environ, **({} if snapshot else {"QSTEP_SNAPSHOT": "0"})}
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.monotonic() - start


async def mcp_runs(obj: Path, rounds: int) -> tuple[float, list[float], int]:
    params = StdioServerParameters(command=QSTEP, args=["mcp"])
    args: dict[str, Any] = {"object": str(obj), "packets": PACKETS, "maps": MAPS}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        times = []
        for _ in range(rounds + 1):
            start = time.monotonic()
            result = await client.call_tool("run", args)
            times.append(time.monotonic() - start)
            assert not result.is_error, result.content
        status = await client.call_tool("status", {})
        assert status.structured_content is not None
        return times[0], times[1:], int(status.structured_content["boots"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    obj = compile_c(EXAMPLE / "l4lb.bpf.c")
    snap = [fresh_run(obj, True) for _ in range(opts.rounds)]
    boot = [fresh_run(obj, False) for _ in range(opts.rounds)]
    first, later, boots = anyio.run(mcp_runs, obj, opts.rounds)
    med = statistics.median
    print(f"fresh `qstep run` (snapshot restore): median {med(snap):.3f} s of {len(snap)}")
    print(f"fresh `qstep run` (full boot):        median {med(boot):.3f} s of {len(boot)}")
    print(f"mcp first run call (starts guest):    {first:.3f} s")
    print(f"mcp later run calls (kept guest):     median {med(later):.3f} s of {len(later)} "
          f"(min {min(later):.3f}, max {max(later):.3f}); guests started: {boots}")
    print(f"ratio fresh/kept: {med(snap) / med(later):.1f}x (snapshot), "
          f"{med(boot) / med(later):.1f}x (full boot)")


if __name__ == "__main__":
    main()
