"""qstep.probe.codegen: generated probes run in the oracle interpreter against fake helpers,
their conditions checked against `qstep.expr.evaluate`, and loaded by the host verifier.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qstep.bpf.insn import PSEUDO_MAP_FD, Insn, decode, encode
from qstep.errors import HostError, UsageError
from qstep.expr.ast import (
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
from qstep.expr.evaluate import evaluate
from qstep.oracle import FlatMemory, run_program
from qstep.oracle.run import POISON, Helper
from qstep.probe.codegen import (
    PT_REGS,
    PT_RSP,
    CompiledProbe,
    MapRef,
    ProbeTarget,
    compile_probe,
)
from qstep.probe.records import MapValue, ProbeHit, decode_record
from qstep.probe.spec import Action, Location, Spec, parse_spec

M64 = (1 << 64) - 1
CTX, GUEST, GUEST_SIZE = 0x1000_0000, 0x5000_0000, 256
LOW = 512  # with low=True, 0..LOW-1 is readable too (the GUEST bytes, twice)
MAP_AREA, RING_AREA, HANDLE = 0x6000_0000, 0x7000_0000, 0xFFFF_9000_0000_0000
EFAULT = -14 & M64
PROBE = 5

EVENTS = MapRef("qstep_events", 100, 27, 0, 0, 1 << 16)
COUNTERS = MapRef("qstep_counters", 101, 2, 4, 8, 512)
STATS = MapRef("stats", 102, 2, 4, 16, 16)
FLOWS = MapRef("flows", 103, 1, 4, 8, 64)
ADDRS = MapRef("addrs", 104, 1, 16, 12, 64)
BIG = MapRef("big", 105, 2, 4, 8, 1000)
MAPS = {m.name: m for m in (STATS, FLOWS, ADDRS, BIG)}


def target(entry: bool = False, probe_id: int = PROBE) -> ProbeTarget:
    return ProbeTarget(probe_id, entry, EVENTS, COUNTERS, MAPS)


# ---- fake kernel -----------------------------------------------------------------------


@dataclass
class FakeMap:
    """A map whose values live in FlatMemory; hash maps keep a key -> slot table."""

    ref: MapRef
    base: int
    keys: dict[bytes, int] = field(default_factory=dict)

    def slot(self, key: bytes) -> int | None:
        if self.ref.map_type == 2:
            index = int.from_bytes(key, "little")
            return index if index < self.ref.max_entries else None
        return self.keys.get(key)

    def addr(self, key: bytes) -> int:
        slot = self.slot(key)
        return 0 if slot is None else self.base + slot * self.ref.value_size


class FakeKernel:
    """Guest memory, maps and the helpers a probe calls."""

    def __init__(self, guest: bytes = bytes(GUEST_SIZE), low: bool = False) -> None:
        self.memory = FlatMemory()
        self.readable: list[tuple[int, int]] = [(GUEST, GUEST + len(guest))]
        self.memory.write(GUEST, guest)
        if low:
            self.readable.append((0, LOW))
            self.memory.write(0, (guest * 2).ljust(LOW, b"\0"))
        self.maps: dict[int, FakeMap] = {}
        base = MAP_AREA
        for ref in (COUNTERS, *MAPS.values()):
            self.maps[ref.map_id] = FakeMap(ref, base)
            size = ref.value_size * ref.max_entries
            self.memory.write(base, bytes(size))
            self.readable.append((base, base + size))
            base += size + 0x1000
        if low:
            for key in (0, 1, 2, 3, 7):
                self.set_value(FLOWS, struct.pack("<I", key), guest[8 * key:8 * key + 8])
        self.ring_free = 1 << 20
        self.ring_next = RING_AREA
        self.pending: dict[int, int] = {}
        self.records: list[bytes] = []
        self.stops: list[tuple[int, int]] = []

    def set_value(self, ref: MapRef, key: bytes, value: bytes) -> None:
        fake = self.maps[ref.map_id]
        if fake.slot(key) is None:
            fake.keys[key] = len(fake.keys)
        self.memory.write(fake.addr(key), value)

    def counters(self) -> list[int]:
        base = self.maps[COUNTERS.map_id].base + 8 * 8 * PROBE
        return [int.from_bytes(self.memory.read(base + 8 * k, 8), "little") for k in range(6)]

    def can_read(self, addr: int, size: int) -> bool:
        return size == 0 or any(lo <= addr and addr + size <= hi for lo, hi in self.readable)

    def env_mem(self, addr: int, size: int) -> bytes:
        if not self.can_read(addr, size):
            raise UsageError(f"cannot read {size} bytes at {addr:#x}")
        return self.memory.read(addr, size)

    # helpers: (registers, memory) -> r0

    def lookup(self, regs: list[int], mem: FlatMemory) -> int:
        fake = self.maps[regs[1] - HANDLE]
        return fake.addr(mem.read(regs[2], fake.ref.key_size))

    def probe_read(self, regs: list[int], mem: FlatMemory) -> int:
        dst, size, src = regs[1], regs[2], regs[3]
        if not self.can_read(src, size):
            mem.write(dst, bytes(size))  # the kernel zeroes the buffer on failure
            return EFAULT
        mem.write(dst, mem.read(src, size))
        return 0

    def reserve(self, regs: list[int], mem: FlatMemory) -> int:
        size = regs[2]
        if size > self.ring_free:
            return 0
        self.ring_free -= size
        addr, self.ring_next = self.ring_next, self.ring_next + size + 8
        self.pending[addr] = size
        return addr

    def submit(self, regs: list[int], mem: FlatMemory) -> int:
        self.records.append(mem.read(regs[1], self.pending.pop(regs[1])))
        return 0

    def read_value(self, regs: list[int], mem: FlatMemory) -> int:
        self.stops.append((regs[1], regs[3]))
        mem.write(regs[2], bytes(regs[3]))
        return 0

    def run(self, probe: CompiledProbe, bpf_regs: list[int], entry: bool = False) -> None:
        """Run `probe` once with the probed program's registers `bpf_regs`."""
        ctx = bytearray(184)
        for n, off in PT_REGS.items():
            struct.pack_into("<Q", ctx, off, bpf_regs[n])
        if entry:
            struct.pack_into("<Q", ctx, PT_REGS[10], POISON)
            struct.pack_into("<Q", ctx, PT_RSP, (bpf_regs[10] + 8) & M64)
        self.memory.write(CTX, bytes(ctx))
        refs = probe.map_refs
        helpers: dict[int, Helper] = {1: self.lookup, 56: self.read_value, 113: self.probe_read,
                   131: self.reserve, 132: self.submit}

        def map_handle(insn: Insn) -> int:
            assert insn.src == PSEUDO_MAP_FD
            return HANDLE + refs[insn.imm]

        ret = run_program(decode(probe.insns), {1: CTX}, self.memory, helpers,
                          ldimm64_value=map_handle)
        assert ret == 0
        assert not self.pending, "reserved record not submitted"

    def hits(self, probe: CompiledProbe) -> list[ProbeHit]:
        return [decode_record(r, probe.layout) for r in self.records]


