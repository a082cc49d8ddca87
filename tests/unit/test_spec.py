"""INSPECT_SPEC parser (qstep.probe.spec), expression parser and evaluator (qstep.expr)."""

from __future__ import annotations

import contextlib
import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qstep.errors import UsageError
from qstep.expr.ast import (
    MASK,
    PRECEDENCE,
    Binary,
    Expr,
    Index,
    IPv4,
    IPv6,
    Mem,
    Name,
    Num,
    Reg,
    Str,
    Unary,
    Value,
)
from qstep.expr.evaluate import evaluate, format_value
from qstep.expr.parser import RESERVED, SpecError, parse_expression
from qstep.probe.spec import Action, Location, Spec, Watch, parse_spec, parse_specs

DOC_1 = ('process_packet:230 print "hit 1" if $r1 == 0 and mem($r9, 0) == 0x20010db8 '
         "and mem($r9, 8) == 0")
DOC_2 = ("process_packet:289 print mem($r10 - 116, 8), stats if $r1 == 0 and mem($r9, 0) == 1 "
         "and mem($r9, 8) == 2")


def ip6(text: str) -> IPv6:
    return IPv6(ipaddress.IPv6Address(text).packed)


def ip4(text: str) -> IPv4:
    return IPv4(ipaddress.IPv4Address(text).packed)


class FakeEnv:
    """Registers, sparse memory and named values for evaluate()."""

    def __init__(self, regs: dict[int, int] | None = None, memory: dict[int, bytes] | None = None,
                 names: dict[str, Value] | None = None) -> None:
        self.regs = regs or {}
        self.bytes: dict[int, int] = {}
        for base, data in (memory or {}).items():
            self.bytes.update({base + i: b for i, b in enumerate(data)})
        self.names = names or {}

    def reg(self, n: int) -> int:
        return self.regs.get(n, 0)

    def mem(self, addr: int, size: int) -> bytes:
        return bytes(self.bytes.get(addr + i, 0) for i in range(size))

    def name(self, name: str) -> Value:
        if name not in self.names:
            raise UsageError(f"unknown map or variable {name!r}")
        return self.names[name]


class MapEnv(FakeEnv):
    def lookup(self, name: str, key: Value) -> Value:
        table: dict[tuple[str, Value], Value] = {("m", 1): 100, ("m", b"ab"): b"xy"}
        return table.get((name, key), 0)


def ev(text: str, env: FakeEnv | None = None) -> Value:
    return evaluate(parse_expression(text), env or FakeEnv())


# --- design-doc examples -------------------------------------------------------------


def test_design_doc_example_1_exact_ast() -> None:
    spec = parse_spec(DOC_1)
    cond = Binary("&&", Binary("&&", Binary("==", Reg(1), Num(0)),
                               Binary("==", Mem(Reg(9), 0), Num(0x20010DB8))),
                  Binary("==", Mem(Reg(9), 8), Num(0)))
    assert spec == Spec(Location("func_offset", "process_packet", 230),
                        Action(0, (Str(b"hit 1"),), False), cond)
    assert spec.text == DOC_1
    assert (spec.loc.pos, spec.action.pos, spec.action.prints[0].pos) == (0, 19, 25)
    assert isinstance(spec.condition, Binary)
    assert spec.condition.pos == DOC_1.index("and mem($r9, 8")


def test_design_doc_example_2_exact_ast() -> None:
    spec = parse_spec(DOC_2)
    cond = Binary("&&", Binary("&&", Binary("==", Reg(1), Num(0)),
                               Binary("==", Mem(Reg(9), 0), Num(1))),
                  Binary("==", Mem(Reg(9), 8), Num(2)))
    prints = (Mem(Binary("-", Reg(10), Num(116)), 8), Name("stats"))
    assert spec == Spec(Location("func_offset", "process_packet", 289),
                        Action(0, prints, False), cond)
    assert [p.pos for p in spec.action.prints] == [25, DOC_2.index("stats")]


def test_design_doc_example_evaluates() -> None:
    # Both mem() calls read at $r9 (the second argument is a SIZE; 0 = auto, 8 bytes here).
    spec = parse_spec(DOC_2)
    assert isinstance(spec.condition, Binary)
    env = FakeEnv(regs={1: 0, 9: 0x100}, memory={0x100: (1).to_bytes(8, "little")})
    assert evaluate(spec.condition.left, env) == 1
    assert evaluate(spec.condition, env) == 0
    env.bytes[0x100] = 2
    assert evaluate(spec.condition.right, env) == 1


