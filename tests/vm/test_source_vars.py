"""C variables in the debugger on tests/progs/vars.bpf.c, checked at every instruction
against values known by construction from the input packet and the map contents.

The program is stepped one BPF instruction at a time from its entry to its exit;
at every stop every variable of every frame (inlined calls and calling frames
included) that DWARF says is available is read and compared with its expected
value. A value that changes (loop counters, map value fields, fields of stack
structs being filled in) must walk its known sequence of values in order; memory
of a stack struct may hold stale bytes only before its first expected value.
"""

from __future__ import annotations

import ipaddress
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qstep.bpf.elf import BpfObject
from qstep.commands.inspect import c_scope, value_text
from qstep.debugger.commands import CommandSet
from qstep.debugger.engine import Debugger, RunRequest
from qstep.debugger.source import SourceFrame, SourceView
from qstep.debugger.source_commands import SourceCommands
from qstep.dwarf.format import decode
from qstep.dwarf.frame import stack_size_from_prologue
from qstep.dwarf.model import Variable
from qstep.errors import UsageError
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.probe.inspector import Inspector
from qstep.probe.records import MapValue
from qstep.probe.spec import parse_specs
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet

pytestmark = pytest.mark.vm

SADDR, DADDR, SPORT, DPORT, TTL = "10.0.0.1", "10.0.0.10", 1234, 80, 64
MAP_PACKETS, MAP_BYTES = 5, 1000


def packet() -> bytes:
    eth = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00"
    udp = struct.pack(">HHHH", SPORT, DPORT, 16, 0) + b"payload!"
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, TTL, 17, 0,
                     ipaddress.ip_address(SADDR).packed, ipaddress.ip_address(DADDR).packed)
    return eth + ip + udp


PKT = packet()


def le(data: bytes) -> int:
    return int.from_bytes(data, "little")


def u32(v: int) -> int:
    return v & 0xFFFFFFFF


S_LE, D_LE = le(PKT[26:30]), le(PKT[30:34])
SPORT_LE, DPORT_LE = le(PKT[34:36]), le(PKT[36:38])
X, Y = int(ipaddress.ip_address(SADDR)), int(ipaddress.ip_address(DADDR))
MIXED = u32(X ^ (Y >> 3))
H = u32(MIXED + SPORT * 7 + DPORT)
KEY_BYTES = PKT[26:38] + bytes([17, 0, 0, 0])
ACCS = [0]
for b in KEY_BYTES:
    ACCS.append(u32(ACCS[-1] * 31 + b))
SUM = ACCS[-1]

# Leaf → its values in execution order (one value: constant once set).
KEY = {"saddr": [0, S_LE], "daddr": [0, D_LE], "sport": [0, SPORT_LE], "dport": [0, DPORT_LE],
       "proto": [0, 17], "pad": [[0, 0, 0]]}
META = {"len": [0, len(PKT)], "version": [0, 4], "ihl": [0, 5], "ttl": [0, TTL],
        "csum_ok": [0, 1], "frag": [0], "reserved": [0]}
COUNTERS = {"packets": [MAP_PACKETS, MAP_PACKETS + 1], "bytes": [MAP_BYTES, MAP_BYTES + len(PKT)],
            "last_len": [0, H ^ SUM], "hits": [[0, 0, 0, 0], [0, 0, 1, 0]]}