class Env:
    """What `evaluate` sees: the same registers, guest memory and maps."""

    def __init__(self, kernel: FakeKernel, regs: list[int]) -> None:
        self.kernel, self.regs = kernel, regs

    def reg(self, n: int) -> int:
        return self.regs[n]

    def mem(self, addr: int, size: int) -> bytes:
        return self.kernel.env_mem(addr, size)

    def name(self, name: str) -> Value:
        raise UsageError(f"unknown name {name}")

    def lookup(self, name: str, key: Value) -> Value:
        fake = self.kernel.maps[MAPS[name].map_id]
        size = fake.ref.key_size
        raw = key if isinstance(key, bytes) else (key & ((1 << 8 * size) - 1)).to_bytes(size,
                                                                                      "little")
        addr = fake.addr(raw)
        if not addr:
            raise UsageError("no such key")
        data = self.kernel.memory.read(addr, fake.ref.value_size)
        return int.from_bytes(data, "little") if len(data) in (1, 2, 4, 8) else data


def regs_of(**values: int) -> list[int]:
    regs = [0] * 11
    for name, value in values.items():
        regs[int(name[1:])] = value & M64
    return regs


def compile_text(text: str, entry: bool = False) -> CompiledProbe:
    return compile_probe(parse_spec(text), target(entry))


