"""Tokens of the expression and spec languages, scanned lazily one at a time."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_ESCAPES = {"\\": 0x5C, '"': 0x22, "n": 0x0A, "t": 0x09, "r": 0x0D, "0": 0x00}
_OPS2 = frozenset({"<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "->"})
_OPS1 = frozenset("+-*/%<>&^|~!()[],.")

SPACE = re.compile(r"\s*", re.ASCII)
IDENT = re.compile(r"[A-Za-z_][0-9A-Za-z_]*")
_HEXRUN = re.compile(r"[0-9A-Fa-f:.]*")
_NUMWORD = re.compile(r"[0-9A-Za-z_.]*")
_WORDCHAR = re.compile(r"[0-9A-Za-z_]")
_DOLLAR = re.compile(r"\$[0-9A-Za-z_]*")
_REG = re.compile(r"r(10|[0-9])")
_NUMBER = re.compile(r"0[xX][0-9A-Fa-f]{1,16}|[0-9]{1,20}")
_DOTTED = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")


class ParseFailure(Exception):
    """A parse failure at a 0-based position; the caller turns it into a user error."""

    def __init__(self, pos: int, expected: str) -> None:
        super().__init__(expected)
        self.pos = pos
        self.expected = expected


@dataclass(frozen=True)
class Tok:
    """One token: `kind` is num str ipv4 ipv6 reg word op eof."""

    kind: str
    text: str
    pos: int
    end: int
    num: int = 0
    data: bytes = b""


def scan(text: str, pos: int) -> Tok:
    """The token starting at or after `pos`."""
    pos = match(SPACE, text, pos).end()
    if pos == len(text):
        return Tok("eof", "", pos, pos)
    char = text[pos]
    if ":" in match(_HEXRUN, text, pos).group():
        return _scan_ipv6(text, pos)
    if char in "0123456789":
        return _scan_number(text, pos)
    if char == '"':
        return _scan_string(text, pos)
    if char == "$":
        return _scan_dollar(text, pos)
    if IDENT.match(text, pos):
        return _scan_word(text, pos)
    return _scan_op(text, pos)


def match(pattern: re.Pattern[str], text: str, pos: int) -> re.Match[str]:
    found = pattern.match(text, pos)
    assert found is not None  # only used with patterns that match the empty string
    return found


def _scan_ipv6(text: str, pos: int) -> Tok:
    word = match(_HEXRUN, text, pos).group()
    end = pos + len(word)
    try:
        if _WORDCHAR.match(text, end):
            raise ValueError(word)
        packed = ipaddress.IPv6Address(word).packed
    except ValueError:
        raise ParseFailure(pos, "a valid IPv6 address") from None
    return Tok("ipv6", word, pos, end, data=packed)


def _scan_number(text: str, pos: int) -> Tok:
    word = match(_NUMWORD, text, pos).group()
    end = pos + len(word)
    if "." in word:
        try:
            if not _DOTTED.fullmatch(word):
                raise ValueError(word)
            packed = ipaddress.IPv4Address(word).packed
        except ValueError:
            raise ParseFailure(pos, "a valid IPv4 address") from None
        return Tok("ipv4", word, pos, end, data=packed)
    value = int_literal(word)
    if value is None:
        raise ParseFailure(pos, "a decimal or 0x hex number below 2**64")
    return Tok("num", word, pos, end, num=value)


def int_literal(word: str) -> int | None:
    """Value of a decimal or 0x hex literal below 2**64, else None."""
    if not _NUMBER.fullmatch(word):
        return None
    value = int(word[2:], 16) if word[:2] in ("0x", "0X") else int(word)
    return value if value < 1 << 64 else None


def _scan_string(text: str, pos: int) -> Tok:
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
        raise ParseFailure(pos, "a closing '\"' for the string started here")
    return Tok("str", text[pos:i + 1], pos, i + 1, data=bytes(out))


def _escape(text: str, i: int) -> tuple[int, int]:
    """The byte of the escape at text[i] ('\\') and the index after it."""
    code = text[i + 1:i + 2]
    if code in _ESCAPES:
        return _ESCAPES[code], i + 2
    digits = text[i + 2:i + 4]
    if code == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", digits):
        return int(digits, 16), i + 4
    raise ParseFailure(i, r"an escape \\, \", \n, \t, \r, \0 or \xNN")


def _scan_dollar(text: str, pos: int) -> Tok:
    word = match(_DOLLAR, text, pos).group()
    if not _REG.fullmatch(word[1:]):
        raise ParseFailure(pos, "a BPF register $r0..$r10")
    return Tok("reg", word, pos, pos + len(word), num=int(word[2:]))


def _scan_word(text: str, pos: int) -> Tok:
    word = match(IDENT, text, pos).group()
    end = pos + len(word)
    if _REG.fullmatch(word):
        return Tok("reg", word, pos, end, num=int(word[1:]))
    if re.fullmatch(r"r[0-9]+", word):
        raise ParseFailure(pos, "a BPF register r0..r10")
    return Tok("word", word, pos, end)


def _scan_op(text: str, pos: int) -> Tok:
    for size, ops in ((2, _OPS2), (1, _OPS1)):
        if text[pos:pos + size] in ops:
            return Tok("op", text[pos:pos + size], pos, pos + size)
    if text[pos] == "=":
        raise ParseFailure(pos, "'==' for comparison")
    raise ParseFailure(pos, f"an operand or operator, not {text[pos]!r}")