# --- extensions ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "loc"), [
    ("xdp_main print 1", Location("func", "xdp_main")),
    ("xdp_main:0x10 print 1", Location("func_offset", "xdp_main", 16)),
    ("  l4lb.c:120 print 1", Location("file_line", "l4lb.c", 120)),
    ("src/bpf/parse-hdr.h:7 print 1", Location("file_line", "src/bpf/parse-hdr.h", 7)),
])
def test_locations(text: str, loc: Location) -> None:
    assert parse_spec(text).loc == loc


def test_actions_skip_stop_and_optional_condition() -> None:
    assert parse_spec("f stop").action == Action(0, (), True)
    assert parse_spec("f skip 3 stop if $r1").action == Action(3, (), True)
    spec = parse_spec("f skip 0x10 print $r1, stop")
    assert spec.action == Action(16, (Reg(1),), True) and spec.condition is None


def test_print_items() -> None:
    spec = parse_spec('f print "x\\n\\x00\\\\\\"", stats, stats[$r2 + 1], reg(r3), mem($r1, 3), '
                      "$r1 & 0xff")
    assert spec.action.prints == (
        Str(b'x\n\x00\\"'), Name("stats"), Index(Name("stats"), Binary("+", Reg(2), Num(1))),
        Reg(3), Mem(Reg(1), 3), Binary("&", Reg(1), Num(255)))


def test_registers_in_all_spellings() -> None:
    assert parse_expression("$r0") == parse_expression("r0") == Reg(0)
    assert parse_expression("reg(r10)") == parse_expression("reg($r10)") == Reg(10)


@pytest.mark.parametrize(("text", "node"), [
    ("1.2.3.4", ip4("1.2.3.4")),
    ("::", ip6("::")),
    ("::1", ip6("::1")),
    ("2001:db8::1", ip6("2001:db8::1")),
    ("fe80::aBcD", ip6("fe80::abcd")),
    ("::ffff:1.2.3.4", ip6("::ffff:1.2.3.4")),
    ("1:2:3:4:5:6:7:8", ip6("1:2:3:4:5:6:7:8")),
    ("0x20010DB8", Num(0x20010DB8)),
    ("18446744073709551615", Num(MASK)),
    ('"\\t\\r\\0é"', Str(b"\t\r\x00\xc3\xa9")),
])
def test_literals(text: str, node: Expr) -> None:
    assert parse_expression(text) == node


def test_watch_condition_types() -> None:
    for word, canon in [("w", "w"), ("write", "w"), ("r", "r"), ("read", "r"),
                        ("rw", "rw"), ("access", "rw")]:
        spec = parse_spec(f"f print $r1 if watch $r10 - 8, 8, {word}")
        assert spec.condition == Watch(Binary("-", Reg(10), Num(8)), 8, canon)


def test_ipv6_after_location_and_in_keys() -> None:
    spec = parse_spec("f:3 print m[::1] if $r1 == 2001:db8::1")
    assert spec.loc == Location("func_offset", "f", 3)
    assert spec.action.prints == (Index(Name("m"), ip6("::1")),)
    assert spec.condition == Binary("==", Reg(1), ip6("2001:db8::1"))


def test_parse_specs_numbers_specs_from_one() -> None:
    assert len(parse_specs(["f stop", "g print 1"])) == 2
    with pytest.raises(SpecError) as err:
        parse_specs(["f stop", "f print mem(1,8 x"])
    assert str(err.value) == "inspect: spec 2, column 17: expected ')' after mem(ADDR, SIZE"
    assert (err.value.spec_index, err.value.column) == (2, 17)
    assert err.value.expected == "')' after mem(ADDR, SIZE"


# --- precedence ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "tree"), [
    ("a & b == c", Binary("&", Name("a"), Binary("==", Name("b"), Name("c")))),
    ("a || b && c", Binary("||", Name("a"), Binary("&&", Name("b"), Name("c")))),
    ("a or b and not c", Binary("||", Name("a"),
                                Binary("&&", Name("b"), Unary("!", Name("c"))))),
    ("a | b ^ c & d", Binary("|", Name("a"),
                             Binary("^", Name("b"), Binary("&", Name("c"), Name("d"))))),
    ("a < b == c >= d", Binary("==", Binary("<", Name("a"), Name("b")),
                               Binary(">=", Name("c"), Name("d")))),
    ("a - b - c", Binary("-", Binary("-", Name("a"), Name("b")), Name("c"))),
    ("a << b + c", Binary("<<", Name("a"), Binary("+", Name("b"), Name("c")))),
    ("-a * b", Binary("*", Unary("-", Name("a")), Name("b"))),
    ("!x", Unary("!", Name("x"))),
    ("not x == 1", Binary("==", Unary("!", Name("x")), Num(1))),
    ("~(a + b) % c", Binary("%", Unary("~", Binary("+", Name("a"), Name("b"))), Name("c"))),
])
def test_precedence_like_c(text: str, tree: Expr) -> None:
    assert parse_expression(text) == tree