def run_text(text: str, kernel: FakeKernel, regs: list[int], entry: bool = False,
             times: int = 1) -> CompiledProbe:
    probe = compile_text(text, entry)
    for _ in range(times):
        kernel.run(probe, regs, entry)
    return probe


# ---- the design-doc examples -----------------------------------------------------------

EXAMPLE_1 = ('process_packet:230 print "hit 1" if $r1 == 0 and mem($r9, 0) == 0x20010db8 '
             "and mem($r9, 8) == 0")
EXAMPLE_2 = ("process_packet:289 print mem($r10 - 116, 8), stats if $r1 == 0 and "
             "mem($r9, 0) == 1 and mem($r9, 8) == 2")
# mem(A, 0) and mem(A, 8) both read 8 bytes at A, so the doc examples can never be
# true; the variants read the second word at A + 8.
VARIANT_1 = EXAMPLE_1.replace("mem($r9, 8)", "mem($r9 + 8, 8)")
VARIANT_2 = EXAMPLE_2.replace("mem($r9, 8)", "mem($r9 + 8, 8)")


def test_doc_examples_as_written_agree_with_evaluate() -> None:
    for text in (EXAMPLE_1, EXAMPLE_2):
        condition = parse_spec(text).condition
        assert isinstance(condition, Binary)
        for word in (0x20010DB8, 0, 1, 2):
            kernel = FakeKernel()
            kernel.memory.write(GUEST, struct.pack("<QQ", word, word))
            regs = regs_of(r1=0, r9=GUEST, r10=GUEST + 200)
            run_text(text, kernel, regs)
            assert _expected(condition, kernel, regs) == 0
            assert kernel.counters()[:2] == [1, 0]


def test_example_hit_1() -> None:
    kernel = FakeKernel()
    kernel.memory.write(GUEST + 32, struct.pack("<QQ", 0x20010DB8, 0))
    probe = run_text(VARIANT_1, kernel, regs_of(r1=0, r9=GUEST + 32))
    assert kernel.counters() == [1, 1, 0, 1, 0, 0]
    [hit] = kernel.hits(probe)
    assert (hit.probe_id, hit.hit, hit.flags, hit.values) == (PROBE, 1, 0, [b"hit 1"])
    kernel.run(probe, regs_of(r1=1, r9=GUEST + 32))       # $r1 != 0
    kernel.run(probe, regs_of(r1=0, r9=GUEST + 40))       # other memory
    kernel.run(probe, regs_of(r1=0, r9=0x1234))           # unreadable: false
    kernel.run(probe, regs_of(r1=0, r9=GUEST + 32))
    assert kernel.counters() == [5, 2, 0, 2, 0, 0]
    assert [h.hit for h in kernel.hits(probe)] == [1, 2]


