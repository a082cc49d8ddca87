r"""Parser for INSPECT_SPECs (`qstep inspect PROG SPEC...`) and for debugger expressions.

Grammar (keywords are case-sensitive; whitespace only separates tokens)::

    SPEC      := LOC ACTION [if CONDITION]            (no `if`: every hit)
    LOC       := FUNC | FUNC:OFFSET | FILE:LINE       (FILE ends in .c or .h; OFFSET is the
                                                       BPF instruction offset within FUNC)
    ACTION    := [skip N] (print ITEM {, ITEM} [, stop] | stop)
    ITEM      := EXPR          a string, a bare map name (dump), map[KEY], reg(rN), mem(...)
    CONDITION := EXPR | watch EXPR, WSIZE, TYPE       WSIZE 1|2|4|8,
                                                      TYPE w|write, r|read, rw|access
    EXPR      := binary operators, loosest first, all left-associative (as in C):
                 || or | && and | '|' | ^ | & | == != | < <= > >= | << >> | + - | * / %
                 then unary - ~ ! not (`not` is `!` and binds like it)
    PRIMARY   := NUM | STRING | IPV4 | IPV6 | $rN | rN | reg(rN) | mem(EXPR, SIZE)
                 | NAME | NAME[EXPR] | (EXPR)

NUM is decimal or 0x hex below 2**64; STRING is "..." with escapes \\ \" \n \t \r \0
\xNN; registers are r0..r10 only; SIZE is a literal 1..64, or 0 for "auto" (see
`qstep.probe.expr`). IPv6 literals use any standard form (`::1`, `::ffff:1.2.3.4`):
LOC is split off first, so a colon after it can only belong to an IPv6 literal.
Reserved words: and or not if print skip stop watch reg mem. A NAME is a map or C
variable that the caller resolves. Errors are `SpecError`s naming the column and
what was expected there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NoReturn

from qstep.errors import UsageError
from qstep.probe.expr import (
    PRECEDENCE,
    Binary,
    Expr,
    Index,
    IPv4,
    IPv6,
    Mem,
    Name,
    Node,
    Num,
    Reg,
    Str,
    Unary,
)

__all__ = [
    "Action", "Location", "PrintItem", "Spec", "SpecError", "Watch",
    "parse_expression", "parse_spec", "parse_specs",
]

PrintItem = Expr
LocationKind = Literal["func_offset", "file_line", "func"]
MAX_OPERATORS = 128
RESERVED = frozenset({"and", "or", "not", "if", "print", "skip", "stop", "watch", "reg", "mem"})
WATCH_TYPES = {"w": "w", "write": "w", "r": "r", "read": "r", "rw": "rw", "access": "rw"}
WATCH_SIZES = (1, 2, 4, 8)
_LOC_EXPECTED = "a location FUNC, FUNC:OFFSET or FILE.c:LINE"
_ITEM_EXPECTED = "a print item (expression, string, map name, reg(rN) or mem(ADDR, SIZE))"
_WORD_OPS = {"and": "&&", "or": "||", "not": "!"}
_ESCAPES = {"\\": 0x5C, '"': 0x22, "n": 0x0A, "t": 0x09, "r": 0x0D, "0": 0x00}
_OPS2 = frozenset({"<<", ">>", "<=", ">=", "==", "!=", "&&", "||"})
_OPS1 = frozenset("+-*/%<>&^|~!()[],")

_SPACE = re.compile(r"\s*", re.ASCII)
_HEXRUN = re.compile(r"[0-9A-Fa-f:.]*")
_NUMWORD = re.compile(r"[0-9A-Za-z_.]*")
_WORDCHAR = re.compile(r"[0-9A-Za-z_]")
_IDENT = re.compile(r"[A-Za-z_][0-9A-Za-z_]*")
_DOLLAR = re.compile(r"\$[0-9A-Za-z_]*")
_REG = re.compile(r"r(10|[0-9])")
_NUMBER = re.compile(r"0[xX][0-9A-Fa-f]{1,16}|[0-9]{1,20}")
_DOTTED = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_LOC = re.compile(r"([^\s:]*)(?::(\S*))?")
_PATH = re.compile(r"[0-9A-Za-z_./+-]+")
_LINE = re.compile(r"[1-9][0-9]{0,8}")


class SpecError(UsageError):
    """A malformed spec or expression: where (1-based column) and what was expected."""

    def __init__(self, spec_index: int | None, column: int, expected: str) -> None:
        where = "expression" if spec_index is None else f"inspect: spec {spec_index}"
        super().__init__(f"{where}, column {column}: expected {expected}")
        self.spec_index = spec_index
        self.column = column
        self.expected = expected


class _Fail(Exception):
    """Internal parse failure at a 0-based position; becomes a SpecError."""

    def __init__(self, pos: int, expected: str) -> None:
        super().__init__(expected)
        self.pos = pos
        self.expected = expected


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


# --- lexer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # num str ipv4 ipv6 reg word op eof
    text: str
    pos: int
    end: int
    num: int = 0
    data: bytes = b""


def _scan(text: str, pos: int) -> _Tok:
    """The token starting at or after `pos`."""
    pos = _match(_SPACE, text, pos).end()
    if pos == len(text):
        return _Tok("eof", "", pos, pos)
    char = text[pos]
    if ":" in _match(_HEXRUN, text, pos).group():
        return _scan_ipv6(text, pos)
    if char in "0123456789":
        return _scan_number(text, pos)
    if char == '"':
        return _scan_string(text, pos)
    if char == "$":
        return _scan_dollar(text, pos)
    if _IDENT.match(text, pos):
        return _scan_word(text, pos)
    return _scan_op(text, pos)


def _match(pattern: re.Pattern[str], text: str, pos: int) -> re.Match[str]:
    found = pattern.match(text, pos)
    assert found is not None  # only used with patterns that match the empty string
    return found


def _scan_ipv6(text: str, pos: int) -> _Tok:
    word = _match(_HEXRUN, text, pos).group()
    end = pos + len(word)
    try:
        if _WORDCHAR.match(text, end):
            raise ValueError(word)
        packed = ipaddress.IPv6Address(word).packed
    except ValueError:
        raise _Fail(pos, "a valid IPv6 address") from None
    return _Tok("ipv6", word, pos, end, data=packed)


def _scan_number(text: str, pos: int) -> _Tok:
    word = _match(_NUMWORD, text, pos).group()
    end = pos + len(word)
    if "." in word:
        try:
            if not _DOTTED.fullmatch(word):
                raise ValueError(word)
            packed = ipaddress.IPv4Address(word).packed
        except ValueError:
            raise _Fail(pos, "a valid IPv4 address") from None
        return _Tok("ipv4", word, pos, end, data=packed)
    value = _int_literal(word)
    if value is None:
        raise _Fail(pos, "a decimal or 0x hex number below 2**64")
    return _Tok("num", word, pos, end, num=value)


def _int_literal(word: str) -> int | None:
    """Value of a decimal or 0x hex literal below 2**64, else None."""
    if not _NUMBER.fullmatch(word):
        return None
    value = int(word[2:], 16) if word[:2] in ("0x", "0X") else int(word)
    return value if value < 1 << 64 else None


def _scan_string(text: str, pos: int) -> _Tok:
    out = bytearray()
    i = pos + 1
    while i < len(text) and text[i] != '"':
        if text[i] != "\\":
            out += text[i].encode("utf-8", "surrogatepass")
            i += 1
            continue
        byte, i = _escape(text, i)
        out.append(byte)
    if i >= len(text):
        raise _Fail(pos, "a closing '\"' for the string started here")
    return _Tok("str", text[pos:i + 1], pos, i + 1, data=bytes(out))


def _escape(text: str, i: int) -> tuple[int, int]:
    """The byte of the escape at text[i] ('\\') and the index after it."""
    code = text[i + 1:i + 2]
    if code in _ESCAPES:
        return _ESCAPES[code], i + 2
    digits = text[i + 2:i + 4]
    if code == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", digits):
        return int(digits, 16), i + 4
    raise _Fail(i, r"an escape \\, \", \n, \t, \r, \0 or \xNN")


def _scan_dollar(text: str, pos: int) -> _Tok:
    word = _match(_DOLLAR, text, pos).group()
    if not _REG.fullmatch(word[1:]):
        raise _Fail(pos, "a BPF register $r0..$r10")
    return _Tok("reg", word, pos, pos + len(word), num=int(word[2:]))


def _scan_word(text: str, pos: int) -> _Tok:
    word = _match(_IDENT, text, pos).group()
    end = pos + len(word)
    if _REG.fullmatch(word):
        return _Tok("reg", word, pos, end, num=int(word[1:]))
    if re.fullmatch(r"r[0-9]+", word):
        raise _Fail(pos, "a BPF register r0..r10")
    return _Tok("word", word, pos, end)


def _scan_op(text: str, pos: int) -> _Tok:
    for size, ops in ((2, _OPS2), (1, _OPS1)):
        if text[pos:pos + size] in ops:
            return _Tok("op", text[pos:pos + size], pos, pos + size)
    if text[pos] == "=":
        raise _Fail(pos, "'==' for comparison")
    raise _Fail(pos, f"an operand or operator, not {text[pos]!r}")


# --- parser ---------------------------------------------------------------------------


def _location(text: str) -> tuple[Location, int]:
    """The LOC at the start of `text` and the index after it."""
    start = _match(_SPACE, text, 0).end()
    found = _match(_LOC, text, start)
    name, number = found.group(1), found.group(2)
    colon = start + len(name)
    if name.endswith((".c", ".h")):
        if not _PATH.fullmatch(name):
            raise _Fail(start, "a file name")
        if number is None:
            raise _Fail(colon, "':LINE' after the file name")
        if not _LINE.fullmatch(number):
            raise _Fail(colon + 1, "a line number after ':'")
        return Location("file_line", name, int(number), pos=start), found.end()
    if not _IDENT.fullmatch(name):
        raise _Fail(start, _LOC_EXPECTED)
    if number is None:
        return Location("func", name, pos=start), found.end()
    offset = _int_literal(number)
    if offset is None:
        raise _Fail(colon + 1, "an instruction offset after ':'")
    return Location("func_offset", name, offset, pos=start), found.end()


_LITERALS: dict[str, Callable[[_Tok], Expr]] = {
    "num": lambda tok: Num(tok.num, pos=tok.pos),
    "str": lambda tok: Str(tok.data, pos=tok.pos),
    "ipv4": lambda tok: IPv4(tok.data, pos=tok.pos),
    "ipv6": lambda tok: IPv6(tok.data, pos=tok.pos),
    "reg": lambda tok: Reg(tok.num, pos=tok.pos),
}


class _Parser:
    """Recursive-descent parser over a lazily scanned token stream (one lookahead)."""

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.tok = _scan(text, pos)
        self.budget = MAX_OPERATORS

    def advance(self) -> _Tok:
        tok = self.tok
        self.tok = _scan(self.text, tok.end)
        return tok

    def at(self, *words: str) -> bool:
        return self.tok.kind in ("word", "op") and self.tok.text in words

    def fail(self, expected: str) -> NoReturn:
        raise _Fail(self.tok.pos, expected)

    def expect(self, word: str, expected: str) -> _Tok:
        if not self.at(word):
            self.fail(expected)
        return self.advance()

    def spend(self, pos: int) -> None:
        """Bound nesting and size so recursion stays shallow."""
        self.budget -= 1
        if self.budget < 0:
            raise _Fail(pos, f"a simpler expression (at most {MAX_OPERATORS} operators)")

    def starts_expr(self) -> bool:
        tok = self.tok
        if tok.kind in _LITERALS:
            return True
        if tok.kind == "op":
            return tok.text in ("(", "-", "~", "!")
        return tok.kind == "word" and (tok.text not in RESERVED
                                       or tok.text in ("not", "reg", "mem"))

    def need_expr(self, expected: str) -> None:
        if not self.starts_expr():
            self.fail(expected)

    # spec level

    def spec(self, loc: Location) -> Spec:
        action = self.action()
        condition: Expr | Watch | None = None
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

    def size(self, allowed: Sequence[int], expected: str) -> int:
        if self.tok.kind != "num" or self.tok.num not in allowed:
            self.fail(expected)
        return self.advance().num

    # expressions

    def expr(self) -> Expr:
        return self.binary(1)

    def binary(self, min_prec: int) -> Expr:
        """Precedence climbing: operators binding at least `min_prec`, left-associative."""
        left = self.unary()
        while (op := self.binary_op()) is not None and PRECEDENCE[op] >= min_prec:
            tok = self.advance()
            self.spend(tok.pos)
            self.need_expr(f"an operand after '{tok.text}'")
            left = Binary(op, left, self.binary(PRECEDENCE[op] + 1), pos=tok.pos)
        return left

    def binary_op(self) -> str | None:
        tok = self.tok
        if tok.kind == "op" and tok.text in PRECEDENCE:
            return tok.text
        if tok.kind == "word" and tok.text in ("and", "or"):
            return _WORD_OPS[tok.text]
        return None

    def unary(self) -> Expr:
        if not self.at("-", "~", "!", "not"):
            return self.primary()
        tok = self.advance()
        self.spend(tok.pos)
        self.need_expr(f"an operand after '{tok.text}'")
        return Unary(_WORD_OPS.get(tok.text, tok.text), self.unary(), pos=tok.pos)

    def primary(self) -> Expr:
        tok = self.tok
        if tok.kind in _LITERALS:
            return _LITERALS[tok.kind](self.advance())
        if self.at("("):
            return self.paren()
        if self.at("reg"):
            return self.reg_call()
        if self.at("mem"):
            return self.mem_call()
        if tok.kind == "word" and tok.text not in RESERVED:
            return self.name()
        self.fail("an expression")

    def paren(self) -> Expr:
        opening = self.advance()
        self.spend(opening.pos)
        self.need_expr("an expression after '('")
        inner = self.expr()
        self.expect(")", f"')' to close the '(' at column {opening.pos + 1}")
        return inner

    def reg_call(self) -> Reg:
        pos = self.advance().pos
        self.expect("(", "'(' after 'reg'")
        if self.tok.kind != "reg":
            self.fail("a register r0..r10 in reg(rN)")
        n = self.advance().num
        self.expect(")", "')' after reg(rN")
        return Reg(n, pos=pos)

    def mem_call(self) -> Mem:
        pos = self.advance().pos
        self.spend(pos)
        self.expect("(", "'(' after 'mem'")
        self.need_expr("an address in mem(ADDR, SIZE)")
        addr = self.expr()
        self.expect(",", "',' after mem(ADDR")
        size = self.size(range(65), "a SIZE literal 1..64 (0 = auto) in mem(ADDR, SIZE)")
        self.expect(")", "')' after mem(ADDR, SIZE")
        return Mem(addr, size, pos=pos)

    def name(self) -> Name | Index:
        tok = self.advance()
        base = Name(tok.text, pos=tok.pos)
        if not self.at("["):
            return base
        self.spend(self.advance().pos)
        self.need_expr(f"a key in {tok.text}[KEY]")
        key = self.expr()
        self.expect("]", f"']' after {tok.text}[KEY")
        return Index(base, key, pos=tok.pos)


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
        return _Parser(text, end).spec(loc)
    except _Fail as failure:
        raise SpecError(index, failure.pos + 1, failure.expected) from None


def parse_specs(texts: Sequence[str]) -> list[Spec]:
    """Parse the specs of one `inspect` command, numbered from 1."""
    return [parse_spec(text, index) for index, text in enumerate(texts, 1)]


def parse_expression(text: str) -> Expr:
    """Parse a debugger expression (`print`/`x` argument)."""
    try:
        parser = _Parser(text, 0)
        parser.need_expr("an expression")
        expr = parser.expr()
        if parser.tok.kind != "eof":
            parser.fail("an operator or end of expression")
        return expr
    except _Fail as failure:
        raise SpecError(None, failure.pos + 1, failure.expected) from None
