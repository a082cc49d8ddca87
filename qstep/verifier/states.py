"""What the verifier knew about one register: the text of its log, as typed values.

A register state in a level-2 verifier log is ``R3_w=scalar(smin=0,umax=255,...)``,
``R1=ctx(off=0,imm=0)`` (6.1) or ``R1=ctx()`` (6.12), a constant ``R0=5`` (``P5``
when precise), or a stack pointer ``R2=fp-40``. Newer kernels chain equal bounds
(``smax=umax=smax32=umax32=255``). Unknown fields are kept as text, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
_NUMBER = re.compile(r"-?(0x[0-9a-fA-F]+|[0-9]+)")
_TNUM = re.compile(r"\((0x[0-9a-f]+|[0-9]+);\s*(0x[0-9a-f]+|[0-9]+)\)")
_FP = re.compile(r"fp(?:\[(\d+)\])?(-?[0-9]+)")  # 6.12+: fp[0]-40 in a callee
# 6.1 and earlier spell the 32-bit bounds s32_min..u32_max; 6.12 smin32..umax32.
_ALIASES = {"s32_min": "smin32", "s32_max": "smax32", "u32_min": "umin32", "u32_max": "umax32"}


@dataclass(frozen=True)
class RegState:
    """One register as the verifier saw it on one path."""

    type: str  # scalar, ctx, pkt, pkt_end, map_value, fp, map_ptr, ...
    precise: bool = False
    fields: dict[str, str] = field(default_factory=dict, compare=False)
    text: str = ""  # as the log wrote it

    def bound(self, name: str) -> int | None:
        """A bound as a number in its own domain (6.1 prints u32_max=-4 for 0xfffffffc)."""
        text = self.fields.get(name)
        if text is None:
            return None
        value = _number(text)
        if name in ("umin", "umax"):
            return value & M64
        if name in ("umin32", "umax32"):
            return value & M32
        if name in ("smin32", "smax32"):
            value &= M32
            return value - (1 << 32) if value >> 31 else value
        return value - (1 << 64) if value >> 63 and value > 0 else value

    @property
    def tnum(self) -> tuple[int, int] | None:
        """(value, mask) of the known bits, when the log gives them."""
        found = _TNUM.fullmatch(self.fields.get("var_off", ""))
        return (_number(found.group(1)), _number(found.group(2))) if found else None

    def contains(self, value: int) -> bool:
        """Whether a runtime scalar ``value`` (u64) is allowed by this state."""
        if self.type != "scalar":
            return True
        signed = value - (1 << 64) if value >> 63 else value
        low = value & M32
        low_signed = low - (1 << 32) if low >> 31 else low
        checks = (("umin", value, 1), ("umax", value, -1), ("smin", signed, 1),
                  ("smax", signed, -1), ("umin32", low, 1), ("umax32", low, -1),
                  ("smin32", low_signed, 1), ("smax32", low_signed, -1))
        for name, runtime, sign in checks:
            limit = self.bound(name)
            if limit is not None and (runtime - limit) * sign < 0:
                return False
        known = self.tnum
        return known is None or (value & ~known[1] & M64) == known[0]

    def describe(self) -> str:
        return self.text


def _number(text: str) -> int:
    negative = text.startswith("-")
    digits = text.lstrip("-")
    value = int(digits, 16) if digits.startswith("0x") else int(digits)
    return -value if negative else value


def parse_reg_state(text: str) -> RegState:
    """``5``, ``P5``, ``scalar(...)``, ``ctx(...)``, ``fp-40``, ``map_value(...)``."""
    precise = text.startswith("P") and not text.startswith("PTR")
    body = text[1:] if precise else text
    if _NUMBER.fullmatch(body):
        value = _number(body) & M64
        return RegState("scalar", precise, {"umin": str(value), "umax": str(value),
                                            "var_off": f"({value:#x}; 0x0)"}, text)
    fp = _FP.fullmatch(body)
    if fp:
        fields = {"off": fp.group(2)} | ({"frame": fp.group(1)} if fp.group(1) else {})
        return RegState("fp", precise, fields, text)
    name, paren, rest = body.partition("(")
    fields = _fields(rest[:-1]) if paren and rest.endswith(")") else {}
    if fields.pop("P", None) is not None:
        precise = True
    return RegState(name, precise, fields, text)


def _fields(text: str) -> dict[str, str]:
    """``smin=smin32=0,var_off=(0x0; 0xff)`` → each key with its value."""
    fields: dict[str, str] = {}
    for part in split_top(text, ","):
        names = part.split("=")
        if len(names) == 1:
            fields[names[0]] = ""
            continue
        value = names[-1]
        for key in names[:-1]:
            fields[_ALIASES.get(key.strip(), key.strip())] = value.strip()
    return fields


def split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]