def test_example_stats() -> None:
    kernel = FakeKernel()
    kernel.memory.write(GUEST, struct.pack("<QQ", 1, 2))
    kernel.memory.write(GUEST + 200 - 116, struct.pack("<Q", 0x1122334455667788))
    for key in range(16):
        kernel.set_value(STATS, struct.pack("<I", key), struct.pack("<QQ", key, key * 100))
    probe = run_text(VARIANT_2, kernel, regs_of(r1=0, r9=GUEST, r10=GUEST + 200))
    assert probe.layout.size == 16 + 8 + 8 + 16 * 16
    [hit] = kernel.hits(probe)
    assert hit.values[0] == 0x1122334455667788 and hit.flags == 0
    stats = hit.values[1]
    assert isinstance(stats, MapValue) and stats.whole and stats.name == "stats"
    assert stats.entries == tuple(struct.pack("<QQ", k, k * 100) for k in range(16))
    assert probe.map_refs[:3] == [EVENTS.map_id, COUNTERS.map_id, STATS.map_id]
    assert "map[stats]" in probe.text and "call bpf_ringbuf_reserve#131" in probe.text


def test_failed_read_in_print_sets_flag_and_zeroes() -> None:
    kernel = FakeKernel(bytes(range(256)))
    probe = run_text('f print "x", mem($r1, 16), mem($r2, 8), mem($r1, 3)', kernel,
                     regs_of(r1=0x99, r2=GUEST + 8))
    [hit] = kernel.hits(probe)
    assert hit.values == [b"x", bytes(16), int.from_bytes(bytes(range(8, 16)), "little"),
                          bytes(3)]
    assert hit.flags == (1 << 2) | (1 << 4)
    assert hit.failed(1) and not hit.failed(2) and hit.failed(3)


# ---- skip, stop, drops, function entry -------------------------------------------------


def test_skip_counts_and_hit_numbers() -> None:
    kernel = FakeKernel()
    probe = run_text("f skip 2 print $r1 if $r1 > 3", kernel, regs_of(r1=7), times=4)
    kernel.run(probe, regs_of(r1=1))
    assert kernel.counters() == [5, 4, 2, 2, 0, 0]
    assert [(h.hit, h.values) for h in kernel.hits(probe)] == [(3, [7]), (4, [7])]


def test_huge_skip() -> None:
    kernel = FakeKernel()
    run_text(f"f skip {1 << 40} print $r1", kernel, regs_of(), times=2)
    assert kernel.counters() == [2, 2, 2, 0, 0, 0]


def test_stop_sets_flag_and_calls_read_value() -> None:
    kernel = FakeKernel()
    probe = run_text("f print $r2, stop if $r1 == 5", kernel, regs_of(r1=5, r2=9))
    run_text("f print $r2, stop if $r1 == 5", kernel, regs_of(r1=4))
    [hit] = kernel.hits(probe)
    assert hit.stop and hit.values == [9] and hit.flags == 1
    assert kernel.counters() == [2, 1, 0, 1, 0, 1]
    assert kernel.stops == [(CTX, 24)]


def test_bare_stop_writes_header_record() -> None:
    kernel = FakeKernel()
    probe = run_text("f stop", kernel, regs_of())
    assert probe.layout.size == 16
    [hit] = kernel.hits(probe)
    assert hit.stop and hit.values == [] and kernel.counters() == [1, 1, 0, 1, 0, 1]


def test_full_ring_buffer_counts_drops() -> None:
    kernel = FakeKernel()
    kernel.ring_free = 40
    run_text("f print $r1, $r2", kernel, regs_of(r1=1, r2=2), times=3)
    assert kernel.counters() == [3, 3, 0, 1, 2, 0]
    assert len(kernel.records) == 1


def test_r10_at_function_entry() -> None:
    kernel = FakeKernel()
    regs = regs_of(r10=0xFFFF_C900_0001_2340)
    probe = run_text("f print $r10", kernel, regs, entry=True)
    probe_body = run_text("f print $r10", kernel, regs)
    assert [h.values for h in kernel.hits(probe)] == [[regs[10]], [regs[10]]]
    assert probe.insns != probe_body.insns


# ---- maps ------------------------------------------------------------------------------


