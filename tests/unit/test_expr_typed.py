"""C expressions (qstep.expr parser + qstep.expr.typed) over DWARF types of vars.bpf.c,
with memory and variables built by hand."""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from qstep.bpf.elf import BpfObject
from qstep.dwarf.format import decode, format_value
from qstep.dwarf.model import DwarfModel
from qstep.dwarf.types import CType
from qstep.dwarf.values import Value
from qstep.errors import UsageError
from qstep.expr.ast import Cast, Deref, Member, Name, SizeOf, Subscript
from qstep.expr.evaluate import evaluate
from qstep.expr.parser import parse_expression
from qstep.expr.typed import common_type, evaluate_typed, uses_c

KEY_ADDR, META_ADDR, CNT_ADDR = 0x1000, 0x2000, 0x3000
KEY = (ipaddress.ip_address("10.0.0.1").packed + ipaddress.ip_address("10.0.0.10").packed
       + struct.pack(">HH", 1234, 80) + bytes([17, 0, 0, 0]))
META = struct.pack("<IBBH", 50, 0x54, 64, 1)
COUNTERS = struct.pack("<QQI4I", 6, 1050, 7, 0, 0, 1, 0) + bytes(4)


class Env:
    def __init__(self, model: DwarfModel) -> None:
        self.model = model
        self.memory = {KEY_ADDR: KEY, META_ADDR: META, CNT_ADDR: COUNTERS}
        t = model.find_type
        flow, meta, counters = t("struct flow_key"), t("struct pkt_meta"), t("struct counters")
        assert flow and meta and counters
        u32 = t("__u32")
        assert u32 is not None
        self.vars = {
            "key": Value(flow, KEY, (True,) * 16, KEY_ADDR),
            "meta": Value(meta, META, (True,) * 8, META_ADDR),
            "cnt": Value(CType("pointer", size=8, target=counters),
                         CNT_ADDR.to_bytes(8, "little"), (True,) * 8),
            "h": Value(u32, struct.pack("<I", 0xFFFFFFFF), (True,) * 4),
            "gone": Value(u32, bytes(4), (False,) * 4, None, "optimized out"),
        }

    def reg(self, n: int) -> int:
        return {1: CNT_ADDR, 10: 0x9000}.get(n, 0)

    def mem(self, addr: int, size: int) -> bytes:
        for base, data in self.memory.items():
            if base <= addr and addr + size <= base + len(data):
                return data[addr - base:addr - base + size]
        raise UsageError(f"cannot read {addr:#x}")

    def variable(self, name: str) -> Value | None:
        return self.vars.get(name)

    def find_type(self, name: str) -> CType | None:
        return self.model.find_type(name)


@pytest.fixture(scope="module")
def env(bpf_obj: Callable[[str], Path]) -> Env:
    return Env(DwarfModel.from_bytes(BpfObject.open(bpf_obj("tests/progs/vars.bpf.c")).data))


def ev(env: Env, text: str) -> Value:
    expr = parse_expression(text, lambda w: env.find_type(w) is not None)
    return evaluate_typed(expr, env)


def test_parser_builds_c_nodes_and_unparses_them() -> None:
    expr = parse_expression("cnt->hits[2] + *p + sizeof(struct flow_key) + (__u8)x.y",
                            lambda w: w == "__u8")
    text = expr.to_text()
    assert parse_expression(text, lambda w: w == "__u8") == expr
    assert isinstance(parse_expression("a.b"), Member)
    assert isinstance(parse_expression("a->b[1]"), Subscript)
    assert isinstance(parse_expression("*p"), Deref)
    assert isinstance(parse_expression("(struct x *)$r7"), Cast)
    assert isinstance(parse_expression("sizeof(int)"), SizeOf)
    assert isinstance(parse_expression("(h)"), Name)  # not a type: a parenthesized name
    assert uses_c(parse_expression("$r1 + key")) and not uses_c(parse_expression("$r1 + 1"))
    with pytest.raises(UsageError, match="column 3: expected a member name"):
        parse_expression("a.")
    with pytest.raises(UsageError, match="needs C types"):
        evaluate(parse_expression("a.b"), None)  # type: ignore[arg-type]


