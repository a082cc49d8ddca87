"""llvm-dwarfdump-19 --debug-info text as a DIE tree: the independent truth of the
DWARF tests (locations, inlined calls, members)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_DIE = re.compile(r"^0x([0-9a-f]+):( +)(DW_TAG_\w+|NULL)")
_ATTR = re.compile(r"^\s+(DW_AT_\w+)\s+\((.*)$")
_ENTRY = re.compile(r"^\s+\[0x([0-9a-f]+), 0x([0-9a-f]+)\): (.*?)\)?$")
_RANGE = re.compile(r"^\s+\[0x([0-9a-f]+), 0x([0-9a-f]+)\)\)?$")


@dataclass
class DumpDie:
    offset: int
    tag: str
    depth: int
    attrs: dict[str, str] = field(default_factory=dict)
    # Location list entries: (lo byte, hi byte, expression text).
    entries: list[tuple[int, int, str]] = field(default_factory=list)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    children: list[DumpDie] = field(default_factory=list)

    def name(self) -> str:
        """DW_AT_name, or the name of the abstract origin."""
        if "DW_AT_name" in self.attrs:
            return self.attrs["DW_AT_name"].strip('")')
        origin = self.attrs.get("DW_AT_abstract_origin", "")
        match = re.search(r'"([^"]*)"', origin)
        return match.group(1) if match else ""

    def walk(self) -> list[DumpDie]:
        out = [self]
        for c in self.children:
            out.extend(c.walk())
        return out


def dwarfdump(path: Path) -> DumpDie:
    """The compile unit DIE tree of a single-CU object."""
    text = subprocess.run(["llvm-dwarfdump-19", "--debug-info", str(path)], check=True,
                          capture_output=True, text=True).stdout
    stack: list[DumpDie] = []
    root: DumpDie | None = None
    current: DumpDie | None = None
    attr = ""
    for line in text.splitlines():
        die = _DIE.match(line)
        if die:
            depth = len(die.group(2))
            while stack and stack[-1].depth >= depth:
                stack.pop()
            if die.group(3) == "NULL":
                current = None
                continue
            current = DumpDie(int(die.group(1), 16), die.group(3), depth)
            if stack:
                stack[-1].children.append(current)
            else:
                root = current
            stack.append(current)
            continue
        if current is None:
            continue
        a = _ATTR.match(line)
        if a:
            attr = a.group(1)
            current.attrs[attr] = a.group(2).rstrip(")") if attr != "DW_AT_name" else a.group(2)
            continue
        r = _RANGE.match(line)
        if r and attr == "DW_AT_ranges":
            current.ranges.append((int(r.group(1), 16), int(r.group(2), 16)))
            continue
        e = _ENTRY.match(line)
        if e:
            lo, hi = int(e.group(1), 16), int(e.group(2), 16)
            if attr == "DW_AT_location":
                current.entries.append((lo, hi, e.group(3)))
    assert root is not None
    return root


def normalize(expr: str) -> list[tuple[object, ...]]:
    """An llvm-dwarfdump expression as (op, args...) tuples comparable with qstep's ops."""
    out: list[tuple[object, ...]] = []
    for part in [p.strip() for p in expr.split(", DW_OP_")]:
        part = part.removeprefix("DW_OP_")
        name, _, rest = part.partition(" ")
        if m := re.fullmatch(r"(lit|reg|breg)(\d+)", name):
            kind, n = m.group(1), int(m.group(2))
            if kind == "breg":
                out.append(("breg", n, int(rest.split()[-1].split(f"W{n}")[-1] or "0")))
            else:
                out.append((kind, n))
        elif name in ("consts", "constu") or name.startswith("const"):
            out.append(("const", int(rest, 0)))
        elif name == "convert":
            ate = re.search(r"DW_ATE_(un)?signed_(\d+)", rest)
            assert ate, rest
            out.append(("convert", int(ate.group(2)), ate.group(1) is None))
        elif name in ("fbreg", "plus_uconst", "piece"):
            out.append((name, int(rest, 0)))
        else:
            out.append((name,))
    return out