def test_map_lookup_print_and_condition() -> None:
    kernel = FakeKernel(bytes(range(256)))
    kernel.set_value(FLOWS, struct.pack("<I", 7), struct.pack("<Q", 70))
    kernel.set_value(FLOWS, bytes([10, 0, 0, 1]), struct.pack("<Q", 10001))
    kernel.set_value(ADDRS, bytes(range(16)), b"twelve bytes")
    spec = ("f print flows[$r1], flows[10.0.0.1], addrs[mem($r2, 16)], addrs[::1], flows[$r1 + 1] "
            "if flows[$r1] == 70 && addrs[mem($r2, 16)] == \"twelve bytes\"")
    probe = run_text(spec, kernel, regs_of(r1=7, r2=GUEST))
    [hit] = kernel.hits(probe)
    assert hit.values[0] == MapValue("flows", True, (struct.pack("<Q", 70),))
    assert isinstance(hit.values[1], MapValue) and hit.values[1].value == struct.pack("<Q", 10001)
    assert isinstance(hit.values[2], MapValue) and hit.values[2].value == b"twelve bytes"
    assert isinstance(hit.values[3], MapValue) and hit.values[3].value is None
    assert hit.values[4] == MapValue("flows", False, (bytes(8),)) and hit.flags == 0
    kernel.run(probe, regs_of(r1=8, r2=GUEST))       # key absent: condition false
    kernel.run(probe, regs_of(r1=7, r2=GUEST + 1))   # other bytes
    assert kernel.counters()[:2] == [3, 1]


def test_integer_key_zero_extended_to_key_size() -> None:
    kernel = FakeKernel()
    kernel.set_value(ADDRS, (5).to_bytes(16, "little"), b"five" * 3)
    probe = run_text("f print addrs[$r1 + 1] if addrs[$r1 + 1] == \"fivefivefive\"", kernel,
                     regs_of(r1=4))
    [hit] = kernel.hits(probe)
    assert isinstance(hit.values[0], MapValue) and hit.values[0].value == b"five" * 3


def test_numbers_compared_with_short_bytes_read_little_endian() -> None:
    kernel = FakeKernel(bytes(range(1, 256)))
    for text, true in [('"ab" == 0x6261', True), ("1.2.3.4 == 0x04030201", True),
                       ('"ab" < 0x6262', True), ('0x6261 >= "ab"', True),
                       ("mem($r1, 3) == 0x030201", True), ("0x030202 > mem($r1, 3)", True),
                       ("mem($r1, 0) == 1.2.3.4", True), ("mem($r1, 4) != 0x04030201", False),
                       ("mem($r1, 5) == 0x0504030201", True),
                       ("mem($r1, 7) > 0x07060504030200", True)]:
        kernel = FakeKernel(bytes(range(1, 256)))
        run_text(f"f print 1 if {text}", kernel, regs_of(r1=GUEST))
        assert kernel.counters()[1] == int(true), text


def test_map_value_in_expression_missing_key_sets_flag() -> None:
    kernel = FakeKernel()
    kernel.set_value(FLOWS, struct.pack("<I", 1), struct.pack("<Q", 5))
    probe = run_text("f print flows[$r1] * 2, flows[$r2] + 1", kernel, regs_of(r1=1, r2=2))
    [hit] = kernel.hits(probe)
    assert hit.values == [10, 0] and hit.flags == 1 << 2


# ---- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("f print nosuch", "unknown name nosuch"),
    ("f print $r1 if nosuch == 1", "unknown name nosuch"),
    ("f print flows", "printing a whole hash map in the guest is not supported; print flows[KEY]"),
    ("f print big", "too many to copy in the guest"),
    ("f print nosuch[1]", "unknown map nosuch"),
    ("f print $r1 if flows + 1", "map flows needs a key here"),
    ("f print mem($r1, 16) + 1", "is 16 bytes, not a number"),
    ("f print $r1 if mem($r1, 16)", "is 16 bytes, not a number"),
    ("f print $r1 if mem($r1, 16) == 1.2.3.4", "cannot compare 16 bytes with 4 bytes"),
    ("f print $r1 if mem($r1, 16) == 5", "cannot compare a number with 16 bytes"),
    ("f print addrs[1.2.3.4]", "addrs has 16-byte keys"),
    ("f print $r1 if watch $r1, 8, w", "watch conditions"),
])
def test_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        compile_text(text)