@pytest.mark.parametrize(("text", "value"), [
    ("1 + 2 * 3 == 7", 1),
    ("1 << 2 + 1 == 8", 1),
    ("(1 + 2) * 3", 9),
    ("10 - 2 - 3", 5),
    ("100 / 7 % 4", 2),
    ("6 & 3 == 3", 0),
    ("-1", MASK),
    ("0 - 1 == 0xffffffffffffffff", 1),
    ("--5", 5),
    ("~0", MASK),
    ("0xffffffffffffffff + 2", 1),
    ("0x8000000000000000 * 2", 0),
    ("1 << 64", 1),
    ("-1 >> 63", 1),
    ("-1 > 1", 1),
    ("!5", 0),
    ("not 0", 1),
    ("3 && 4", 1),
    ("0 || 0", 0),
    ("1 || 1 / 0", 1),
    ("0 and 1 / 0", 0),
    ("5 ^ 1 | 8", 12),
])
def test_evaluate_u64_semantics(text: str, value: int) -> None:
    assert ev(text) == value


# --- evaluation ----------------------------------------------------------------------

PACKED6 = ipaddress.IPv6Address("2001:db8::1").packed


def env_with_packet() -> FakeEnv:
    return FakeEnv(regs={1: 7, 9: 0x1000},
                   memory={0x1000: PACKED6, 0x2000: bytes([1, 2, 3, 4, 5])},
                   names={"stats": 3, "blob": b"\x01\x02"})


@pytest.mark.parametrize(("text", "value"), [
    ("$r1 + reg(r1)", 14),
    ("mem(0x2000, 4)", 0x04030201),
    ("mem(0x2000, 1)", 1),
    ("mem(0x2000, 3)", b"\x01\x02\x03"),
    ("mem(0x2000, 0)", 0x0504030201),
    ("mem($r9, 16) == 2001:db8::1", 1),
    ("mem($r9, 0) == 2001:db8::1", 1),
    ("2001:db8::2 != mem($r9, 0)", 1),
    ("mem(0x2000, 4) == 1.2.3.4", 1),
    ("mem(0x2000, 0) == 1.2.3.4", 1),
    ("mem(0x2000, 2) == \"\\x01\\x02\"", 1),
    ("mem(0x2000, 3) < \"\\x01\\x02\\x04\"", 1),
    ("stats * 2", 6),
    ("blob == \"\\x01\\x02\"", 1),
])
def test_evaluate_against_env(text: str, value: Value) -> None:
    assert ev(text, env_with_packet()) == value


@pytest.mark.parametrize(("text", "message"), [
    ("1 + 5 / 0", "division by zero at column 7"),
    ("5 % (1 - 1)", "division by zero at column 3"),
    ("mem(0x2000, 3) == \"ab\"", "cannot compare 3 bytes with 2 bytes at column 16"),
    ("$r1 == ::1", "cannot compare a number with 16 bytes at column 5"),
    ("\"ab\" + 1", "'+' needs a number, not 2 bytes at column 6"),
    ("-blob", "'-' needs a number, not 2 bytes at column 1"),
    ("nosuch", "unknown map or variable 'nosuch'"),
    ("m[1]", "map lookup m[...] is not available here at column 1"),
])
def test_evaluate_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        ev(text, env_with_packet())


def test_map_lookup_through_env() -> None:
    assert ev("m[1] + 1", MapEnv()) == 101
    assert ev('m["ab"] == "xy"', MapEnv()) == 1


def test_format_value() -> None:
    assert format_value(31) == "0x1f (31)"
    assert format_value(PACKED6, ip6("::1")) == "2001:db8::1"
    assert format_value(PACKED6, IPv6) == "2001:db8::1"
    assert format_value(PACKED6) == "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01"
    assert format_value(b"\x01\x02\x03\x04", IPv4) == "1.2.3.4"
    assert format_value(0x04030201, ip4("1.2.3.4")) == "1.2.3.4"
    assert format_value(b"hi\n", Str) == '"hi\\n"'


