"""qstep.expr.lower: C expressions compiled to the untyped language give, on the same
machine state, exactly what the typed C evaluator (qstep.expr.typed) gives, at every
instruction of vars.bpf.c (differential test over DWARF locations)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from qstep.bpf.elf import BpfObject
from qstep.dwarf.model import DwarfModel
from qstep.dwarf.scope import InsnScope, line_ranges
from qstep.dwarf.types import CType
from qstep.dwarf.values import Value, read_value
from qstep.errors import UsageError
from qstep.expr.ast import MASK
from qstep.expr.evaluate import evaluate
from qstep.expr.lower import lower
from qstep.expr.parser import parse_expression
from qstep.expr.typed import evaluate_typed
from qstep.loaded import InsnSite, JitFunction

EXPRESSIONS = [
    "{v}", "{v} + 1", "{v} - 100", "{v} * 3", "{v} >> 1", "{v} << 3", "-{v}", "~{v}", "!{v}",
    "{v} == 0", "{v} < 5", "(int){v} < 0", "(unsigned char){v}", "(short){v} > -2",
    "{v} & 0xff", "{v} ^ {v}", "{v} / 7", "{v} % 7",
    "key.saddr", "key.saddr == 10.0.0.1", "key.dport + key.sport", "key.proto",
    "key.pad[1]", "meta.len", "meta.ihl", "meta.version * 2", "meta.frag",
    "meta.len - 60 < 0", "(int)meta.len - 60 < 0", "&key", "&meta.ttl", "*&zero",
    "sizeof(key)", "sizeof(struct counters) + 1", "cnt->packets", "cnt->hits[2]",
    "c->bytes", "m->ttl", "*bytes", "bytes[3]", "k->daddr", "weights[2] * scale",
]
STACK_BASE = 0x7000


class Machine:
    """Registers and memory shared by both evaluators (memory is a fixed pseudo-random
    pattern, so every stack slot and pointer target has a known value)."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.regs = [rng.choice([rng.getrandbits(64), rng.getrandbits(8), STACK_BASE + 0x40])
                     for _ in range(10)] + [STACK_BASE + 0x100]
        self.stack_size = 56

    def reg(self, n: int) -> int:
        return self.regs[n]

    def mem(self, addr: int, size: int) -> bytes:
        return bytes(((addr + i) * 7 + (addr + i) // 251) & 0xFF for i in range(size))

    def entry_reg(self, n: int) -> int | None:
        return None


class Typed:
    def __init__(self, scope: InsnScope, machine: Machine) -> None:
        self.scope, self.machine = scope, machine

    def reg(self, n: int) -> int:
        return self.machine.reg(n)

    def mem(self, addr: int, size: int) -> bytes:
        return self.machine.mem(addr, size)

    def variable(self, name: str) -> Value | None:
        ref = self.scope.variable(name)
        if ref is not None:
            return read_value(ref.location, ref.type, self.machine)
        glob = self.scope.global_address(name)
        if glob is None:
            return None
        data = self.machine.mem(glob[0], glob[1].byte_size)
        return Value(glob[1], data, (True,) * len(data), glob[0])

    def find_type(self, name: str) -> CType | None:
        return self.scope.find_type(name)


class Untyped:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def reg(self, n: int) -> int:
        return self.machine.reg(n)

    def mem(self, addr: int, size: int) -> bytes:
        return self.machine.mem(addr, size)

    def name(self, name: str) -> int | bytes:
        raise UsageError(f"unexpected name {name}")


@pytest.fixture(scope="module")
def vars_obj(bpf_obj: Callable[[str], Path]) -> BpfObject:
    return BpfObject.open(bpf_obj("tests/progs/vars.bpf.c"))


def _scopes(obj: BpfObject) -> list[InsnScope]:
    model = DwarfModel.from_bytes(obj.data)
    prog = SimpleNamespace(sites={})
    scopes = []
    for func in obj.functions:
        # Section slots as loaded indexes: the function starts at its section offset.
        jit = JitFunction(0, func.name, func.offset, func.offset + func.insn_count, 0, 0, 0)
        for insn in func.insns:
            site = InsnSite(insn, jit, None, None, None, None)
            scope = InsnScope(obj, model, prog, site)  # type: ignore[arg-type]
            scope._bases = {".data": 0x9000, ".rodata": 0x9100, ".bss": 0x9200}
            scopes.append(scope)
    return scopes


def test_lowered_expressions_equal_typed_ones_at_every_instruction(vars_obj: BpfObject) -> None:
    compared = refused = 0
    for n, scope in enumerate(_scopes(vars_obj)):
        machine = Machine(n)
        names = {v.name for f in scope.model.frames_at(*scope.place)  # type: ignore[misc]
                 for v in f.variables}
        for template in EXPRESSIONS:
            for v in sorted(names) if "{v}" in template else [""]:
                text = template.format(v=v)
                expr = parse_expression(text, lambda w, s=scope: s.find_type(w) is not None)
                try:
                    want = evaluate_typed(expr, Typed(scope, machine))
                    if not want.available:
                        continue
                except UsageError:
                    continue
                try:
                    got = evaluate(lower(expr, scope), Untyped(machine))
                except UsageError:
                    refused += 1  # lowering may refuse (pieces, signed division): never wrong
                    continue
                expected: int | bytes = want.data if not want.type.is_scalar else (
                    want.as_int() & MASK)
                if isinstance(got, int) and isinstance(expected, bytes):
                    expected = int.from_bytes(expected, "little")  # mem() of 1/2/4/8 bytes
                assert got == expected, (scope.site.function.name, scope.site.index, text)
                compared += 1
    assert compared > 2000
    print(f"\n{compared} lowered expressions equal the typed evaluation; {refused} refused")


def test_optimized_out_names_the_lines_where_it_is_available(vars_obj: BpfObject) -> None:
    assert line_ranges({3, 4, 5, 9, 11, 12}) == "3-5, 9, 11-12"
    scope = next(s for s in _scopes(vars_obj)
                 if s.site.function.name == "vars_main" and s.site.index == 0)
    with pytest.raises(UsageError, match=r"h is optimized out at insn 0; it is available at "
                                         r"lines [0-9, -]+ \(column 1\)"):
        lower(parse_expression("h + 1"), scope)
    with pytest.raises(UsageError, match="split across registers"):
        lower(parse_expression("ports.lo"), next(s for s in _scopes(vars_obj)
                                            if s.site.index == 61 and
                                            s.site.function.name == "vars_main"))