def test_too_deep_expression_and_bad_probe_id() -> None:
    deep: Expr = Reg(1)
    for n in range(70):
        deep = Binary("+", Num(n), deep)
    with pytest.raises(UsageError, match="512-byte BPF stack"):
        compile_probe(Spec(Location("func", "f"), Action(0, (deep,), False), None), target())
    with pytest.raises(UsageError, match="probe id"):
        compile_probe(parse_spec("f stop"), target(probe_id=64))


def test_spills_beyond_registers() -> None:
    text = "f print (1 + ($r1 * (2 + ($r2 * (3 + ($r3 - (4 ^ ($r4 | 5))))))))"
    kernel = FakeKernel()
    regs = regs_of(r1=11, r2=M64, r3=5, r4=1 << 40)
    probe = run_text(text, kernel, regs)
    expected = evaluate(parse_spec(text).action.prints[0], Env(kernel, regs))
    assert kernel.hits(probe)[0].values == [expected]
    assert "*(u64 *)(r10 -" in probe.text


# ---- conditions agree with evaluate ----------------------------------------------------

BINOPS = sorted(PRECEDENCE)
COMPARE = ["==", "!=", "<", "<=", ">", ">="]
NUMBERS = st.one_of(st.integers(0, M64), st.sampled_from(
    [0, 1, 2, 3, 7, 63, 64, 65, 1 << 31, (1 << 31) - 1, 1 << 32, 1 << 63, M64, M64 - 1,
     GUEST, GUEST + 8]))
REG_VALUES = st.one_of(NUMBERS, st.integers(GUEST - 8, GUEST + GUEST_SIZE + 8),
                       st.integers(0, LOW + 8))


def _literal(size: int) -> st.SearchStrategy[Expr]:
    data = st.binary(min_size=size, max_size=size)
    if size == 4:
        return st.one_of(data.map(Str), data.map(IPv4))
    if size == 16:
        return st.one_of(data.map(Str), data.map(IPv6))
    return data.map(Str)


def _addr(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    near = st.builds(lambda n, k: Binary("+", Reg(n), Num(k)), st.integers(0, 10),
                     st.integers(0, 48))
    return st.one_of(st.builds(Reg, st.integers(0, 10)), near,
                     st.integers(GUEST - 4, GUEST + GUEST_SIZE).map(Num), children)


@st.composite
def _bytes_compare(draw: st.DrawFn, children: st.SearchStrategy[Expr]) -> Expr:
    """mem() compared with a literal (explicit or auto size) or with mem() of its size."""
    size = draw(st.sampled_from([0, 3, 4, 5, 12, 16, 20]))
    addr = draw(_addr(children))
    if size and draw(st.booleans()):
        left: Expr = Mem(addr, size)
        right: Expr = Mem(draw(_addr(children)), size)
    else:
        left, right = Mem(addr, draw(st.sampled_from([size, 0]))), draw(_literal(size))
    if draw(st.booleans()):
        left, right = right, left
    return Binary(draw(st.sampled_from(COMPARE)), left, right)


@st.composite
def _mixed_compare(draw: st.DrawFn, children: st.SearchStrategy[Expr]) -> Expr:
    """A number compared with at most 8 bytes (read little-endian)."""
    size = draw(st.sampled_from([3, 5, 7]))
    side = draw(st.one_of(_literal(size), _addr(children).map(lambda a: Mem(a, size))))
    number = draw(children)
    pair = (side, number) if draw(st.booleans()) else (number, side)
    return Binary(draw(st.sampled_from(COMPARE)), *pair)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(lambda key: Index(Name("flows"), key), children),
        st.builds(Unary, st.sampled_from(["-", "~", "!"]), children),
        st.builds(Binary, st.sampled_from(BINOPS), children, children),
        st.builds(Mem, _addr(children), st.sampled_from([1, 2, 4, 8, 0])),
        _bytes_compare(children),
        _mixed_compare(children),
    )