# --- errors --------------------------------------------------------------------------

ITEM = "a print item (expression, string, map name, reg(rN) or mem(ADDR, SIZE))"
ERRORS = [
    ("", 1, "a location FUNC, FUNC:OFFSET or FILE.c:LINE"),
    ("f:1 if $r1 == 0", 16, "'print', 'stop' or 'skip N' after the location"),
    ("f:1 print (1 + 2", 17, "')' to close the '(' at column 11"),
    ("f:1 print mem($r1)", 18, "',' after mem(ADDR"),
    ("f:1 print mem($r1, 3x)", 20, "a decimal or 0x hex number below 2**64"),
    ("f:1 print mem($r1, 65)", 20, "a SIZE literal 1..64 (0 = auto) in mem(ADDR, SIZE)"),
    ("f:1 print mem($r1, $r2)", 20, "a SIZE literal 1..64 (0 = auto) in mem(ADDR, SIZE)"),
    ("f:1 print $r1 if $r1 == 0 junk", 27, "an operator or end of spec"),
    ("f:1 print $r1 junk", 15, "an operator, ',', 'if' or end of spec"),
    ("f:1 skip print $r1", 10, "a count after 'skip'"),
    ("f:1 skip 2 if 1", 12, "'print' or 'stop' after 'skip N'"),
    ("f:1 print $r1 if watch $r10, 8, rwx", 33, "a watch TYPE: w, r, rw (or write, read, access)"),
    ("f:1 print $r1 if watch $r10, 3, w", 30, "a watch SIZE of 1, 2, 4 or 8"),
    ("f:1 print $r1 if watch $r10 8", 29, "',' after watch ADDR"),
    ("f:1 print if $r1", 11, ITEM),
    ("f:1 print $r1,", 15, ITEM),
    ("f:1 print $r1 if", 17, "a condition (EXPR or watch ADDR, SIZE, TYPE) after 'if'"),
    ("f:1 print ::1 == 1::2::3", 18, "a valid IPv6 address"),
    ("f:1 print 1.2.3", 11, "a valid IPv4 address"),
    ("f:1 print 256.1.1.1", 11, "a valid IPv4 address"),
    ('f:1 print "abc', 11, "a closing '\"' for the string started here"),
    ('f:1 print "a\\q"', 13, "an escape \\\\, \\\", \\n, \\t, \\r, \\0 or \\xNN"),
    ("f:1 print r11", 11, "a BPF register r0..r10"),
    ("f:1 print $rax", 11, "a BPF register $r0..$r10"),
    ("f:1 print reg(1)", 15, "a register r0..r10 in reg(rN)"),
    ("f:1 print reg(r1", 17, "')' after reg(rN"),
    ("prog.c print $r1", 7, "':LINE' after the file name"),
    ("prog.c:0 print $r1", 8, "a line number after ':'"),
    ("f: print 1", 3, "an instruction offset after ':'"),
    ("f(x) print 1", 1, "a location FUNC, FUNC:OFFSET or FILE.c:LINE"),
    ("f:1 print 1 +", 14, "an operand after '+'"),
    ("f:1 print x[1", 14, "']' after x[KEY"),
    ("f:1 print $r1 = 1", 15, "'==' for comparison"),
    ("f:1 print 1 @ 2", 13, "an operand or operator, not '@'"),
    ("f:1 stop, $r1", 9, "'if' or end of spec"),
    ("f:1 print 99999999999999999999", 11, "a decimal or 0x hex number below 2**64"),
    ("f:1 print " + "(" * 200 + "1", 11 + 128, "a simpler expression (at most 128 operators)"),
]


