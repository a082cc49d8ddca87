"""Output that machines can compare: identical inputs give byte-identical JSON across boots.

Each CLI call boots its own guest, so kernel addresses (stack, packet, map values)
differ between the two runs; only what the program computed may show.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qstep.paths import REPO_ROOT

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
KERNEL_POINTER = 0xFFFF_8000_0000_0000


def qstep_json(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "qstep.cli", *args, "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def example_args(command: str, l4lb_obj: Path, packet: str) -> list[str]:
    return [command, str(l4lb_obj), "--prog", "l4lb_ingress", "--maps",
            str(EXAMPLE / "maps.txt"), "--packet", str(EXAMPLE / "packets" / packet)]


def test_trace_json_is_byte_identical_across_boots(l4lb_obj: Path) -> None:
    args = example_args("trace", l4lb_obj, "ipv4_to_v4real.hex")
    first, second = qstep_json(*args), qstep_json(*args)
    assert first == second
    records = [json.loads(line) for line in first.splitlines()]
    values = [v for r in records for v in r.get("regs", {}).values()]
    assert not [v for v in values if isinstance(v, int) and v >= KERNEL_POINTER]
    # insn 0 loads skb->data_end, insn 1 skb->data (l4lb.bpf.c:190, 189).
    assert records[0]["regs"] == {"r1": "ctx", "r2": "pkt_end", "r10": "fp"}
    assert records[1]["regs"]["r3"] == "pkt"
    assert "pkt+14" in values  # the IPv4 header after the Ethernet header
    # The per-VIP counters of VIP 1 (maps.txt: 10.0.0.10:80/tcp is vip_num 1).
    assert "map:stats[1]" in values


def test_trace_raw_keeps_the_addresses(l4lb_obj: Path) -> None:
    out = qstep_json(*example_args("trace", l4lb_obj, "ipv4_to_v4real.hex"), "--raw")
    first = json.loads(out.splitlines()[0])
    assert first["regs"]["r1"] >= KERNEL_POINTER and first["regs"]["r10"] >= KERNEL_POINTER


def test_run_json_is_byte_identical_but_for_durations(l4lb_obj: Path) -> None:
    args = example_args("run", l4lb_obj, "ipv6_to_v6real.hex") + ["--repeat", "3"]
    runs = [json.loads(qstep_json(*args)) for _ in range(2)]
    for run in runs:
        for result in run["runs"]:
            result.pop("duration_ns")
    assert json.dumps(runs[0]) == json.dumps(runs[1])