PAIR = {"lo": [SPORT], "hi": [DPORT]}
PKT_MEM = ("mem", PKT)
PKT_END = ("end", PKT)
# (function, variable) → what it holds: leaves of a value, of "*var", or packet memory.
EXPECTED: dict[tuple[str, str], Any] = {
    ("vars_main", "data"): PKT_MEM, ("vars_main", "end"): PKT_END,
    ("vars_main", "key"): KEY, ("vars_main", "meta"): META, ("vars_main", "zero"): [0],
    ("vars_main", "cnt"): ("*", COUNTERS), ("vars_main", "h"): [H],
    ("vars_main", "sum"): [SUM], ("vars_main", "act"): ["ACT_PASS"],
    ("read_key", "data"): PKT_MEM, ("read_key", "end"): PKT_END,
    ("read_key", "key"): ("*", KEY), ("read_key", "meta"): ("*", META),
    ("read_key", "eth"): ("*", {"h_proto": [8]}),
    ("read_key", "ip"): ("*", {"ihl": [5], "version": [4], "ttl": [TTL], "protocol": [17],
                               "saddr": [S_LE], "daddr": [D_LE]}),
    ("read_key", "udp"): ("*", {"source": [SPORT_LE], "dest": [DPORT_LE]}),
    ("hash_key", "k"): ("*", KEY), ("hash_key", "folded"): [MIXED], ("hash_key", "ports"): PAIR,
    ("fold_addr", "a"): [S_LE], ("fold_addr", "b"): [D_LE], ("fold_addr", "x"): [X],
    ("fold_addr", "y"): [Y], ("fold_addr", "mixed"): [MIXED],
    ("ports_of", "k"): ("*", KEY), ("ports_of", "p"): PAIR,
    ("checksum", "bytes"): ("*", [KEY_BYTES[0]]), ("checksum", "n"): [16],
    ("checksum", "i"): list(range(17)), ("checksum", "acc"): ACCS,
    ("classify", "m"): ("*", META), ("classify", "c"): ("*", COUNTERS),
    ("classify", "a"): ["ACT_PASS"],
}
UNCHECKABLE = {("vars_main", "ctx")}  # a context pointer: its value is not known by construction

# calls.bpf.c (see its header): 64 bytes, byte i = i.
CALLS_PKT = bytes(range(64))
CALLS_SUMS = [sum(range(k)) for k in range(17)]
CALLS_EXPECTED: dict[tuple[str, str], Any] = {
    ("calls_main", "data"): ("mem", CALLS_PKT), ("calls_main", "end"): ("end", CALLS_PKT),
    ("calls_main", "len"): [64], ("fold", "data"): ("mem", CALLS_PKT),
    ("fold", "end"): ("end", CALLS_PKT), ("fold", "s"): [120],
    ("sum_bytes", "p"): ("mem", CALLS_PKT), ("sum_bytes", "end"): ("end", CALLS_PKT),
    ("sum_bytes", "n"): [16], ("sum_bytes", "sum"): CALLS_SUMS,
    ("sum_bytes", "i"): list(range(17)), ("mix", "acc"): [120], ("mix", "byte"): [16],
    ("weight", "len"): [64], ("scale", "len"): [64],
}


# shapes.bpf.c (see its header): byte i = 3 * i + 1.
SHAPES_PKT = bytes((3 * i + 1) & 0xFF for i in range(64))
SB = SHAPES_PKT[:16]
COUNT_STATES = [[0] * 8]
for byte in SB:
    COUNT_STATES.append(list(COUNT_STATES[-1]))
    COUNT_STATES[-1][byte & 7] += 1
TOTAL = sum(i * c for i, c in enumerate(COUNT_STATES[-1]))
BIAS = -5
SPREAD_ACCS = [sum(i * COUNT_STATES[-1][i] for i in range(k)) for k in range(9)]
DELTA = SB[5] - 2 * SB[6]
SHAPE = {"name": [[0] * 4, list(b"shp\0")], "a": {"x": [0, SB[0]], "y": [0, -SB[1]]},
         "b": {"x": [0, TOTAL], "y": [0, SB[2] - 100]},
         "tag": {"raw": [0, SB[3], SB[3] | SB[4] << 16],
                 "half": {"lo": [0, SB[3]], "hi": [0, SB[4]]}},
         "delta": [0, DELTA], "flags": [0, 0x8001]}
LAST_SHAPE = {"name": [list(b"non\0"), list(b"shp\0")], "a": {"x": [0, SB[0]], "y": [0, -SB[1]]},
              "b": {"x": [0, TOTAL], "y": [0, SB[2] - 100]},
              "tag": {"raw": [0, SB[3] | SB[4] << 16],
                      "half": {"lo": [0, SB[3]], "hi": [0, SB[4]]}},
              "delta": [0, DELTA], "flags": [0, 0x8001]}