LEAVES = st.one_of(NUMBERS.map(Num), st.builds(Reg, st.integers(0, 10)),
                   st.builds(Mem, _addr(st.nothing()), st.sampled_from([1, 2, 4, 8, 0])))
EXPRS = st.recursive(LEAVES, _extend, max_leaves=12)


def _expected(expr: Expr, kernel: FakeKernel, regs: list[int]) -> int | None:
    try:
        value = evaluate(expr, Env(kernel, regs))
    except UsageError:
        return None
    assert isinstance(value, int)
    return value


def _spec(expr: Expr, condition: bool) -> Spec:
    """`print EXPR [if EXPR]` (a bare map[KEY] item is printed as map[KEY] | 0: a number)."""
    item = Binary("|", expr, Num(0)) if isinstance(expr, Index) else expr
    return Spec(Location("func", "f"), Action(0, (item,), False), expr if condition else None)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=EXPRS, regs=st.lists(REG_VALUES, min_size=11, max_size=11),
       guest=st.binary(min_size=GUEST_SIZE, max_size=GUEST_SIZE), entry=st.booleans())
def test_condition_and_value_match_evaluate(expr: Expr, regs: list[int], guest: bytes,
                                            entry: bool) -> None:
    kernel = FakeKernel(guest, low=True)
    expected = _expected(expr, kernel, regs)
    as_condition = compile_probe(_spec(expr, True), target(entry))
    kernel.run(as_condition, regs, entry)
    true = expected is not None and expected != 0
    event("error" if expected is None else "true" if true else "false")
    assert kernel.counters()[:2] == [1, int(true)], expr.to_text()
    assert [h.values for h in kernel.hits(as_condition)] == ([[expected]] if true else [])
    kernel.records.clear()
    as_print = compile_probe(_spec(expr, False), target(entry))
    kernel.run(as_print, regs, entry)
    [hit] = kernel.hits(as_print)
    assert (hit.values, hit.flags) == (([expected], 0) if expected is not None else ([0], 2))


def test_short_circuit_and_division_by_zero() -> None:
    kernel = FakeKernel()
    for text, true in [("$r1 / $r2 == 0", False), ("$r1 % $r2", False), ("1 || $r1 / $r2", True),
                       ("0 && mem(0, 8)", False), ("!(0 && mem(0, 8))", True),
                       ("$r2 || mem(0, 8) == 0", False), ("7 / 2 == 3 && 7 % 2", True),
                       ("mem(0, 0) == \"\"", True),
                       ("1 << 64 == 1 && -1 >> 65 == (1 << 63) - 1", True)]:
        kernel = FakeKernel()
        run_text(f"f print 1 if {text}", kernel, regs_of(r1=5, r2=0))
        assert kernel.counters()[1] == int(true), text


# ---- the host kernel's verifier --------------------------------------------------------

SYS_BPF, BPF_MAP_CREATE, PROG_TYPE_PERF_EVENT = 321, 0, 7
needs_root = pytest.mark.skipif(os.geteuid() != 0 or os.uname().machine != "x86_64",
                                reason="needs root on x86-64")


def _map_create(ref: MapRef) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(
        struct.pack("<IIIII", ref.map_type, ref.key_size, ref.value_size, ref.max_entries, 0),
        128)
    fd = int(libc.syscall(SYS_BPF, BPF_MAP_CREATE, attr, 128))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


@pytest.fixture(scope="module")
def map_fds() -> Iterator[dict[int, int]]:
    fds = {ref.map_id: _map_create(ref) for ref in (EVENTS, COUNTERS, *MAPS.values())}
    yield fds
    for fd in fds.values():
        os.close(fd)


