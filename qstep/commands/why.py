"""``qstep why``: the write history of some bytes before a point of one recorded run."""

from __future__ import annotations

import argparse
import json
from typing import Any

from qstep.commands.common import (
    add_input_options,
    add_program_options,
    add_vm_options,
    make_session,
)
from qstep.commands.options import add_json_option, add_record_limit_option
from qstep.commands.recorded_trace import record
from qstep.recorder.plugin import require_recorder
from qstep.recorder.why import WhyAnswer, Write, why


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("why", help="who wrote these bytes before LOC (from a recording)")
    add_program_options(p, value=False)
    p.add_argument("question", metavar="QUESTION",
                   help="'mem(ADDR, SIZE) at LOC' or 'ADDR at LOC' (8 bytes); ADDR uses "
                   "$r0..$r10 as they were when LOC was first reached")
    add_input_options(p, several_packets=False)
    add_record_limit_option(p)
    add_json_option(p, "one object")
    add_vm_options(p)
    p.set_defaults(func=why_main)


def why_main(args: argparse.Namespace) -> int:
    require_recorder()
    with make_session(args) as session:
        rec = record(args, session)[1]
    answer = why(rec, args.question)
    print(json.dumps(answer_json(answer)) if args.json else "\n".join(answer_text(answer)))
    return 0


def _where(step: int, w: Write | WhyAnswer) -> str:
    s = w.site
    line = f"{s.source.short()}  {s.source.text.strip()}" if s.source else "?"
    return f"step {step}, insn {s.index} ({s.function.name}:{s.index - s.function.start_insn})" \
           f"  {line}"


def _hex(data: bytes | None) -> str:
    return "unknown (not readable before the store)" if data is None else "0x" + data.hex()


def answer_text(a: WhyAnswer) -> list[str]:
    """Lines for people: the bytes, the point asked about, then each write, oldest first."""
    value = "not seen by the recording" if a.value is None else "0x" + a.value.hex()
    lines = [f"{a.size} bytes at {a.addr:#x}, when {_where(a.step, a)} was first reached:",
             f"  value {value} (bytes in memory order)"]
    if not a.writes:
        lines.append(f"  never written on this path before that point ({a.step - 1} BPF "
                     "instructions ran)")
    for w in a.writes:
        frame = " [JIT frame: push/call]" if w.jit_frame else ""
        lines.append(f"  written at {_where(w.step, w)}{frame}")
        lines.append(f"    {len(w.new)} bytes at {w.addr:#x}: {_hex(w.old)} -> {_hex(w.new)}")
    if a.helper_calls:
        names = ", ".join(f"{name} (step {step})" for step, _site, name in a.helper_calls)
        lines.append(f"  helpers ran before that point and their stores are not recorded: "
                     f"{names}")
    return lines


def answer_json(a: WhyAnswer) -> dict[str, Any]:
    def site(step: int, s: Write | WhyAnswer) -> dict[str, Any]:
        return {"step": step, "insn": s.site.index, "function": s.site.function.name,
                "line": s.site.source.line if s.site.source else None}
    return {"addr": a.addr, "size": a.size, "at": site(a.step, a),
            "value": a.value.hex() if a.value is not None else None,
            "writes": [{**site(w.step, w), "addr": w.addr, "jit_frame": w.jit_frame,
                        "old": w.old.hex() if w.old is not None else None,
                        "new": w.new.hex()} for w in a.writes],
            "helper_calls": [{"step": step, "insn": s.index, "helper": name}
                             for step, s, name in a.helper_calls]}
