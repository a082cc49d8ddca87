"""Compile one INSPECT_SPEC into a BPF_PROG_TYPE_PERF_EVENT program (contract: docs/probes.md).

The program counts the hit, evaluates the condition from the probed program's
registers (`pt_regs` in the perf event context) and guest memory, applies `skip`,
writes a ring buffer record (`qstep.probe.records`, reserved with
`bpf_ringbuf_reserve` so it may exceed the 512-byte stack; up to 4096 bytes) and,
for `stop`, counts the stop and then calls `bpf_perf_prog_read_value` (helper 56;
55 is `bpf_perf_event_read_value`), on which the host has a breakpoint. The record,
if any, is submitted before that call; a dropped record does not prevent the stop.

Semantics equal `qstep.expr.evaluate`: u64 wrap-around arithmetic, unsigned
comparisons, shift counts masked to 6 bits (as the BPF ISA defines), `&&`/`||`
short-circuit and give 0/1, byte strings compare lexicographically. Where `evaluate` would raise at
run time -- a failed `mem()` read, a division or modulo by zero, a `map[KEY]` whose
key is absent -- the condition is false; in a print item the value stays zero and the
item's error bit (1 + index) is set in the record's flags. `map[KEY]` with an integer
KEY stores the key little-endian in the map's key_size bytes (truncated or
zero-extended); its value is a number for value_size 1/2/4/8, else bytes.

Code generation is a stack machine: values live in callee-saved registers (r6-r9
for the condition; r7-r9 for print items, r6 holding the reserved record) and spill
to 8-byte stack slots when deeper; `mem()` and byte-string values use stack buffers.
Stack frame: fp-8 ctx, fp-16 hit count, fp-24 counter key, the rest first-fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qstep.bpf.asm import alu64, atomic, call, exit_, ldimm64, ldx, st, stx, to_bytes
from qstep.bpf.helpers import MAP_TYPE_NAMES
from qstep.bpf.insn import PSEUDO_MAP_FD, Insn, format_insn
from qstep.bpf.uapi import Helper, MapType
from qstep.errors import UsageError
from qstep.expr.ast import (
    BYTES_LITERALS,
    COMPARISONS,
    AddrOf,
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
from qstep.expr.evaluate import mem_width
from qstep.probe.asm import JEQ, JGE, JGT, JLE, JLT, JNE, Builder, Label, be64, load_const
from qstep.probe.records import (
    FLAG_STOP,
    HEADER,
    MAX_ITEM_FLAGS,
    Field,
    RecordLayout,
    pad8,
)
from qstep.probe.spec import Spec, Watch

__all__ = ["CompiledProbe", "MapRef", "ProbeTarget", "compile_probe"]

# Counters of probe p: entry 8*p + k.
REACHED, COND_TRUE, SKIPPED, WRITTEN, DROPPED, STOPS = range(6)
MAX_PROBES = 64
MAX_RECORD = 4096
MAX_ARRAY_ENTRIES = 64
HASH_TYPES = frozenset({MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH,
                        MapType.LRU_PERCPU_HASH, MapType.LPM_TRIE})
LOOKUP_TYPES = HASH_TYPES | {MapType.ARRAY, MapType.PERCPU_ARRAY}
# pt_regs offsets of the probed program's BPF registers (x86-64 JIT map), and rsp.
PT_REGS = {0: 80, 1: 112, 2: 104, 3: 96, 4: 88, 5: 72, 6: 40, 7: 16, 8: 8, 9: 0, 10: 32}
PT_RSP = 152
# Registers and stack frame.
R0, R1, R2, R3, R6, FP = 0, 1, 2, 3, 6, 10
COND_REGS, PRINT_REGS = (6, 7, 8, 9), (7, 8, 9)
CTX_SLOT, HIT_SLOT, KEY_SLOT, FIXED = -8, -16, -24, 24
STACK_SIZE = 512
INT_WIDTHS = (1, 2, 4, 8)
STOP_BUF = 24  # sizeof(struct bpf_perf_event_value)
# ALU operations.
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0)
ARITH = {"+": ADD, "-": SUB, "*": MUL, "/": DIV, "|": OR, "&": AND, "<<": LSH, ">>": RSH,
         "%": MOD, "^": XOR}
JUMPS = {"==": JEQ, "!=": JNE, "<": JLT, "<=": JLE, ">": JGT, ">=": JGE}


@dataclass(frozen=True)
class MapRef:
    """A kernel map the probe uses."""

    name: str
    map_id: int
    map_type: int
    key_size: int
    value_size: int
    max_entries: int


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probe runs: its id (its counters), whether at a function's entry, the maps
    it sees, and the id its records carry (one spec's locations share counters)."""

    probe_id: int
    at_function_entry: bool
    events: MapRef
    counters: MapRef
    maps: dict[str, MapRef] = field(default_factory=dict)
    record_id: int | None = None  # the id in its records (default: probe_id)
    # Act only on hits n (counted after the condition) with ``n OP N``: (OP, N), OP one
    # of ==, >=, >, <, <=, % (every Nth); the others count as skipped (DAP hitCondition).
    hit_filter: tuple[str, int] | None = None