@pytest.mark.parametrize(("text", "column", "expected"), ERRORS)
def test_spec_errors_name_column_and_expectation(text: str, column: int, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(text, 3)
    assert str(err.value) == f"inspect: spec 3, column {column}: expected {expected}"
    assert (err.value.spec_index, err.value.column, err.value.expected) == (3, column, expected)
    assert isinstance(err.value, UsageError)


def test_expression_errors() -> None:
    with pytest.raises(SpecError, match=r"^expression, column 5: expected an operand after '\+'$"):
        parse_expression("1 + )")
    with pytest.raises(SpecError, match=r"^expression, column 3: expected an expression$"):
        parse_expression("  ")
    with pytest.raises(SpecError, match=r"column 3: expected an operator or end of expression"):
        parse_expression("1 2")


# --- fuzzing -------------------------------------------------------------------------

TOKENS = [
    "process_packet:230", "f", "a.c:12", "print", "skip", "stop", "if", "watch", "and", "or",
    "not", "$r1", "r10", "r11", "$rax", "$", "reg", "mem", "(", ")", "[", "]", ",", "==", "!=",
    "<<", ">>", "<=", "+", "-", "*", "/", "%", "!", "~", "&", "|", "^", "&&", "||", "=", "0",
    "8", "65", "0x20010db8", '"hit 1"', '"', "\\", "1.2.3.4", "::1", "2001:db8::1", "1::2::3",
    "::ffff:1.2.3.4", "stats", "w", "rw", "access", "3x", ":", ".", "fe80:", "é",
]


def check_parse(text: str) -> Spec | None:
    """Parse or fail with a well-formed SpecError; parsed specs round-trip."""
    try:
        spec = parse_spec(text, 4)
    except SpecError as err:
        assert 1 <= err.column <= len(text) + 1
        assert str(err).startswith(f"inspect: spec 4, column {err.column}: expected ")
        return None
    assert parse_spec(spec.to_text()) == spec
    return spec


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_fuzz_arbitrary_text(text: str) -> None:
    check_parse(text)
    with contextlib.suppress(SpecError):
        parse_expression(text)


@settings(max_examples=500)
@given(st.lists(st.sampled_from(TOKENS), max_size=14), st.sampled_from([" ", ""]))
def test_fuzz_token_soup(tokens: list[str], sep: str) -> None:
    check_parse(sep.join(tokens))
    try:
        expr = parse_expression(sep.join(tokens[1:]))
    except SpecError:
        return
    with contextlib.suppress(UsageError):
        evaluate(expr, MapEnv(names={"stats": 1, "w": b"\x00" * 16}))


# --- round trip ----------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True).filter(
    lambda s: s not in RESERVED and not re.fullmatch(r"r[0-9]+", s))
LEAVES = st.one_of(
    st.builds(Num, st.integers(0, MASK)),
    st.builds(Str, st.binary(max_size=6)),
    st.builds(IPv4, st.binary(min_size=4, max_size=4)),
    st.builds(IPv6, st.binary(min_size=16, max_size=16)),
    st.builds(Reg, st.integers(0, 10)),
    st.builds(Name, NAMES),
)


def compound(inner: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(Mem, inner, st.integers(0, 64)),
        st.builds(Index, st.builds(Name, NAMES), inner),
        st.builds(Unary, st.sampled_from(["-", "~", "!"]), inner),
        st.builds(Binary, st.sampled_from(sorted(PRECEDENCE)), inner, inner),
    )


EXPRS: st.SearchStrategy[Expr] = st.recursive(LEAVES, compound, max_leaves=10)
LOCATIONS = st.one_of(
    st.builds(Location, st.just("func"), NAMES),
    st.builds(Location, st.just("func_offset"), NAMES, st.integers(0, 1 << 20)),
    st.builds(Location, st.just("file_line"),
              st.from_regex(r"[a-z0-9_/.-]{0,8}\.[ch]", fullmatch=True), st.integers(1, 10**6)),
)
ACTIONS = st.one_of(
    st.builds(Action, st.integers(0, 1000), st.lists(EXPRS, min_size=1, max_size=3).map(tuple),
              st.booleans()),
    st.builds(Action, st.integers(0, 1000), st.just(()), st.just(True)),
)
CONDITIONS = st.one_of(
    st.none(), EXPRS,
    st.builds(Watch, EXPRS, st.sampled_from([1, 2, 4, 8]), st.sampled_from(["w", "r", "rw"])),
)


@given(EXPRS)
def test_expression_round_trip(expr: Expr) -> None:
    assert parse_expression(expr.to_text()) == expr


@given(st.builds(Spec, LOCATIONS, ACTIONS, CONDITIONS))
def test_spec_round_trip(spec: Spec) -> None:
    assert parse_spec(spec.to_text()) == spec


def test_condition_first_order_is_the_same_spec() -> None:
    a = parse_spec("l4lb.bpf.c:145 print vip_num, stats if real->dstv6 == 2001:db8::3")
    b = parse_spec("l4lb.bpf.c:145 if real->dstv6 == 2001:db8::3 print vip_num, stats")
    assert a == b and a.to_text() == b.to_text()
    c = parse_spec("f:3 if $r1 == 2 skip 1 print $r2")
    assert c.action.skip == 1 and c.condition is not None
    with pytest.raises(UsageError, match="column 12: expected 'print', 'stop' or 'skip N'"):
        parse_spec("f:3 if $r1 2")
