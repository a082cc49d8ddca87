"""Merged-away return lines (tests/progs/merged.bpf.c compiled by clang-19): where the
path to each is taken, read from the real line table and CFG, without a VM."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from qstep.bpf.btf import Btf
from qstep.bpf.compile import compile_c
from qstep.bpf.elf import BpfObject
from qstep.bpf.insn import Insn
from qstep.debugger.locations import resolve
from qstep.debugger.mergedlines import PathEdge, is_conditional, jump_test
from qstep.errors import UsageError
from qstep.expr.evaluate import evaluate
from qstep.loaded import InsnSite, JitFunction, LoadedProgram, source_locations
from qstep.oracle.interp import step

SOURCE = Path(__file__).parents[1] / "progs" / "merged.bpf.c"


def line_of(text: str, nth: int = 1) -> int:
    """The line number of the ``nth`` line that contains ``text``."""
    hits = [n for n, line in enumerate(SOURCE.read_text().splitlines(), start=1) if text in line]
    return hits[nth - 1]


@pytest.fixture(scope="module")
def obj() -> BpfObject:
    return BpfObject.open(compile_c(SOURCE))


def offline(obj: BpfObject, name: str) -> LoadedProgram:
    """The program as if loaded: each instruction at a made-up JIT address."""
    prog = next(p for p in obj.programs if p.name == name)
    insns = [dataclasses.replace(i, index=i.index - prog.offset) for i in prog.insns]
    lines = [dataclasses.replace(r, insn_off=r.insn_off - prog.offset)
             for r in obj.line_table(prog.section) if prog.contains(r.insn_off)]
    sources = source_locations(lines, prog.insn_count)
    func = JitFunction(0, name, 0, prog.insn_count, 0x1000, 0x1000, 0)
    sites = {i.index: InsnSite(i, func, sources.get(i.index), i.index, 0x1000 + 8 * i.index,
                               0x1008 + 8 * i.index) for i in insns}
    return LoadedProgram(1, 1, 6, name, "t", Btf([], b"\0"), insns, [], b"", [func], sites, {})


def resolved(prog: LoadedProgram, line: int) -> tuple[list[int], list[str], str]:
    """(instructions, path conditions as text, note) of ``merged.bpf.c:LINE``."""
    r = resolve(prog, f"merged.bpf.c:{line}")
    tests = [r.paths[s.index].condition() for s in r.sites]
    return [s.index for s in r.sites], [t.to_text() if t else "-" for t in tests], r.note


# (text of the `if`, the n-th such line): each early return folded into the exit.
EARLY = [("(void *)(eth + 1) > data_end", 1), ("eth->h_proto != bpf_htons(ETH_P_IP)", 1),
         ("(void *)(ip + 1) > data_end", 1), ("ip->ttl <= 1", 1),
         ("ip->protocol != IPPROTO_UDP", 1), ("(void *)(udp + 1) > data_end", 1), ("!s)", 1)]


@pytest.mark.parametrize(("cond", "nth"), EARLY)
def test_an_early_return_stops_where_its_branch_is_taken(obj: BpfObject, cond: str,
                                                         nth: int) -> None:
    prog = offline(obj, "merged")
    if_line = line_of(cond, nth)
    insns, tests, note = resolved(prog, if_line + 1)
    assert len(insns) == 1
    insn = prog.sites[insns[0]]
    assert insn.source is not None and insn.source.line == if_line
    assert is_conditional(insn.insn) and insn.insn.jump_target is not None
    exit_site = prog.sites[insn.insn.jump_target]
    assert exit_site.insn.is_exit  # straight to the shared exit
    assert tests != ["-"]
    assert (f"merged.bpf.c:{if_line + 1} has no code of its own: the compiler merged it into "
            f"line {exit_site.source.line if exit_site.source else 0}'s exit; stopping where "
            f"the path to it leaves line {if_line}: insn {insns[0]} when it jumps to insn "
            f"{exit_site.index}") == note


def test_the_return_inside_a_block_stops_where_its_path_leaves_the_if(obj: BpfObject) -> None:
    # `s->dropped++; return XDP_DROP;` share their code with the passed++ path.
    prog = offline(obj, "merged")
    if_line = line_of("udp->source == bpf_htons(666)")
    insns, tests, note = resolved(prog, if_line + 2)
    assert len(insns) == 1 and prog.sites[insns[0]].source.line == if_line  # type: ignore[union-attr]
    assert tests == ["$r4 == 39426"]  # htons(666) as the 16-bit load sees it
    assert "merged it into code shared with line" in note


def test_returns_no_instruction_tells_apart_keep_an_explanation(obj: BpfObject) -> None:
    tail = offline(obj, "tail")
    arp = line_of("bpf_htons(ETH_P_ARP)")
    with pytest.raises(UsageError, match=rf"merged.bpf.c:{arp + 1} \(a return\) has no code of "
                       rf"its own, and no instruction tells the path to it from the other "
                       rf"paths leaving line {arp}; nearest lines with code: {arp}, {arp + 3}"):
        resolve(tail, f"merged.bpf.c:{arp + 1}")
    with pytest.raises(UsageError, match=f"line {arp + 2} of merged.bpf.c has no code after "
                       f"optimisation; nearest lines with code: {arp}, {arp + 3}"):
        resolve(tail, f"merged.bpf.c:{arp + 2}")  # not in the if's body
    first = line_of("(void *)(eth + 1) > data_end", 2)
    assert resolved(tail, first + 1)[1] == ["$r3 > $r2"]


def test_a_line_that_is_not_a_return_keeps_the_explanation(obj: BpfObject) -> None:
    prog = offline(obj, "merged")
    line = line_of("ip = (void *)(eth + 1);")
    with pytest.raises(UsageError, match=f"line {line} of merged.bpf.c has no code after "
                                         "optimisation; nearest lines with code"):
        resolve(prog, f"merged.bpf.c:{line}")


class Regs:
    def __init__(self, values: list[int]) -> None:
        self.values = values

    def reg(self, n: int) -> int:
        return self.values[n]

    def mem(self, addr: int, size: int) -> bytes:
        raise AssertionError

    def name(self, name: str) -> int:
        raise AssertionError


JUMP_OPS = [0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0]
EDGE_VALUES = [0, 1, 2, 0x7F, 0x80, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000,
               0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFF00000001]


@pytest.mark.parametrize("op", JUMP_OPS)
@pytest.mark.parametrize("cls", [0x05, 0x06])  # JMP, JMP32
@pytest.mark.parametrize("src", ["reg", "imm"])
def test_path_condition_equals_the_reference_interpreter(op: int, cls: int, src: str) -> None:
    """The probe's test of a branch direction (an expression) against the oracle's jump."""
    rng = random.Random(op * 7 + cls)
    imms = [0, 1, -1, 0x7FFFFFFF, -0x80000000, 5, -7]
    for n in range(400):
        a = rng.choice(EDGE_VALUES) if n % 2 else rng.getrandbits(64)
        b = rng.choice(EDGE_VALUES) if n % 3 else rng.getrandbits(64)
        imm = rng.choice(imms)
        code = cls | op | (0x08 if src == "reg" else 0)
        insn = Insn(10, code, 1, 2, 3, imm if src == "imm" else 0)
        regs = [0] * 11
        regs[1], regs[2] = a, b
        taken = step(insn, regs, lambda addr, size: b"").next_pc == 14
        assert bool(evaluate(jump_test(insn), Regs(regs))) == taken, (hex(a), hex(b), imm)
        site = InsnSite(insn, JitFunction(0, "f", 0, 20, 0, 0, 0), None, 10, 0, 8)
        target = InsnSite(Insn(14, 0x95, 0, 0, 0, 0), site.function, None, 14, 0, 8)
        edge = PathEdge(site, target)
        test = edge.condition()
        assert test is not None and edge.holds(regs) == taken
        assert bool(evaluate(test, Regs(regs))) == taken


def test_either_condition_and_a_return_after_a_call(obj: BpfObject) -> None:
    prog = offline(obj, "either")
    cond = line_of("(eth->h_dest[0] & 1)")
    insns, tests, note = resolved(prog, cond + 1)
    assert len(insns) == 2 and all(t != "-" for t in tests)  # a branch for each operand
    assert all(prog.sites[i].insn.jump_target == insns[-1] + 5 for i in insns)
    call = line_of("tally(eth->h_source[5] & 3);")
    insns, tests, note = resolved(prog, call + 1)
    [last] = insns
    assert tests == ["-"] and prog.sites[last + 1].insn.is_exit  # unconditional, then exit
    assert note.endswith(f"stopping where the path to it leaves line {call}: insn {last} "
                         f"(it goes on to insn {last + 1})")


def test_tc_act_shot_returns_and_tc_act_ok_after_a_store(obj: BpfObject) -> None:
    prog = offline(obj, "shot")
    short = line_of("(void *)(ip + 1) > data_end", 2)
    blocked = line_of("10.0.0.99 is blocked")
    store = line_of("skb->mark = ip->ttl;")
    assert [resolved(prog, short + 1)[1], resolved(prog, blocked + 1)[1]] == [
        ["$r4 > $r3"], ["$r3 == 0x6300000a"]]  # 10.0.0.99 as the 32-bit load sees it
    insns, tests, note = resolved(prog, store + 1)
    assert tests == ["-"] and prog.sites[insns[0] + 1].insn.is_exit
    assert "merged it into line" in note and "'s exit" in note


def test_a_source_file_edited_since_the_build_gives_no_path(obj: BpfObject,
                                                            tmp_path: Path) -> None:
    """The text on disk must be the compiled one (the line info carries the lines with
    code): an edited condition line means the shape cannot be trusted."""
    cond = line_of("ip->ttl <= 1")
    edited = SOURCE.read_text().splitlines()
    edited[cond - 1] = edited[cond - 1].replace("<= 1", "<= 2")
    copy = tmp_path / "merged.bpf.c"
    copy.write_text("\n".join(edited) + "\n")
    prog = offline(obj, "merged")
    for index, site in prog.sites.items():
        if site.source is not None:
            prog.sites[index] = dataclasses.replace(
                site, source=dataclasses.replace(site.source, file=str(copy)))
    with pytest.raises(UsageError, match=f"line {cond + 1} of merged.bpf.c has no code after "
                                         "optimisation"):
        resolve(prog, f"merged.bpf.c:{cond + 1}")
    other = line_of("ip->protocol != IPPROTO_UDP")
    assert resolved(prog, other + 1)[1] == ["$r1 != 17"]  # unedited lines still resolve