KIND = ["K_SMALL", "K_MEDIUM", "K_LARGE"][min((TOTAL + BIAS) // 100, 2)]
SHAPES_EXPECTED: dict[tuple[str, str], Any] = {
    ("shapes_main", "bytes"): [list(SB)], ("shapes_main", "counts"): COUNT_STATES,
    ("shapes_main", "s"): SHAPE, ("shapes_main", "k"): [KIND],
    ("shapes_main", "total"): [TOTAL], ("shapes_main", "i"): list(range(17)),
    ("spread", "counts"): ("*", [COUNT_STATES[-1][0]]), ("spread", "acc"): SPREAD_ACCS,
    ("spread", "i"): list(range(9)), ("make_shape", "s"): ("*", SHAPE),
    ("make_shape", "b"): ("*", [SB[0]]), ("make_shape", "total"): [TOTAL],
    ("kind_of", "total"): [TOTAL + BIAS], ("kind_of", "k"): [KIND],
}
SHAPES_GLOBALS = {"histogram": [[0, 0, 0, 0], [1, 0, 0, 0]], "last_shape": LAST_SHAPE,
                  "bias": [BIAS]}


@dataclass(frozen=True)
class Case:
    """A program stepped from entry to exit with what its variables hold."""

    program: str
    packet: bytes
    expected: dict[tuple[str, str], Any]
    retval: int
    uncheckable: frozenset[tuple[str, str]] = frozenset()
    globals: dict[str, Any] | None = None


@pytest.fixture(scope="module")
def vars_prog(vm: Session, bpf_obj: Callable[[str], Path]) -> Iterator[tuple[BpfObject,
                                                                            LoadedProgram]]:
    obj = BpfObject.open(bpf_obj("tests/progs/vars.bpf.c"))
    prog = vm.load(obj, "vars_main")
    value = struct.pack("<QQI4I", MAP_PACKETS, MAP_BYTES, 0, 0, 0, 0, 0) + bytes(4)
    vm.update_map(prog, "counters", struct.pack("<I", 0), value)
    yield obj, prog
    vm.unload(prog)


@pytest.fixture
def stopped(vm: Session, vars_prog: tuple[BpfObject, LoadedProgram]) -> Iterator[
        tuple[Debugger, SourceView]]:
    """A debugger stopped at the entry of vars_main, with the map reset."""
    obj, prog = vars_prog
    value = struct.pack("<QQI4I", MAP_PACKETS, MAP_BYTES, 0, 0, 0, 0, 0) + bytes(4)
    vm.update_map(prog, "counters", struct.pack("<I", 0), value)
    with vm.debugger(prog, RunRequest(PKT)) as dbg:
        dbg.add_breakpoint("vars_main")
        assert dbg.run().reason == "breakpoint"
        yield dbg, SourceView(obj, dbg)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: value}


class Checker:
    """Walks each leaf through its expected values; counts what was checked."""

    def __init__(self) -> None:
        self.position: dict[tuple[str, str, str], int] = {}
        self.steps = 0
        self.outer_registers: set[tuple[str, str]] = set()
        self.memory_ok: set[tuple[str, str, str]] = set()
        self.pairs: set[tuple[int, str, str]] = set()
        self.unavailable: set[tuple[int, str, str]] = set()
        self.values_checked = 0

    def leaf(self, key: tuple[str, str, str], got: Any, seq: list[Any], in_memory: bool,
             where: str) -> None:
        """Registers and constants must walk ``seq`` in order. Stack memory that DWARF
        names may be stale until the code stores the value (clang names the slot before
        the store); once it held an expected value it must keep holding expected values."""
        if in_memory:
            if got not in seq:
                assert key not in self.memory_ok, f"{where}: {'.'.join(key[1:])} = {got!r}, " \
                                                  f"expected one of {seq}"
                return
            self.memory_ok.add(key)
            self.position.setdefault(key, 0)
        else:
            pos = self.position.get(key, 0)
            later = [i for i in range(pos, len(seq)) if seq[i] == got]
            assert later, f"{where}: {'.'.join(key[1:])} = {got!r}, expected one of {seq[pos:]}"
            self.position[key] = later[0]
        self.values_checked += 1

    def complete(self) -> None:
        for key, pos in self.position.items():
            assert pos >= 0, key


def check_variable(view: SourceView, cmds: SourceCommands, frame: SourceFrame, name: str,
                   checker: Checker, line: int, case: Case) -> None:
    assert frame.scope is not None
    var = frame.scope.find(name)
    assert var is not None
    value = view.value(frame, var)
    pair = (line, frame.function, name)
    where = f"{frame.function}:{line} insn {frame.call.site.index if frame.call.site else '?'}"
    if value.unavailable:
        checker.unavailable.add(pair)
        return
    spec = case.expected[(frame.function, name)]
    if frame.call.level > 0 and not _has_memory_piece(view, frame, var):
        checker.outer_registers.add((frame.function, name))
    if isinstance(spec, tuple) and spec[0] in ("mem", "end"):
        data = spec[1]
        base = le(value.data) - (len(data) if spec[0] == "end" else 0)
        assert view.dbg.read_memory(base, len(data)) == data, where
        checker.values_checked += 1
    elif isinstance(spec, tuple):
        view.select(frame.level)
        target = cmds.resolve(f"*{name}")
        assert target is not None
        check_leaves(decode(target), spec[1], (frame.function, "*" + name), checker, where, True)
    else:
        check_leaves(decode(value), spec, (frame.function, name), checker, where,
                     _has_memory_piece(view, frame, var))
    checker.pairs.add(pair)


def _has_memory_piece(view: SourceView, frame: SourceFrame, var: Variable) -> bool:
    """True if part of the value is read from stack memory (which DWARF may name before
    the code has stored the value there)."""
    assert frame.call.site is not None
    place = view.place(frame.call.site)
    assert place is not None
    loc = var.location_at(place[1])
    return loc is not None and any(
        p.ops and p.ops[-1].name != "stack_value" and p.ops[0].name != "reg"
        for p in loc.pieces)


def check_leaves(got: Any, spec: Any, key: tuple[str, str], checker: Checker, where: str,
                 in_memory: bool) -> None:
    leaves = flatten(got) if isinstance(spec, dict) else {"": got}
    wanted = flatten(spec) if isinstance(spec, dict) else {"": spec}
    for path, seq in wanted.items():
        if isinstance(seq, list) and seq and isinstance(seq[0], list) and not isinstance(
                leaves.get(path), list):
            continue
        value = leaves.get(path)
        if value is None or (isinstance(value, list) and None in value):
            continue  # this part is optimized out here
        checker.leaf((key[0], key[1], path), value, seq, in_memory, where)


def walk(dbg: Debugger, view: SourceView, case: Case) -> Checker:
    """Step from the entry to the exit, checking every variable of every frame."""
    cmds = SourceCommands(view)
    checker = Checker()
    while True:
        frames = view.frames()
        line = frames[0].line
        for frame in frames:
            assert frame.scope is not None, frame
            for var in frame.scope.variables:
                if (frame.function, var.name) not in case.uncheckable:
                    check_variable(view, cmds, frame, var.name, checker, line, case)
        for name, spec in (case.globals or {}).items():
            found = cmds.lookup(name)
            assert found is not None and found.available, name
            check_leaves(decode(found), spec, ("<global>", name), checker,
                         f"global {name} at line {line}", True)
            checker.pairs.add((line, "<global>", name))
        event = dbg.stepi()
        checker.steps += 1
        if event.kind == "exited":
            assert event.retval == case.retval
            break
    checker.complete()
    only_unavailable = checker.unavailable - checker.pairs
    print(f"\n{case.program}: {checker.steps} instructions, {len(checker.pairs)} "
          f"(line, variable) pairs checked ({checker.values_checked} values), "
          f"{len(only_unavailable)} pairs only unavailable")
    return checker


def test_every_available_variable_at_every_instruction_has_its_true_value(
        stopped: tuple[Debugger, SourceView]) -> None:
    dbg, view = stopped
    checker = walk(dbg, view, Case("vars_main", PKT, EXPECTED, 2, frozenset(UNCHECKABLE)))
    assert {k[:2] for k in checker.position} >= {("checksum", "i"), ("checksum", "acc"),
                                                  ("vars_main", "h"), ("fold_addr", "mixed")}
    assert len(checker.pairs) >= 60 and checker.values_checked >= 500


def walk_fresh(vm: Session, path: Path, case: Case) -> Checker:
    """Load the program (globals at their initial values), walk it once, unload it."""
    obj = BpfObject.open(path)
    prog = vm.load(obj, case.program)
    try:
        with vm.debugger(prog, RunRequest(case.packet)) as dbg:
            dbg.add_breakpoint(case.program)
            assert dbg.run().reason == "breakpoint"
            return walk(dbg, SourceView(obj, dbg), case)
    finally:
        vm.unload(prog)


def test_calls_variables_at_every_instruction(vm: Session,
                                              bpf_obj: Callable[[str], Path]) -> None:
    checker = walk_fresh(vm, bpf_obj("tests/progs/calls.bpf.c"), Case(
        "calls_main", CALLS_PKT, CALLS_EXPECTED, 393, frozenset({("calls_main", "ctx")})))
    assert {k[:2] for k in checker.position} >= {("sum_bytes", "sum"), ("sum_bytes", "i"),
                                                  ("mix", "acc"), ("scale", "len")}
    assert len(checker.pairs) >= 15


def test_shapes_variables_and_globals_at_every_instruction(
        vm: Session, bpf_obj: Callable[[str], Path]) -> None:
    checker = walk_fresh(vm, bpf_obj("tests/progs/shapes.bpf.c"), Case(
        "shapes_main", SHAPES_PKT, SHAPES_EXPECTED, 0, frozenset({("shapes_main", "skb")}),
        SHAPES_GLOBALS))
    covered = {k[:2] for k in checker.position}
    assert covered >= {("shapes_main", "counts"), ("spread", "acc"), ("kind_of", "total"),
                       ("make_shape", "*s"), ("<global>", "last_shape"),
                       ("<global>", "histogram")}
    # total (r6) and i (r6) live across calls: read in the calling frame from the
    # callee's saved registers or the register itself (qstep.debugger.unwind).
    assert {("shapes_main", "total"), ("shapes_main", "i")} <= checker.outer_registers


def test_print_info_ptype_and_inlined_frames(stopped: tuple[Debugger, SourceView]) -> None:
    dbg, view = stopped
    commands = CommandSet(dbg, view)
    dbg.add_breakpoint("vars.bpf.c:69")  # fold_addr, inlined into hash_key, into vars_main
    event = dbg.cont()
    assert event.reason == "breakpoint"
    bt = commands.execute("bt")
    assert [(f["function"], f["inlined"], f["line"]) for f in bt.data["frames"]] == [
        ("fold_addr", True, 69), ("hash_key", True, 84), ("vars_main", False, 151)]
    assert bt.text.splitlines()[1].startswith("#1  hash_key [inlined] at vars.bpf.c:84")
    assert commands.execute("print x").text == str(X)
    disas = commands.execute("disas").text.splitlines()
    at = next(i for i, t in enumerate(disas) if t.startswith("  =>"))
    assert disas[at + 1].strip().startswith("; vars: x@r8 k=r10-16 zero@[r10-28]")
    assert commands.execute("info args").text == "a = <optimized out>\nb = <optimized out>"
    assert commands.execute("up").data["frame"]["function"] == "hash_key"
    assert commands.execute("print folded").text in ("<optimized out>", str(MIXED))
    with pytest.raises(UsageError, match="No symbol \"x\""):
        commands.execute("whatis x")
    with pytest.raises(UsageError, match="No symbol \"key\""):
        commands.execute("print key.saddr")
    assert commands.execute("frame 2").data["frame"]["function"] == "vars_main"
    assert commands.execute("print key.saddr").text == SADDR
    # C expressions: byte comparisons with address literals, &, sizeof, x on an address.
    assert commands.execute(f"print key.saddr == {SADDR} && key.daddr == {DADDR}").text == "1"
    assert commands.execute("print sizeof(key) + sizeof(struct pkt_meta)").text == "24"
    # key.saddr is stored by '*(u32 *)(r10 - 16) = r8' (the code, not DWARF, says where).
    assert commands.execute("print &key.saddr").data["value"] == bt.data["frames"][2]["r10"] - 16
    assert commands.execute("x/4xb &key").data["values"] == list(PKT[26:30])
    assert commands.execute("print (unsigned int)-1 > 0").text == "1"
    assert commands.execute("print cnt->packets + cnt->bytes").text == str(
        MAP_PACKETS + MAP_BYTES)
    assert commands.execute("print/x key.dport").text == hex(DPORT_LE)
    assert commands.execute("print key").data["value"]["proto"] == 17
    assert commands.execute("print meta.ihl").text == "5"
    assert commands.execute("whatis key").text == "type = struct flow_key"
    assert commands.execute("ptype meta").text.splitlines()[2] == "    __u8 version : 4;"
    assert commands.execute("print weights").text == "{1, 2, 3, 4}"
    assert commands.execute("print weights[3]").text == "4"
    assert commands.execute("print scale").text == "3"
    assert commands.execute("print zero + scale * 2 + 7").data["value"] == 13
    assert commands.execute("print meta.len").text == str(len(PKT))
    with pytest.raises(UsageError, match="No symbol \"nosuch\""):
        commands.execute("print nosuch")
    locals_ = commands.execute("info locals").data["variables"]
    assert {v["name"] for v in locals_} >= {"key", "meta", "zero", "h", "sum", "cnt", "act"}
    with pytest.raises(UsageError, match="no member 'nope'"):
        commands.execute("print key.nope")
    with pytest.raises(UsageError, match="cannot dereference"):
        commands.execute("print *zero")
    with pytest.raises(UsageError, match="context the kernel rewrites"):
        commands.execute("print ctx->data")
    assert commands.execute("down").data["frame"]["level"] == 1


def test_stack_size_from_code_equals_the_jit_prologue(
        vars_prog: tuple[BpfObject, LoadedProgram], stopped: tuple[Debugger, SourceView]) -> None:
    _obj, prog = vars_prog
    _dbg, view = stopped
    for func in prog.functions:
        jit = stack_size_from_prologue(prog.jit_bytes(func.addr, func.addr + 64), func.addr)
        assert (jit or 0) == view.stack_size(func), func.name


def test_types_and_globals_before_run(vm: Session,
                                      vars_prog: tuple[BpfObject, LoadedProgram]) -> None:
    obj, prog = vars_prog
    with vm.debugger(prog, RunRequest(PKT)) as dbg:
        commands = CommandSet(dbg, SourceView(obj, dbg))
        assert commands.execute("print sizeof(struct flow_key)").text == "16"
        assert commands.execute("print weights[1] * scale").text == "6"
        assert commands.execute("whatis weights").text == "type = __u32[4]"
        with pytest.raises(UsageError, match='No symbol "key"'):
            commands.execute("print key")


def test_batch_cli_reports_failures_and_runs_the_rest(bpf_obj: Callable[[str], Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qstep.cli", "debug", str(bpf_obj("tests/progs/vars.bpf.c")),
         "--packet", PKT.hex(), "--map", "counters", "0={packets: 5, bytes: 1000}",
         "-ex", "break vars.bpf.c:69", "-ex", "run", "-ex", "print nosuch", "-ex", "up 2",
         "-ex", "print key.saddr", "-ex", "print/x cnt->bytes"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1  # 'print nosuch' failed
    assert 'error: nosuch: No symbol "nosuch" in current context (column 1)' in proc.stderr
    out = proc.stdout.splitlines()
    assert out[out.index("(qstep) print key.saddr") + 1] == SADDR
    assert out[out.index("(qstep) print/x cnt->bytes") + 1] == hex(MAP_BYTES)


def inspect_vars(vm: Session, obj: BpfObject, prog: LoadedProgram,
                 specs: list[str], recording: str = "auto") -> Inspector:
    value = struct.pack("<QQI4I", MAP_PACKETS, MAP_BYTES, 0, 0, 0, 0, 0) + bytes(4)
    vm.update_map(prog, "counters", struct.pack("<I", 0), value)
    inspector = Inspector(vm, prog, parse_specs(specs), c_scope(obj, prog),
                          recording=recording)
    inspector.attach()
    try:
        assert inspector.run([PKT], 1) == [2]
    finally:
        inspector.detach()
    return inspector


def test_inspect_conditions_and_prints_over_c_variables(
        vm: Session, vars_prog: tuple[BpfObject, LoadedProgram]) -> None:
    obj, prog = vars_prog
    specs = [f"vars.bpf.c:69 print x, k->saddr, key.dport, meta.len, weights[1] "
             f"if key.saddr == {SADDR} && meta.ttl > 1",
             f"vars.bpf.c:69 print x if key.saddr == {DADDR}",
             "vars.bpf.c:130 print m->len, c->packets, (int)m->ttl - 100 "
             "if c->packets == 5 && m->frag == 0"]
    inspector = inspect_vars(vm, obj, prog, specs)
    by_probe = {n: [h.values for h in inspector.hits if h.probe.number == n] for n in (1, 2, 3)}
    assert by_probe[1] == [[X, S_LE, DPORT_LE, len(PKT), 2]]
    assert by_probe[2] == []  # the condition is false: no hit
    assert by_probe[3] == [[len(PKT), MAP_PACKETS, (TTL - 100) & ((1 << 64) - 1)]]
    with pytest.raises(UsageError, match=r"spec 1: h: h is optimized out at vars.bpf.c:69; "
                                         r"it is available at lines [0-9]"):
        Inspector(vm, prog, parse_specs(["vars.bpf.c:69 print h"]), c_scope(obj, prog))


def test_in_guest_and_host_verdicts_agree_on_c_conditions(
        vm: Session, vars_prog: tuple[BpfObject, LoadedProgram]) -> None:
    """The same C condition in an in-guest probe, at a host breakpoint and from a
    recording (the fifth location, past x86's four debug registers) selects the same
    hits and values."""
    obj, prog = vars_prog
    spec = "vars.bpf.c:121 print i, acc, bytes[i] if i == 3 || acc > 1000000"
    expected = [[i, ACCS[i], KEY_BYTES[i]] for i in range(16) if i == 3 or ACCS[i] > 1000000]
    assert 2 <= len(expected) < 16
    guest = inspect_vars(vm, obj, prog, [spec])
    assert guest.probes[0].mode == "guest"
    fillers = [f"vars_main:{n} print $r1" for n in (1, 2, 3, 4)]
    host = inspect_vars(vm, obj, prog, [*fillers, spec], recording="off")
    assert host.probes[4].mode == "host"
    recorded = inspect_vars(vm, obj, prog, [*fillers, spec])  # past 4: from a recording
    assert recorded.probes[4].mode == "recording"
    for inspector in (guest, host, recorded):
        assert [h.values for h in inspector.hits if h.probe.spec.loc.to_text().startswith(
            "vars.bpf.c")] == expected


L4LB = REPO_ROOT / "examples" / "l4lb"


def test_l4lb_design_actions_over_c_variables(vm: Session, l4lb_obj: Path) -> None:
    """The design's actions on the bundled example, with its real lines: break where the
    real is chosen if its IPv6 address is the v6 real's, print the VIP number and stats
    there and after the counters are updated (both spec orders)."""
    obj = BpfObject.open(l4lb_obj)
    prog = vm.load(obj, "l4lb_ingress")
    try:
        for entry in read_map_file(L4LB / "maps.txt"):
            key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
            vm.update_map(prog, entry.map_name, key, value)
        v6 = read_packet(str(L4LB / "packets/ipv6_to_v6real.hex"))
        v4 = read_packet(str(L4LB / "packets/ipv4_to_v4real.hex"))
        specs = ["l4lb.bpf.c:158 if real->dstv6 == 2001:db8:ff::2 print vip_num, real->dstv6",
                 "l4lb.bpf.c:183 if tkey.remote_ipv6 == 2001:db8:ff::2 print vip_num, stats",
                 "l4lb.bpf.c:183 print ctl->ifindex, ctl->mac, tkey.tunnel_id "
                 "if ctl->ifindex == 3"]
        inspector = Inspector(vm, prog, parse_specs(specs), c_scope(obj, prog))
        inspector.attach()
        try:
            assert inspector.run([v6, v4], 1) == [7, 7]  # both redirected
        finally:
            inspector.detach()
    finally:
        vm.unload(prog)
    hits = {n: [(h.run, h.values) for h in inspector.hits if h.probe.number == n]
            for n in (1, 2, 3)}
    real6 = ipaddress.ip_address("2001:db8:ff::2").packed
    # Run 1 only: the IPv6 packet's real is 2001:db8:ff::2; VIP 2.
    assert hits[1] == [(1, [2, real6])]
    first = next(h for h in inspector.hits if h.probe.number == 1)
    assert [value_text(first, i, prog) for i in (0, 1)] == [
        "vip_num = 2", "real->dstv6 = 2001:db8:ff::2"]  # typed, as written
    [(run, [vip_num, stats])] = hits[2]
    assert (run, vip_num) == (1, 2)
    assert isinstance(stats, MapValue) and stats.whole
    # stats[2] was counted just before: one packet of the IPv6 frame's length.
    assert stats.entries[2] == struct.pack("<QQ", 1, len(v6))
    assert not any(any(e) for i, e in enumerate(stats.entries) if i != 2)
    assert hits[3] == [(1, [3, bytes.fromhex("020000000a02"), 2])]  # ctl_array slot 1
    assert [p.counters.reached for p in inspector.probes] == [1, 2, 2]


def test_next_steps_over_inlined_calls_and_finish_leaves_them(
        stopped: tuple[Debugger, SourceView]) -> None:
    dbg, view = stopped
    commands = CommandSet(dbg, view)
    dbg.add_breakpoint("vars.bpf.c:69")
    assert dbg.cont().reason == "breakpoint"
    names = [f["function"] for f in commands.execute("bt").data["frames"]]
    assert names == ["fold_addr", "hash_key", "vars_main"]
    commands.execute("finish")  # out of fold_addr, still in hash_key
    assert [f["function"] for f in commands.execute("bt").data["frames"]] == [
        "hash_key", "vars_main"]
    commands.execute("finish")  # out of hash_key: back in vars_main
    assert [f["function"] for f in commands.execute("bt").data["frames"]] == ["vars_main"]
    dbg.delete_breakpoint(max(dbg.breakpoints))
    lines = []
    while True:
        out = commands.execute("next")
        if out.data["event"] == "exited":
            break
        frames = commands.execute("bt").data["frames"]
        # next never stops inside an inlined call or a bpf-to-bpf callee of this frame.
        assert [f["function"] for f in frames] == ["vars_main"], frames
        lines.append(frames[0]["line"])
    assert out.data["retval"] == 2 and len(lines) >= 3


def test_watchpoints_on_c_objects_report_the_access_and_values(
        stopped: tuple[Debugger, SourceView]) -> None:
    dbg, view = stopped
    commands = CommandSet(dbg, view)
    # act = classify(&meta, cnt): reads cnt->packets. Temporary: the line has a second
    # location (act's zero extension, sunk below line 158) that would stop again.
    dbg.add_breakpoint("vars.bpf.c:156", temporary=True)
    assert dbg.cont().reason == "breakpoint"
    armed = commands.execute("watch cnt->packets")
    assert armed.data["size"] == 8 and armed.data["kind"] == "write"
    before = int(commands.execute("print total_seen").text)  # earlier runs added to it
    assert commands.execute("awatch total_seen").data["size"] == 4
    with pytest.raises(UsageError, match="x86 watches 1, 2, 4 or 8 aligned bytes"):
        commands.execute("watch key")
    hit = commands.execute("continue")
    [w] = hit.data["watch"]
    assert (w["expr"], w["old"], w["new"]) == ("cnt->packets", str(MAP_PACKETS),
                                               str(MAP_PACKETS + 1))
    assert w["line"] == 157 and "Old value = 5\nNew value = 6" in hit.text  # packets += 1
    seen = []
    while True:  # total_seen: read, then written (+= weights[1] * scale = 6)
        out = commands.execute("continue")
        if out.data["event"] == "exited":
            break
        seen += [(x["line"], x["old"], x["new"]) for x in out.data["watch"]]
    assert seen[-1] == (161, str(before), str(before + 6))
    assert all(s[0] == 161 for s in seen)


def test_display_and_info_frame(stopped: tuple[Debugger, SourceView]) -> None:
    dbg, view = stopped
    commands = CommandSet(dbg, view)
    dbg.add_breakpoint("vars.bpf.c:69")
    assert dbg.cont().reason == "breakpoint"
    assert commands.execute("display x").text == f"1: x = {X}"
    assert commands.execute("display/x x").text == f"2: x = {X:#x}"
    stepped = commands.execute("stepi")
    assert f"1: x = {X}" in stepped.text.splitlines()
    assert [d["expr"] for d in stepped.data["displays"]] == ["x", "x"]
    commands.execute("undisplay 1")
    assert [d["text"] for d in commands.execute("info display").data["displays"]] == [
        f"{X:#x}"]
    frame = commands.execute("info frame")
    assert frame.text.splitlines()[0] == "Stack level 0, fold_addr (inlined) at vars.bpf.c:69"
    assert frame.data["stack_size"] == 56  # the lowest stack access of vars_main: r10 - 0x38
    with pytest.raises(UsageError, match="no display number 7"):
        commands.execute("undisplay 7")
