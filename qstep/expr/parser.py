r"""Recursive-descent parser of the expression language (C operators and precedence).

Grammar::

    EXPR    := binary operators, loosest first, all left-associative (as in C):
               || or | && and | '|' | ^ | & | == != | < <= > >= | << >> | + - | * / %
               then unary - ~ ! not (`not` is `!` and binds like it)
               and the C prefixes * & (TYPE) sizeof(TYPE) sizeof UNARY
    POSTFIX := PRIMARY { .NAME | ->NAME | [EXPR] }
    PRIMARY := NUM | STRING | IPV4 | IPV6 | $rN | rN | reg(rN) | mem(EXPR, SIZE)
               | NAME | NAME[EXPR] | (EXPR)

NUM is decimal or 0x hex below 2**64; STRING is "..." with escapes \\ \" \n \t \r \0
\xNN; registers are r0..r10 only; SIZE is a literal 1..64, or 0 for "auto". IPv6
literals use any standard form (`::1`, `::ffff:1.2.3.4`). A NAME is a map or C variable
that the caller resolves. `(WORDS *...)` is a cast when its first word is a C type
keyword or a name the caller's ``is_type`` accepts (a typedef), as C decides. The spec
language (`qstep.probe.spec`) extends `ExprParser`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn

from qstep.errors import UsageError
from qstep.expr.ast import (
    PRECEDENCE,
    AddrOf,
    Binary,
    Cast,
    Deref,
    Expr,
    Index,
    IPv4,
    IPv6,
    Mem,
    Member,
    Name,
    Num,
    Reg,
    SizeOf,
    Str,
    Subscript,
    Unary,
)
from qstep.expr.lexer import ParseFailure, Tok, scan

MAX_OPERATORS = 128
RESERVED = frozenset({"and", "or", "not", "if", "print", "skip", "stop", "watch", "reg", "mem"})
_WORD_OPS = {"and": "&&", "or": "||", "not": "!"}
TYPE_WORDS = frozenset({"struct", "union", "enum", "unsigned", "signed", "char", "short", "int",
                        "long", "void", "const", "volatile", "_Bool"})


class SpecError(UsageError):
    """A malformed spec or expression: where (1-based column) and what was expected."""

    def __init__(self, spec_index: int | None, column: int, expected: str) -> None:
        where = "expression" if spec_index is None else f"inspect: spec {spec_index}"
        super().__init__(f"{where}, column {column}: expected {expected}")
        self.spec_index = spec_index
        self.column = column
        self.expected = expected


_LITERALS: dict[str, Callable[[Tok], Expr]] = {
    "num": lambda tok: Num(tok.num, pos=tok.pos),
    "str": lambda tok: Str(tok.data, pos=tok.pos),
    "ipv4": lambda tok: IPv4(tok.data, pos=tok.pos),
    "ipv6": lambda tok: IPv6(tok.data, pos=tok.pos),
    "reg": lambda tok: Reg(tok.num, pos=tok.pos),
}


class ExprParser:
    """Recursive-descent parser over a lazily scanned token stream (one lookahead)."""

    def __init__(self, text: str, pos: int,
                 is_type: Callable[[str], bool] | None = None) -> None:
        self.text = text
        self.tok = scan(text, pos)
        self.budget = MAX_OPERATORS
        self.is_type = is_type or (lambda _name: False)

    def advance(self) -> Tok:
        tok = self.tok
        self.tok = scan(self.text, tok.end)
        return tok

    def at(self, *words: str) -> bool:
        return self.tok.kind in ("word", "op") and self.tok.text in words

    def fail(self, expected: str) -> NoReturn:
        raise ParseFailure(self.tok.pos, expected)

    def expect(self, word: str, expected: str) -> Tok:
        if not self.at(word):
            self.fail(expected)
        return self.advance()

    def spend(self, pos: int) -> None:
        """Bound nesting and size so recursion stays shallow."""
        self.budget -= 1
        if self.budget < 0:
            raise ParseFailure(pos, f"a simpler expression (at most {MAX_OPERATORS} operators)")

    def starts_expr(self) -> bool:
        tok = self.tok
        if tok.kind in _LITERALS:
            return True
        if tok.kind == "op":
            return tok.text in ("(", "-", "~", "!", "*", "&")
        return tok.kind == "word" and (tok.text not in RESERVED
                                       or tok.text in ("not", "reg", "mem"))

    def need_expr(self, expected: str) -> None:
        if not self.starts_expr():
            self.fail(expected)

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
        if self.at("*", "&"):
            tok = self.advance()
            self.spend(tok.pos)
            self.need_expr(f"an operand after '{tok.text}'")
            node = Deref if tok.text == "*" else AddrOf
            return node(self.unary(), pos=tok.pos)
        if self.at("sizeof"):
            return self.sizeof()
        if self.at("(") and self.type_follows():
            return self.cast()
        if not self.at("-", "~", "!", "not"):
            return self.postfix(self.primary())
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

    def type_follows(self) -> bool:
        """True if the token after the current '(' starts a C type name."""
        nxt = scan(self.text, self.tok.end)
        return nxt.kind == "word" and (nxt.text in TYPE_WORDS or self.is_type(nxt.text))

    def type_name(self) -> str:
        """C type words and '*'s up to (not including) ')'."""
        words: list[str] = []
        while self.tok.kind == "word" or self.at("*"):
            words.append(self.advance().text)
        if not words:
            self.fail("a type name")
        text = " ".join(w for w in words if w != "*")
        stars = words.count("*")
        return text + (" " + "*" * stars if stars else "")

    def cast(self) -> Cast:
        opening = self.advance()
        self.spend(opening.pos)
        name = self.type_name()
        self.expect(")", f"')' to close the cast at column {opening.pos + 1}")
        self.need_expr(f"an operand after the cast to ({name})")
        return Cast(name, self.unary(), pos=opening.pos)

    def sizeof(self) -> SizeOf:
        tok = self.advance()
        self.spend(tok.pos)
        if self.at("(") and self.type_follows():
            self.advance()
            name = self.type_name()
            self.expect(")", "')' after sizeof(TYPE")
            return SizeOf(name, pos=tok.pos)
        self.need_expr("an operand after 'sizeof'")
        return SizeOf("", self.unary(), pos=tok.pos)

    def postfix(self, base: Expr) -> Expr:
        """Members (. ->) and subscripts after a primary expression."""
        while self.at(".", "->", "["):
            tok = self.advance()
            self.spend(tok.pos)
            if tok.text == "[":
                self.need_expr("an index in [INDEX]")
                index = self.expr()
                self.expect("]", f"']' to close the '[' at column {tok.pos + 1}")
                base = Subscript(base, index, pos=tok.pos)
                continue
            if self.tok.kind != "word":
                self.fail(f"a member name after '{tok.text}'")
            base = Member(base, self.advance().text, tok.text == "->", pos=tok.pos)
        return base

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


def parse_expression(text: str, is_type: Callable[[str], bool] | None = None) -> Expr:
    """Parse a debugger expression (`print`/`x` argument); ``is_type`` names typedefs."""
    try:
        parser = ExprParser(text, 0, is_type)
        parser.need_expr("an expression")
        expr = parser.expr()
        if parser.tok.kind != "eof":
            parser.fail("an operator or end of expression")
        return expr
    except ParseFailure as failure:
        raise SpecError(None, failure.pos + 1, failure.expected) from None
