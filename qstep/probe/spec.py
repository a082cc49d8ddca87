r"""Parser for INSPECT_SPECs (`qstep inspect PROG SPEC...`).

Grammar (keywords are case-sensitive; whitespace only separates tokens)::

    SPEC      := LOC ACTION [if CONDITION]            (no `if`: every hit)
               | LOC if CONDITION ACTION             (the same spec, condition first)
    LOC       := FUNC | FUNC:OFFSET | FILE:LINE       (FILE ends in .c or .h; OFFSET is the
                                                       BPF instruction offset within FUNC)
    ACTION    := [skip N] (print ITEM {, ITEM} [, stop] | stop)
    ITEM      := EXPR          a string, a bare map name (dump), map[KEY], reg(rN), mem(...)
    CONDITION := EXPR | watch EXPR, WSIZE, TYPE       WSIZE 1|2|4|8,
                                                      TYPE w|write, r|read, rw|access
    EXPR      := an expression of `qstep.expr.parser` (C operators and precedence)

LOC is split off first, so a colon after it can only belong to an IPv6 literal.
Reserved words: and or not if print skip stop watch reg mem. Errors are `SpecError`s
naming the column and what was expected there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from qstep.expr.ast import Expr, Node
from qstep.expr.lexer import IDENT, SPACE, ParseFailure, int_literal, match
from qstep.expr.parser import ExprParser, SpecError

__all__ = [
    "Action", "Location", "PrintItem", "Spec", "SpecError", "Watch", "parse_spec", "parse_specs",
]

PrintItem = Expr
LocationKind = Literal["func_offset", "file_line", "func"]
WATCH_TYPES = {"w": "w", "write": "w", "r": "r", "read": "r", "rw": "rw", "access": "rw"}
WATCH_SIZES = (1, 2, 4, 8)
_LOC_EXPECTED = "a location FUNC, FUNC:OFFSET or FILE.c:LINE"
_ITEM_EXPECTED = "a print item (expression, string, map name, reg(rN) or mem(ADDR, SIZE))"
_LOC = re.compile(r"([^\s:]*)(?::(\S*))?")
_PATH = re.compile(r"[0-9A-Za-z_./+-]+")
_LINE = re.compile(r"[1-9][0-9]{0,8}")


@dataclass(frozen=True)
class Watch(Node):
    """`watch ADDR, SIZE, TYPE`: hit when the watched bytes are accessed."""

    addr: Expr
    size: int
    type: str  # canonical: "w", "r" or "rw"

    def to_text(self) -> str:
        return f"watch {self.addr.to_text()}, {self.size}, {self.type}"


@dataclass(frozen=True)
class Location(Node):
    """Where a spec fires; `number` is the offset or line (None for a function entry)."""

    kind: LocationKind
    name: str
    number: int | None = None

    def to_text(self) -> str:
        return self.name if self.number is None else f"{self.name}:{self.number}"


@dataclass(frozen=True)
class Action(Node):
    """Skip the first `skip` hits, then print `prints` and/or stop in the debugger."""

    skip: int
    prints: tuple[PrintItem, ...]
    stop: bool

    def __post_init__(self) -> None:
        if not (self.prints or self.stop):
            raise ValueError("an Action prints something or stops")

    def to_text(self) -> str:
        items = [item.to_text() for item in self.prints] + (["stop"] if self.stop else [])
        verb = "print " + ", ".join(items) if self.prints else "stop"
        return f"skip {self.skip} {verb}" if self.skip else verb


@dataclass(frozen=True)
class Spec(Node):
    """One INSPECT_SPEC; `text` is the source (not part of equality)."""

    loc: Location
    action: Action
    condition: Expr | Watch | None
    text: str = field(default="", compare=False)

    def to_text(self) -> str:
        head = f"{self.loc.to_text()} {self.action.to_text()}"
        return head if self.condition is None else f"{head} if {self.condition.to_text()}"


def _location(text: str) -> tuple[Location, int]:
    """The LOC at the start of `text` and the index after it."""
    start = match(SPACE, text, 0).end()
    found = match(_LOC, text, start)
    name, number = found.group(1), found.group(2)
    colon = start + len(name)
    if name.endswith((".c", ".h")):
        if not _PATH.fullmatch(name):
            raise ParseFailure(start, "a file name")
        if number is None:
            raise ParseFailure(colon, "':LINE' after the file name")
        if not _LINE.fullmatch(number):
            raise ParseFailure(colon + 1, "a line number after ':'")
        return Location("file_line", name, int(number), pos=start), found.end()
    if not IDENT.fullmatch(name):
        raise ParseFailure(start, _LOC_EXPECTED)
    if number is None:
        return Location("func", name, pos=start), found.end()
    offset = int_literal(number)
    if offset is None:
        raise ParseFailure(colon + 1, "an instruction offset after ':'")
    return Location("func_offset", name, offset, pos=start), found.end()


class SpecParser(ExprParser):
    """The spec grammar on top of the expression parser."""

    # spec level

    def spec(self, loc: Location) -> Spec:
        condition: Expr | Watch | None = None
        if self.at("if"):  # LOC if COND print ITEMS
            self.advance()
            condition = self.condition()
            action = self.action()
        else:  # LOC print ITEMS [if COND]
            action = self.action()
            if self.at("if"):
                self.advance()
                condition = self.condition()
        if self.tok.kind != "eof":
            self.fail(_expected_at_end(action, condition))
        return Spec(loc, action, condition, self.text, pos=loc.pos)

    def action(self) -> Action:
        pos, skip = self.tok.pos, 0
        if self.at("skip"):
            self.advance()
            if self.tok.kind != "num":
                self.fail("a count after 'skip'")
            skip = self.advance().num
            if not self.at("print", "stop"):
                self.fail("'print' or 'stop' after 'skip N'")
        if self.at("stop"):
            self.advance()
            return Action(skip, (), True, pos=pos)
        self.expect("print", "'print', 'stop' or 'skip N' after the location")
        items = [self.item()]
        while self.at(","):
            self.advance()
            if self.at("stop"):
                self.advance()
                return Action(skip, tuple(items), True, pos=pos)
            items.append(self.item())
        return Action(skip, tuple(items), False, pos=pos)

    def item(self) -> Expr:
        self.need_expr(_ITEM_EXPECTED)
        return self.expr()

    def condition(self) -> Expr | Watch:
        if self.at("watch"):
            return self.watch()
        self.need_expr("a condition (EXPR or watch ADDR, SIZE, TYPE) after 'if'")
        return self.expr()

    def watch(self) -> Watch:
        pos = self.advance().pos
        self.need_expr("an address after 'watch'")
        addr = self.expr()
        self.expect(",", "',' after watch ADDR")
        size = self.size(WATCH_SIZES, "a watch SIZE of 1, 2, 4 or 8")
        self.expect(",", "',' after watch ADDR, SIZE")
        if self.tok.kind != "word" or self.tok.text not in WATCH_TYPES:
            self.fail("a watch TYPE: w, r, rw (or write, read, access)")
        return Watch(addr, size, WATCH_TYPES[self.advance().text], pos=pos)


def _expected_at_end(action: Action, condition: Expr | Watch | None) -> str:
    if isinstance(condition, Watch):
        return "end of spec"
    if condition is not None:
        return "an operator or end of spec"
    if action.stop:
        return "'if' or end of spec"
    return "an operator, ',', 'if' or end of spec"


# --- API ------------------------------------------------------------------------------


def parse_spec(text: str, index: int = 1) -> Spec:
    """Parse one INSPECT_SPEC; `index` (1-based) names it in errors."""
    try:
        loc, end = _location(text)
        return SpecParser(text, end).spec(loc)
    except ParseFailure as failure:
        raise SpecError(index, failure.pos + 1, failure.expected) from None


def parse_specs(texts: Sequence[str]) -> list[Spec]:
    """Parse the specs of one `inspect` command, numbered from 1."""
    return [parse_spec(text, index) for index, text in enumerate(texts, 1)]
