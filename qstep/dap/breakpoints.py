"""What a DAP breakpoint asks beyond stopping: hit conditions and log messages.

``hitCondition``: ``N`` or ``== N`` (only the Nth hit), ``>= N``, ``> N``, ``< N``,
``<= N``, ``% N`` (every Nth hit). ``logMessage``: text with ``{EXPR}`` parts
(``{{`` and ``}}`` for literal braces) evaluated in the stopped frame.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from qstep.errors import QstepError, UsageError

_OPS: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq, ">=": operator.ge, ">": operator.gt, "<": operator.lt,
    "<=": operator.le, "%": lambda hits, n: hits % n == 0,
}


@dataclass(frozen=True)
class HitCondition:
    """A parsed ``hitCondition``."""

    op: str
    count: int

    @staticmethod
    def parse(text: str) -> HitCondition:
        match = re.fullmatch(r"\s*(==|>=|<=|>|<|%)?\s*(\d+)\s*", text)
        if not match:
            raise UsageError(f"hit condition {text!r}: expected N, == N, >= N, > N, < N, "
                             "<= N or % N")
        op, count = match.group(1) or "==", int(match.group(2))
        if op == "%" and count == 0:
            raise UsageError("hit condition '% 0': the modulus must be positive")
        return HitCondition(op, count)

    def holds(self, hits: int) -> bool:
        """Whether the breakpoint acts on its ``hits``-th hit (counted from 1)."""
        return _OPS[self.op](hits, self.count)


@dataclass(frozen=True)
class LogMessage:
    """A parsed ``logMessage``: literal text and expressions, in order."""

    parts: tuple[tuple[str, bool], ...]  # (text, is_expression)

    @staticmethod
    def parse(text: str) -> LogMessage:
        parts: list[tuple[str, bool]] = []
        literal, i = "", 0
        while i < len(text):
            two = text[i:i + 2]
            if two in ("{{", "}}"):
                literal, i = literal + two[0], i + 2
            elif text[i] == "{":
                end = text.find("}", i)
                if end < 0 or not text[i + 1:end].strip():
                    raise UsageError(f"log message {text!r}: '{{' without an expression "
                                     "and '}' (use '{{' for a brace)")
                parts += [(literal, False)] if literal else []
                parts.append((text[i + 1:end].strip(), True))
                literal, i = "", end + 1
            elif text[i] == "}":
                raise UsageError(f"log message {text!r}: unmatched '}}' (use '}}}}')")
            else:
                literal, i = literal + text[i], i + 1
        return LogMessage(tuple(parts + ([(literal, False)] if literal else [])))

    def render(self, evaluate: Callable[[str], str]) -> str:
        """The message with each expression's value (or its error, in angle brackets)."""
        out = []
        for text, is_expr in self.parts:
            if not is_expr:
                out.append(text)
                continue
            try:
                out.append(evaluate(text))
            except QstepError as err:
                out.append(f"<{err}>")
        return "".join(out)


@dataclass(eq=False)
class UserBreakpoint:
    """One DAP breakpoint: the debugger breakpoints it became and what it asks for."""

    id: int
    numbers: list[int] = field(default_factory=list)  # engine breakpoint numbers
    condition: str | None = None
    hit_condition: HitCondition | None = None
    log: LogMessage | None = None
    hits: int = 0  # hits whose condition held

    def acts(self, condition_holds: Callable[[str], bool]) -> bool:
        """Count a hit; whether it stops (or logs): condition, then hit condition."""
        if self.condition and not condition_holds(self.condition):
            return False
        self.hits += 1
        return self.hit_condition is None or self.hit_condition.holds(self.hits)