def test_members_pointers_indexing_and_addresses(env: Env) -> None:
    assert format_value(ev(env, "key.saddr"), "saddr") == "10.0.0.1"
    assert decode(ev(env, "cnt->hits[2]")) == 1
    assert decode(ev(env, "(*cnt).bytes")) == 1050
    assert decode(ev(env, "cnt[0].packets")) == 6
    assert decode(ev(env, "meta.ihl")) == 5 and decode(ev(env, "meta.version")) == 4
    assert decode(ev(env, "&key")) == KEY_ADDR
    assert decode(ev(env, "&key.dport")) == KEY_ADDR + 10
    assert decode(ev(env, "*&meta.ttl")) == 64
    assert decode(ev(env, "((struct pkt_meta *)0x2000)->len")) == 50
    assert decode(ev(env, "((struct counters *)$r1)->last_len")) == 7
    assert decode(ev(env, "*(__u16 *)(&key.sport)")) == struct.unpack("<H", KEY[8:10])[0]
    assert decode(ev(env, "&cnt->hits[1] - &cnt->hits[0]")) == 1
    assert decode(ev(env, "(char *)&cnt->hits[1] - (char *)cnt")) == 24
    assert decode(ev(env, "sizeof(struct flow_key)")) == 16
    assert decode(ev(env, "sizeof meta")) == 8
    assert decode(ev(env, "sizeof(cnt->hits)")) == 16
    assert ev(env, "&key").type.c_name() == "struct flow_key *"


def test_c_arithmetic_widths_signedness_and_promotions(env: Env) -> None:
    assert decode(ev(env, "h + 1")) == 0  # unsigned int wraps at 32 bits
    assert ev(env, "h + 1").type.c_name() == "unsigned int"
    assert decode(ev(env, "h + 4294967296")) == 0x1FFFFFFFF  # a long literal: long
    assert decode(ev(env, "(int)h")) == -1
    assert decode(ev(env, "(int)h / 2")) == 0  # truncation toward zero
    assert decode(ev(env, "-7 / 2")) == -3 and decode(ev(env, "-7 % 2")) == -1
    assert decode(ev(env, "(int)h < 0")) == 1
    assert decode(ev(env, "(int)h < 0 + h")) == 0  # int vs unsigned int: unsigned compare
    assert decode(ev(env, "(unsigned char)257")) == 1
    assert decode(ev(env, "meta.ttl - 65")) == -1  # __u8 promotes to int
    assert decode(ev(env, "~(unsigned char)0")) == -1  # ~ of the promoted int
    assert ev(env, "~(unsigned char)0").type.c_name() == "int"
    assert decode(ev(env, "1 << 31")) == -(1 << 31)
    assert common_type(ev(env, "h").type, ev(env, "1").type).c_name() == "unsigned int"
    with pytest.raises(UsageError, match="shift count 32 is out of range for int"):
        ev(env, "1 << 32")
    with pytest.raises(UsageError, match="division by zero"):
        ev(env, "h / 0")


def test_byte_comparisons_with_address_literals(env: Env) -> None:
    assert decode(ev(env, "key.saddr == 10.0.0.1")) == 1
    assert decode(ev(env, "key.daddr != 10.0.0.1")) == 1
    assert decode(ev(env, 'key.pad == "\\0\\0\\0"')) == 1
    assert decode(ev(env, "key.saddr == 10.0.0.1 && meta.ttl > 1")) == 1
    with pytest.raises(UsageError, match="cannot compare 4 bytes .* with 16 bytes"):
        ev(env, "key.saddr == ::1")
    with pytest.raises(UsageError, match="cannot compare struct flow_key with int"):
        ev(env, "key == 5")


def test_errors_name_the_problem_and_column(env: Env) -> None:
    cases = {
        "key.nope": "struct flow_key has no member 'nope'",
        "h->x": "cannot apply '->' to a __u32 (not a pointer)",
        "*h": "cannot dereference a __u32",
        "key[1]": "cannot index a struct flow_key",
        "cnt.packets": "struct counters * is not a struct or union (use ->)",
        "cnt->hits[4]": "index 4 is out of bounds of __u32[4]",
        "gone + 1": "optimized out here",
        "&h": "cannot take the address of h",
        "nosuch": 'No symbol "nosuch" in current context',
        "(struct nosuch *)0": "no type named 'struct nosuch'",
        "(struct flow_key)h": "cannot cast __u32 to struct flow_key",
        "((struct pkt_meta *)0)->len": "the pointer is NULL",
    }
    for text, message in cases.items():
        with pytest.raises(UsageError, match=re.escape(message)):
            ev(env, text)
    with pytest.raises(UsageError, match=r"\(column 4\)"):
        ev(env, "key.nope")
