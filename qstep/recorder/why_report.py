"""``why`` answers for people (text) and programs (JSON)."""

from __future__ import annotations

from typing import Any

from qstep.recorder.why import WhyAnswer, Write


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
    what = f"{a.name} ({a.size} bytes at {a.addr:#x})" if a.name else \
        f"{a.size} bytes at {a.addr:#x}"
    lines = [f"{what}, before {_where(a.step, a)}:",
             f"  value {a.shown} = {value} (bytes in memory order)" if a.shown else
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
        lines.append(f"  calls that may write memory ran before that point (their stores are "
                     f"not recorded): {names}")
    return lines


def answer_json(a: WhyAnswer) -> dict[str, Any]:
    def site(step: int, s: Write | WhyAnswer) -> dict[str, Any]:
        return {"step": step, "insn": s.site.index, "function": s.site.function.name,
                "line": s.site.source.line if s.site.source else None}
    return {**({"expr": a.name, "shown": a.shown} if a.name else {}),
            "addr": a.addr, "size": a.size, "at": site(a.step, a),
            "value": a.value.hex() if a.value is not None else None,
            "writes": [{**site(w.step, w), "addr": w.addr, "jit_frame": w.jit_frame,
                        "old": w.old.hex() if w.old is not None else None,
                        "new": w.new.hex()} for w in a.writes],
            "helper_calls": [{"step": step, "insn": s.index, "helper": name}
                             for step, s, name in a.helper_calls]}