@dataclass(frozen=True)
class CompiledProbe:
    """Encoded instructions, the map ids for ld_imm64 ref indexes, record layout, listing."""

    insns: bytes
    map_refs: list[int]
    layout: RecordLayout
    text: str


@dataclass(frozen=True)
class _Bytes:
    """A byte-string operand: a constant or a zero-padded stack buffer at fp+off."""

    size: int
    const: bytes | None = None
    off: int = 0


def _error(what: str, node: Node) -> UsageError:
    return UsageError(f"{what} at column {node.pos + 1}")


class _Frame:
    """First-fit allocator of 8-byte stack words below the fixed slots."""

    def __init__(self) -> None:
        self.free = [True] * ((STACK_SIZE - FIXED) // 8)

    def alloc(self, nbytes: int) -> int:
        """fp offset of a fresh buffer of `nbytes` (at least one word)."""
        n = max(1, pad8(nbytes) // 8)
        for start in range(len(self.free) - n + 1):
            if all(self.free[start:start + n]):
                self.free[start:start + n] = [False] * n
                return -(FIXED + 8 * (start + n))
        raise UsageError("probe expression too big for the 512-byte BPF stack; simplify it")

    def release(self, off: int, nbytes: int) -> None:
        """Free a buffer returned by `alloc`."""
        n = max(1, pad8(nbytes) // 8)
        start = -off // 8 - FIXED // 8 - n
        self.free[start:start + n] = [True] * n


class _Compiler:
    """Emits one probe program."""

    def __init__(self, target: ProbeTarget) -> None:
        self.target = target
        self.b = Builder()
        self.frame = _Frame()
        self.refs: list[MapRef] = [target.events, target.counters]
        self.regs: tuple[int, ...] = COND_REGS
        self.slots: list[int] = []  # value stack: register (>= 0) or fp offset (< 0)

    # --- small emitters ---------------------------------------------------------------

    def emit(self, *insns: Insn) -> None:
        """Append instructions."""
        self.b.emit(*insns)

    def load_map(self, reg: int, ref: MapRef) -> None:
        """reg = map `ref` (ld_imm64 of its ref index; the agent puts in the fd)."""
        if ref not in self.refs:
            self.refs.append(ref)
        self.emit(ldimm64(reg, self.refs.index(ref), src=PSEUDO_MAP_FD))

    def fp_ptr(self, reg: int, off: int) -> None:
        """reg = fp + off."""
        self.emit(alu64(MOV, reg, src=FP), alu64(ADD, reg, imm=off))

    def lookup(self, ref: MapRef, key_off: int) -> None:
        """r0 = bpf_map_lookup_elem(ref, fp + key_off)."""
        self.load_map(R1, ref)
        self.fp_ptr(R2, key_off)
        self.emit(call(Helper.MAP_LOOKUP_ELEM))

    def probe_read(self, base: int, off: int, size: int, src: int) -> None:
        """r0 = bpf_probe_read_kernel(base + off, size, src)."""
        if src != R3:
            self.emit(alu64(MOV, R3, src=src))
        self.emit(alu64(MOV, R1, src=base))
        if off:
            self.emit(alu64(ADD, R1, imm=off))
        self.emit(alu64(MOV, R2, imm=size), call(Helper.PROBE_READ_KERNEL))

    def counter_add(self, k: int) -> None:
        """counters[8 * probe_id + k] += 1."""
        done = Label()
        self.emit(st(4, FP, KEY_SLOT, 8 * self.target.probe_id + k))
        self.lookup(self.target.counters, KEY_SLOT)
        self.b.jump(done, JEQ, R0, imm=0)
        self.emit(alu64(MOV, R1, imm=1), atomic(8, R0, R1, 0, 0x00))
        self.b.place(done)

    def zero(self, base: int, off: int, nbytes: int) -> None:
        """Zero `nbytes` (rounded up to 8) at base + off."""
        for at in range(off, off + pad8(nbytes), 8):
            self.emit(st(8, base, at, 0))

    def bool_result(self, op: int, a: int, b: int | None, imm: int = 0) -> None:
        """r0 = (a OP b/imm) ? 1 : 0."""
        done = Label()
        self.emit(alu64(MOV, R0, imm=1))
        self.b.jump(done, op, a, b, imm)
        self.emit(alu64(MOV, R0, imm=0))
        self.b.place(done)

    # --- value stack ------------------------------------------------------------------

    def push(self) -> int:
        """Push a value slot; return its location."""
        depth = len(self.slots)
        loc = self.regs[depth] if depth < len(self.regs) else self.frame.alloc(8)
        self.slots.append(loc)
        return loc

    def pop(self) -> None:
        """Drop the top value slot."""
        loc = self.slots.pop()
        if loc < 0:
            self.frame.release(loc, 8)

    def fetch(self, loc: int, scratch: int) -> int:
        """Register holding the value at `loc` (loaded into `scratch` if spilled)."""
        if loc >= 0:
            return loc
        self.emit(ldx(8, scratch, FP, loc))
        return scratch

    def store(self, loc: int, reg: int) -> None:
        """Write `reg` to the slot at `loc`."""
        if loc < 0:
            self.emit(stx(8, FP, reg, loc))
        elif loc != reg:
            self.emit(alu64(MOV, loc, src=reg))

    def push_reg(self, reg: int) -> None:
        """Push the value in `reg` (a scratch register)."""
        self.store(self.push(), reg)

    # --- maps -------------------------------------------------------------------------

    def map_of(self, name: Name) -> MapRef:
        """The target map `name` for a lookup; UsageError if unknown or not lookup-able."""
        ref = self.target.maps.get(name.name)
        if ref is None:
            raise _error(f"unknown map {name.name}", name)
        if ref.map_type not in LOOKUP_TYPES:
            kind = MAP_TYPE_NAMES.get(ref.map_type, str(ref.map_type))
            raise _error(f"cannot look up {name.name} (a {kind} map) in a probe", name)
        return ref

    # --- static types -----------------------------------------------------------------

    def width(self, expr: Expr, peer: Expr | None = None) -> int | None:
        """None for a number, else the byte length of a byte-string value."""
        match expr:
            case Str() | IPv4() | IPv6():
                return len(expr.value)
            case Mem():
                size = mem_width(expr, peer)
                return None if size in INT_WIDTHS else size
            case Index():
                size = self.map_of(expr.base).value_size
                return None if size in INT_WIDTHS else size
            case Name():
                raise self.unknown(expr)
            case _:
                return None

    def unknown(self, name: Name) -> UsageError:
        """Error for a bare name in an expression."""
        if name.name in self.target.maps:
            return _error(f"map {name.name} needs a key here: {name.name}[KEY]", name)
        return _error(f"unknown name {name.name}", name)

    # --- integer expressions ----------------------------------------------------------

    def gen_int(self, expr: Expr, fail: Label, peer: Expr | None = None) -> None:
        """Push the number `expr`; jump to `fail` where `evaluate` would raise."""
        size = self.width(expr, peer)
        if size is not None:
            raise _error(f"{expr.to_text()} is {size} bytes, not a number", expr)
        match expr:
            case Num():
                self.gen_const(expr.value)
            case Reg():
                self.gen_reg(expr.n)
            case Mem():
                self.gen_mem_int(expr, mem_width(expr, peer), fail)
            case Index():
                self.gen_index_int(expr, fail)
            case AddrOf(operand=Index() as index):  # a map value's address (lowered C)
                self.gen_index_addr(index, fail)
            case Unary():
                self.gen_unary(expr, fail)
            case Binary():
                self.gen_binary(expr, fail)
            case _:
                raise _error(f"{expr.to_text()} is not a number", expr)

    def gen_const(self, value: int) -> None:
        """Push a constant."""
        loc = self.push()
        reg = loc if loc >= 0 else R0
        self.emit(load_const(reg, value))
        self.store(loc, reg)

    def gen_reg(self, n: int) -> None:
        """Push the probed program's register rN (from pt_regs)."""
        loc = self.push()
        reg = loc if loc >= 0 else R0
        self.emit(ldx(8, R1, FP, CTX_SLOT))
        if n == 10 and self.target.at_function_entry:
            self.emit(ldx(8, reg, R1, PT_RSP), alu64(SUB, reg, imm=8))
        else:
            self.emit(ldx(8, reg, R1, PT_REGS[n]))
        self.store(loc, reg)

    def gen_mem_int(self, mem: Mem, size: int, fail: Label) -> None:
        """Push `size` (1/2/4/8) bytes read at mem.addr, little-endian."""
        buf = self.frame.alloc(8)
        self.gen_int(mem.addr, fail)
        self.probe_read(FP, buf, size, self.fetch(self.slots[-1], R3))
        self.b.jump(fail, JNE, R0, imm=0)
        self.emit(ldx(size, R0, FP, buf))
        self.pop()
        self.frame.release(buf, 8)
        self.push_reg(R0)

    def gen_index_int(self, index: Index, fail: Label) -> None:
        """Push a map value of 1/2/4/8 bytes; fail if the key is absent."""
        size = self.lookup_or_fail(index, fail)
        self.emit(ldx(size, R0, R0, 0))
        self.push_reg(R0)

    def gen_index_addr(self, index: Index, fail: Label) -> None:
        """Push the address of a map value; fail if the key is absent."""
        self.lookup_or_fail(index, fail)
        self.push_reg(R0)

    def lookup_or_fail(self, index: Index, fail: Label) -> int:
        """r0 = the map value's address (to ``fail`` when absent); returns its size."""
        ref = self.map_of(index.base)
        key_off = self.gen_key(index, ref, fail)
        self.lookup(ref, key_off)
        self.frame.release(key_off, ref.key_size)
        self.b.jump(fail, JEQ, R0, imm=0)
        return ref.value_size

    def gen_unary(self, expr: Unary, fail: Label) -> None:
        """Push -x, ~x or !x."""
        self.gen_int(expr.operand, fail)
        loc = self.slots[-1]
        reg = self.fetch(loc, R1)
        if expr.op == "-":
            self.emit(alu64(NEG, reg))
        elif expr.op == "~":
            self.emit(alu64(XOR, reg, imm=-1))
        else:
            self.bool_result(JEQ, reg, None, 0)
            reg = R0
        self.store(loc, reg)

    def gen_binary(self, expr: Binary, fail: Label) -> None:
        """Push the value of a binary operator."""
        if expr.op in ("&&", "||"):
            self.gen_logic(expr, fail)
        elif expr.op in COMPARISONS:
            self.gen_compare(expr, fail)
        else:
            self.gen_arith(expr, fail)

    def gen_arith(self, expr: Binary, fail: Label) -> None:
        """Push an ALU64 result; division or modulo by zero fails."""
        self.gen_int(expr.left, fail)
        self.gen_int(expr.right, fail)
        left = self.slots[-2]
        a, b = self.fetch(left, R1), self.fetch(self.slots[-1], R2)
        if expr.op in ("/", "%"):
            self.b.jump(fail, JEQ, b, imm=0)
        self.emit(alu64(ARITH[expr.op], a, src=b))
        self.pop()
        self.store(left, a)

    def gen_logic(self, expr: Binary, fail: Label) -> None:
        """Short-circuit `&&`/`||` giving 0/1."""
        decided, done = Label(), Label()
        op = JEQ if expr.op == "&&" else JNE
        self.gen_int(expr.left, fail)
        loc = self.slots[-1]
        self.b.jump(decided, op, self.fetch(loc, R1), imm=0)
        self.pop()
        self.gen_int(expr.right, fail)
        assert self.slots[-1] == loc
        self.b.jump(decided, op, self.fetch(loc, R1), imm=0)
        self.set_slot(loc, int(expr.op == "&&"))
        self.b.jump(done)
        self.b.place(decided)
        self.set_slot(loc, int(expr.op == "||"))
        self.b.place(done)

    def set_slot(self, loc: int, value: int) -> None:
        """Store a small constant in the slot at `loc`."""
        reg = loc if loc >= 0 else R0
        self.emit(alu64(MOV, reg, imm=value))
        self.store(loc, reg)

    # --- comparisons ------------------------------------------------------------------

    def gen_compare(self, expr: Binary, fail: Label) -> None:
        """Push 0/1: numbers unsigned, byte strings lexicographic."""
        wa, wb = self.width(expr.left, expr.right), self.width(expr.right, expr.left)
        if wa is not None and wb is not None:
            if wa != wb:
                raise _error(f"cannot compare {wa} bytes with {wb} bytes", expr)
            self.gen_bytes_compare(expr, wa, fail)
            return
        for side, peer, size in ((expr.left, expr.right, wa), (expr.right, expr.left, wb)):
            if size is None:
                self.gen_int(side, fail, peer)
            elif size > 8:
                raise _error(f"cannot compare a number with {size} bytes", expr)
            else:
                self.gen_bytes_as_int(side, size, peer, fail)
        left = self.slots[-2]
        a, b = self.fetch(left, R1), self.fetch(self.slots[-1], R2)
        self.bool_result(JUMPS[expr.op], a, b)
        self.pop()
        self.store(left, R0)

    def gen_bytes_as_int(self, expr: Expr, size: int, peer: Expr, fail: Label) -> None:
        """Push a byte string of at most 8 bytes read as a little-endian number."""
        data = self.gen_bytes(expr, size, peer, fail)
        if data.const is not None:
            self.gen_const(int.from_bytes(data.const, "little"))
            return
        self.emit(ldx(8, R0, FP, data.off))
        self.frame.release(data.off, size)
        self.push_reg(R0)

    def gen_bytes_compare(self, expr: Binary, size: int, fail: Label) -> None:
        """Lexicographic comparison: big-endian 8-byte chunks, first difference decides."""
        left = self.gen_bytes(expr.left, size, expr.right, fail)
        right = self.gen_bytes(expr.right, size, expr.left, fail)
        differ, done = Label(), Label()
        for at in range(0, size, 8):
            self.chunk(R1, left, at)
            self.chunk(R2, right, at)
            self.b.jump(differ, JNE, R1, R2)
        self.emit(alu64(MOV, R0, imm=int(expr.op in ("==", "<=", ">="))))
        self.b.jump(done)
        self.b.place(differ)
        self.bool_result(JUMPS[expr.op], R1, R2)
        self.b.place(done)
        for data in (left, right):
            if data.const is None:
                self.frame.release(data.off, size)
        self.push_reg(R0)

    def chunk(self, reg: int, data: _Bytes, at: int) -> None:
        """reg = big-endian value of bytes at..at+8 (zero-padded)."""
        if data.const is not None:
            self.emit(load_const(reg, int.from_bytes(data.const[at:at + 8].ljust(8, b"\0"),
                                                     "big")))
        else:
            self.emit(ldx(8, reg, FP, data.off + at), be64(reg))

    # --- byte strings -----------------------------------------------------------------

    def gen_bytes(self, expr: Expr, size: int, peer: Expr | None, fail: Label) -> _Bytes:
        """A byte-string value of `size` bytes (literal, mem() or map value)."""
        if isinstance(expr, BYTES_LITERALS):
            return _Bytes(size, const=expr.value)
        buf = self.frame.alloc(size)
        if size % 8:
            self.zero(FP, buf + size // 8 * 8, 8)
        if isinstance(expr, Mem):
            self.gen_int(expr.addr, fail)
            if size:
                self.probe_read(FP, buf, size, self.fetch(self.slots[-1], R3))
                self.b.jump(fail, JNE, R0, imm=0)
            self.pop()
        else:
            assert isinstance(expr, Index)
            self.gen_index_bytes(expr, buf, fail)
        return _Bytes(size, off=buf)

    def gen_index_bytes(self, index: Index, buf: int, fail: Label) -> None:
        """Copy a map value into the stack buffer at fp + buf; fail if the key is absent."""
        ref = self.map_of(index.base)
        key_off = self.gen_key(index, ref, fail)
        self.lookup(ref, key_off)
        self.frame.release(key_off, ref.key_size)
        self.b.jump(fail, JEQ, R0, imm=0)
        self.probe_read(FP, buf, ref.value_size, R0)
        self.b.jump(fail, JNE, R0, imm=0)

    def gen_key(self, index: Index, ref: MapRef, fail: Label) -> int:
        """fp offset of a buffer holding the key of `index` (key_size bytes, padded)."""
        size = self.width(index.key)
        if size is None:
            off = self.frame.alloc(ref.key_size)
            self.zero(FP, off + 8, max(0, ref.key_size - 8))
            self.gen_int(index.key, fail)
            self.emit(stx(8, FP, self.fetch(self.slots[-1], R1), off))
            self.pop()
            return off
        if size != ref.key_size:
            raise _error(f"key {index.key.to_text()} is {size} bytes; "
                         f"{ref.name} has {ref.key_size}-byte keys", index)
        data = self.gen_bytes(index.key, size, None, fail)
        if data.const is None:
            return data.off
        off = self.frame.alloc(size)
        padded = data.const.ljust(pad8(size), b"\0")
        for at in range(0, len(padded), 8):
            self.emit(load_const(R1, int.from_bytes(padded[at:at + 8], "little")),
                      stx(8, FP, R1, off + at))
        return off

    # --- program parts ----------------------------------------------------------------

    def condition(self, cond: Expr, false: Label) -> None:
        """Jump to `false` unless `cond` holds."""
        self.gen_int(cond, false)
        self.b.jump(false, JEQ, self.fetch(self.slots[-1], R1), imm=0)
        self.pop()

    def count_hit(self, skip: int, out: Label) -> None:
        """Hit count n (fetch-add) to fp-16; leave via `out` when n <= skip."""
        go = Label()
        self.emit(st(4, FP, KEY_SLOT, 8 * self.target.probe_id + COND_TRUE))
        self.lookup(self.target.counters, KEY_SLOT)
        self.b.jump(out, JEQ, R0, imm=0)
        self.emit(alu64(MOV, R1, imm=1), atomic(8, R0, R1, 0, 0x01), alu64(ADD, R1, imm=1),
                  stx(8, FP, R1, HIT_SLOT))
        if skip:
            if skip < 1 << 31:
                self.b.jump(go, JGT, R1, imm=skip)
            else:
                self.emit(load_const(R2, skip))
                self.b.jump(go, JGT, R1, R2)
            self.counter_add(SKIPPED)
            self.b.jump(out)
        self.b.place(go)
        if self.target.hit_filter is not None:
            self.filter_hits(*self.target.hit_filter, out)

    def filter_hits(self, op: str, count: int, out: Label) -> None:
        """Leave via `out` (counted skipped) unless hit n (fp-16) satisfies `n OP count`."""
        go = Label()
        if not 0 < count < 1 << 31 and not (op != "%" and count == 0):
            raise UsageError(f"hit count {count} out of range for a probe")
        self.emit(ldx(8, R1, FP, HIT_SLOT))
        if op == "%":
            self.emit(alu64(MOD, R1, imm=count))
            self.b.jump(go, JEQ, R1, imm=0)
        else:
            self.b.jump(go, JUMPS[op], R1, imm=count)
        self.counter_add(SKIPPED)
        self.b.jump(out)
        self.b.place(go)

    def record(self, layout: RecordLayout, stop: bool) -> None:
        """Reserve, fill and submit one record; count it written or dropped."""
        reserved, done = Label(), Label()
        self.load_map(R1, self.target.events)
        self.emit(alu64(MOV, R2, imm=layout.size), alu64(MOV, R3, imm=0),
                  call(Helper.RINGBUF_RESERVE))
        self.b.jump(reserved, JNE, R0, imm=0)
        self.counter_add(DROPPED)
        self.b.jump(done)
        self.b.place(reserved)
        self.emit(alu64(MOV, R6, src=R0), st(4, R6, 0, layout.probe_id),
                  st(4, R6, 4, FLAG_STOP if stop else 0), ldx(8, R1, FP, HIT_SLOT),
                  stx(8, R6, R1, 8))
        self.zero(R6, HEADER.size, layout.size - HEADER.size)
        self.regs = PRINT_REGS
        for index, item in enumerate(layout.fields):
            self.field(index, item)
        self.emit(alu64(MOV, R1, src=R6), alu64(MOV, R2, imm=0), call(Helper.RINGBUF_SUBMIT))
        self.counter_add(WRITTEN)
        self.b.place(done)

    def field(self, index: int, item: Field) -> None:
        """Fill one print item's field; on failure set its error bit."""
        if item.kind == "literal":
            return
        fail, done = Label(), Label()
        if item.kind == "u64":
            self.gen_int(item.item, fail)
            self.emit(stx(8, R6, self.fetch(self.slots[-1], R1), item.offset))
            self.pop()
        elif item.kind == "bytes":
            assert isinstance(item.item, Mem)
            self.gen_int(item.item.addr, fail)
            self.probe_read(R6, item.offset, item.size, self.fetch(self.slots[-1], R3))
            self.pop()
            self.b.jump(fail, JNE, R0, imm=0)
        elif item.kind == "lookup":
            self.field_lookup(item, fail)
        else:
            self.field_array(item, fail)
        self.b.jump(done)
        self.b.place(fail)
        if index < MAX_ITEM_FLAGS:
            self.emit(ldx(4, R1, R6, 4), alu64(OR, R1, imm=1 << (1 + index)), stx(4, R6, R1, 4))
        self.b.place(done)

    def field_lookup(self, item: Field, fail: Label) -> None:
        """`map[KEY]`: found flag and value (zeros when absent)."""
        assert isinstance(item.item, Index)
        missing = Label()
        ref = self.map_of(item.item.base)
        key_off = self.gen_key(item.item, ref, fail)
        self.lookup(ref, key_off)
        self.frame.release(key_off, ref.key_size)
        self.b.jump(missing, JEQ, R0, imm=0)
        self.emit(st(8, R6, item.offset, 1))
        self.probe_read(R6, item.offset + 8, ref.value_size, R0)
        self.b.jump(fail, JNE, R0, imm=0)
        self.b.place(missing)

    def field_array(self, item: Field, fail: Label) -> None:
        """A whole array map: count, then every entry by unrolled lookups."""
        ref = self.target.maps[item.map_name]
        key_off = self.frame.alloc(4)
        self.emit(st(8, R6, item.offset, item.count))
        for key in range(item.count):
            missing = Label()
            self.emit(st(4, FP, key_off, key))
            self.lookup(ref, key_off)
            self.b.jump(missing, JEQ, R0, imm=0)
            self.probe_read(R6, item.offset + 8 + key * ref.value_size, ref.value_size, R0)
            self.b.jump(fail, JNE, R0, imm=0)
            self.b.place(missing)
        self.frame.release(key_off, 4)

    def stop(self) -> None:
        """Count the stop and call bpf_perf_prog_read_value (the host's breakpoint)."""
        self.counter_add(STOPS)
        buf = self.frame.alloc(STOP_BUF)
        self.emit(ldx(8, R1, FP, CTX_SLOT))
        self.fp_ptr(R2, buf)
        self.emit(alu64(MOV, R3, imm=STOP_BUF), call(Helper.PERF_PROG_READ_VALUE))
        self.frame.release(buf, STOP_BUF)

    # --- record layout ----------------------------------------------------------------

    def layout(self, items: tuple[Expr, ...]) -> RecordLayout:
        """Record fields of the print items (validates them)."""
        fields: list[Field] = []
        offset = HEADER.size
        for item in items:
            fields.append(self.layout_field(item, offset))
            offset += fields[-1].span
        record_id = self.target.probe_id if self.target.record_id is None else self.target.record_id
        layout = RecordLayout(record_id, tuple(fields))
        if layout.size > MAX_RECORD:
            raise UsageError(f"probe record would be {layout.size} bytes (limit {MAX_RECORD}); "
                             "print fewer or smaller items")
        return layout

    def layout_field(self, item: Expr, offset: int) -> Field:
        """The field of one print item at `offset`."""
        match item:
            case Str() | IPv4() | IPv6():
                return Field("literal", item, offset, 0)
            case Name():
                return self.whole_map(item, offset)
            case Index():
                ref = self.map_of(item.base)
                return Field("lookup", item, offset, ref.value_size, map_name=ref.name)
            case Mem() if self.width(item) is not None:
                return Field("bytes", item, offset, item.size)
            case _:
                self.width(item)
                return Field("u64", item, offset)

    def whole_map(self, name: Name, offset: int) -> Field:
        """Field for printing a whole map: ARRAY maps of at most 64 entries only."""
        ref = self.target.maps.get(name.name)
        if ref is None:
            raise self.unknown(name)
        if ref.map_type in HASH_TYPES:
            raise _error("printing a whole hash map in the guest is not supported; "
                         f"print {name.name}[KEY]", name)
        if ref.map_type != MapType.ARRAY:
            kind = MAP_TYPE_NAMES.get(ref.map_type, str(ref.map_type))
            raise _error(f"printing a whole {kind} map in the guest is not supported; "
                         f"print {name.name}[KEY]", name)
        if ref.max_entries > MAX_ARRAY_ENTRIES:
            raise _error(f"{name.name} has {ref.max_entries} entries, too many to copy in "
                         f"the guest (limit {MAX_ARRAY_ENTRIES}); print {name.name}[KEY]", name)
        return Field("array", name, offset, ref.value_size, ref.max_entries, ref.name)


def compile_probe(spec: Spec, target: ProbeTarget) -> CompiledProbe:
    """Compile `spec` for `target`; UsageError for what a probe cannot do."""
    if not 0 <= target.probe_id < MAX_PROBES:
        raise UsageError(f"probe id {target.probe_id} out of range 0..{MAX_PROBES - 1}")
    if isinstance(spec.condition, Watch):
        raise UsageError("watch conditions are handled by the host, not compiled into a probe")
    c = _Compiler(target)
    layout = c.layout(spec.action.prints)
    out = Label()
    c.emit(stx(8, FP, R1, CTX_SLOT))
    c.counter_add(REACHED)
    if spec.condition is not None:
        c.condition(spec.condition, out)
    c.count_hit(spec.action.skip, out)
    c.record(layout, spec.action.stop)
    if spec.action.stop:
        c.stop()
    c.b.place(out)
    c.emit(alu64(MOV, R0, imm=0), exit_())
    insns = c.b.finish()
    return CompiledProbe(to_bytes(insns), [r.map_id for r in c.refs], layout,
                         listing(insns, [r.name for r in c.refs]))


def listing(insns: list[Insn], map_names: list[str]) -> str:
    """bpftool-style text, maps named by their ref index."""

    def map_name(insn: Insn) -> str | None:
        ref = insn.imm
        return map_names[ref] if insn.src == PSEUDO_MAP_FD and 0 <= ref < len(map_names) else None

    return "\n".join(f"{i.index:4d}: ({i.code:02x}) {format_insn(i, map_name=map_name)}"
                     for i in insns)

