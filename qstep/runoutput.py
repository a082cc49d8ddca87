"""What a program printed during a run: ``bpf_printk`` lines (trace_pipe) and
BPF streams (kernel 6.17+)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# "  <task>-<pid>  [000] d.s31  12.345678: bpf_trace_printk: text"
PRINTK_LINE = re.compile(r"^.*?\[\d+\][^:]*?\s(?P<ts>\d+\.\d+): bpf_trace_printk: (?P<msg>.*)$")


@dataclass(frozen=True)
class RunOutput:
    """``printk``: the messages, in order; ``trace_lines``: other trace_pipe lines."""

    printk: list[str] = field(default_factory=list)
    trace_lines: list[str] = field(default_factory=list)
    printk_lost_bytes: int = 0
    stdout: str | None = None  # BPF streams; None: the kernel has none
    stderr: str | None = None

    def is_empty(self) -> bool:
        return not (self.printk or self.trace_lines or self.printk_lost_bytes
                    or self.stdout or self.stderr)

    def text(self) -> list[str]:
        """Lines for a run's text report (none when the program printed nothing)."""
        lines = [f"printk    {m}" for m in self.printk]
        lines += [f"trace     {t}" for t in self.trace_lines]
        if self.printk_lost_bytes:
            lines.append(f"printk    ({self.printk_lost_bytes} bytes over 1 MiB not kept)")
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            lines += [f"{name}    {line}" for line in (text or "").splitlines()]
        return lines

    def as_json(self) -> dict[str, Any]:
        return {"printk": self.printk, "trace_lines": self.trace_lines,
                "printk_lost_bytes": self.printk_lost_bytes,
                "stream_stdout": self.stdout, "stream_stderr": self.stderr}


def split_trace(raw: str) -> tuple[list[str], list[str]]:
    """trace_pipe text → (bpf_printk messages, other lines)."""
    messages, other = [], []
    for line in raw.splitlines():
        match = PRINTK_LINE.match(line)
        if match:
            messages.append(match.group("msg"))
        elif line.strip():
            other.append(line.strip())
    return messages, other