def _load(probe: CompiledProbe, fds: dict[int, int]) -> None:
    from qstep.oracle.hostrun import load_raw

    code = b""
    for insn in decode(probe.insns):
        if insn.is_ldimm64 and insn.src == PSEUDO_MAP_FD:
            fd = fds[probe.map_refs[insn.imm]]
            insn = dataclasses.replace(insn, imm=fd, imm64=fd)
        code += encode(insn)
    try:
        os.close(load_raw(code, PROG_TYPE_PERF_EVENT))
    except HostError as exc:
        pytest.fail(f"verifier rejected the probe:\n{probe.text}\n{str(exc)[-4000:]}")


VERIFIER_SPECS = [
    EXAMPLE_1, EXAMPLE_2, VARIANT_1, VARIANT_2, "f stop", "f skip 3 print $r1, stop",
    "f print (1 + ($r1 * (2 + ($r2 * (3 + ($r3 - (4 ^ ($r4 | 5))))))))",
    'f print "a", mem($r1, 64), mem($r2, 3), flows[$r1], addrs[::1], addrs[mem($r3, 16)], stats',
    "f print $r10 if mem($r9, 16) < 2001:db8::1 || flows[1.2.3.4] == 7 && 5 / $r3 > 2",
    'f skip 4294967296 print !$r1, -$r2, ~$r3, $r4 % $r5, $r6 << $r7 if mem($r1, 0) == "abc"',
    "f print mem(mem(mem($r1, 8) + 8, 8), 1) if flows[flows[$r1]] >= mem($r2, 5)",
]


@needs_root
@pytest.mark.parametrize("text", VERIFIER_SPECS)
def test_verifier_accepts(text: str, map_fds: dict[int, int]) -> None:
    _load(compile_text(text, entry="$r10" in text), map_fds)


@needs_root
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=EXPRS, entry=st.booleans())
def test_verifier_accepts_random_conditions(expr: Expr, entry: bool,
                                            map_fds: dict[int, int]) -> None:
    spec = Spec(Location("func", "f"), Action(1, (expr, Reg(1)), True), expr)
    _load(compile_probe(spec, target(entry)), map_fds)


# ---- hit filters (DAP hitCondition) -----------------------------------------------------


@pytest.mark.parametrize(("hit_filter", "acting"), [
    (("==", 5), [5]), ((">=", 3), [3, 4, 5, 6, 7]), ((">", 6), [7]), (("<", 3), [1, 2]),
    (("<=", 1), [1]), (("%", 2), [2, 4, 6]), (("%", 3), [3, 6])])
def test_hit_filter_acts_on_exactly_those_hits(hit_filter: tuple[str, int],
                                               acting: list[int]) -> None:
    kernel = FakeKernel()
    probe = compile_probe(parse_spec("f print $r1, stop if $r1 > 3"),
                          dataclasses.replace(target(), hit_filter=hit_filter))
    for value in (7, 1, 7, 7, 7, 7, 2, 7, 7):  # condition true 7 times
        kernel.run(probe, regs_of(r1=value))
    assert [h.hit for h in kernel.hits(probe)] == acting
    assert kernel.counters() == [9, 7, 7 - len(acting), len(acting), 0, len(acting)]
    assert len(kernel.stops) == len(acting)


def test_hit_filter_out_of_range() -> None:
    with pytest.raises(UsageError, match="hit count 0 out of range"):
        compile_probe(parse_spec("f stop"), dataclasses.replace(target(), hit_filter=("%", 0)))


@needs_root
@pytest.mark.parametrize("op", ["==", "%", "<"])
def test_verifier_accepts_hit_filters(op: str, map_fds: dict[int, int]) -> None:
    _load(compile_probe(parse_spec("f print $r1, stop if $r1 == 1"),
                        dataclasses.replace(target(), hit_filter=(op, 3))), map_fds)
