"""A ``return`` line the compiler merged away: where the path to it is taken.

At -O2 clang folds ``if (c) return XDP_DROP;`` into the condition's line: the
return value is set before the branch and the branch goes to code shared with
other paths (usually the function's single ``exit``), so the return line has no
instruction of its own. What a user means by ``break FILE:LINE`` there is "stop
when the program takes the path to this return". With C the nearest line with
code before LINE and N the nearest after it:

- C ends the condition of the ``if`` whose body holds the return: the path is
  each edge leaving C's code that runs straight to ``exit`` (no conditional jump
  on the way) and does not start N's code; the location is the edge's source
  instruction, checked for the direction taken when it is a conditional jump. An
  ``a || b`` condition gives one such edge per operand.
- C is a statement before the return in its block: wherever C's code leaves to
  (one place), control goes on to the return; the location is the instruction
  that leaves, unconditionally.

The source text decides what the lines are (a ``return`` alone on its line, no
other control statement between C and it). Without the source, there is no such
location and the caller keeps its explanation; when every edge leaving the
``if`` runs straight to the exit (``if (c) return A; return B;`` with both
returns merged into it), nothing tells the paths apart, and the explanation says
so.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from qstep.bpf.insn import JMP32, Insn
from qstep.debugger.lineentries import JMP_JA, falls_through
from qstep.debugger.sourcefiles import source_lines
from qstep.expr.ast import Binary, Expr, Num, Reg, Unary
from qstep.loaded import InsnSite, LoadedProgram
from qstep.oracle.interp import step
from qstep.probe.spec import Spec, Watch

_RETURN = re.compile(r"\s*return\b[^;]*;\s*(//.*|/\*.*\*/)?\s*$")
_IF_START = re.compile(r"(}\s*)?(else\s+)?if\s*\(")
_CONTROL = re.compile(r"(}|else\b|for\b|while\b|do\b|switch\b|case\b|default\b)")
# What may not stand between the statement before a return and the return.
_BETWEEN = re.compile(r"}|\b(else|return|case|default|if|for|while|break|continue|goto)\b")
MAX_EXIT_PATH = 64
M32, M64, SIGN64, SIGN32 = (1 << 32) - 1, (1 << 64) - 1, 1 << 63, 1 << 31
# Jump op -> (comparison, signed); JSET (0x40) is ``(a & b) != 0``.
_JUMPS = {0x10: ("==", False), 0x20: (">", False), 0x30: (">=", False), 0x50: ("!=", False),
          0x60: (">", True), 0x70: (">=", True), 0xA0: ("<", False), 0xB0: ("<=", False),
          0xC0: ("<", True), 0xD0: ("<=", True)}
JSET = 0x40


def is_conditional(insn: Insn) -> bool:
    """A conditional jump (not ``goto``, call or exit)."""
    return insn.is_jump and insn.op != JMP_JA and not insn.is_call and not insn.is_exit


def _no_memory(addr: int, size: int) -> bytes:
    raise AssertionError("a jump reads no memory")


@dataclass(frozen=True)
class PathEdge:
    """Control leaving ``site`` for ``target`` (a jump taken, not taken, or straight on)."""

    site: InsnSite
    target: InsnSite

    @property
    def conditional(self) -> bool:
        return is_conditional(self.site.insn)

    @property
    def taken(self) -> bool:
        """True for a jump's taken direction."""
        return self.target.index == self.site.insn.jump_target

    def holds(self, regs: Sequence[int]) -> bool:
        """Whether registers ``regs`` (r0..r10 before ``site``) send control to ``target``
        (the reference interpreter decides the branch)."""
        if not self.conditional:
            return True
        return step(self.site.insn, list(regs[:11]), _no_memory).next_pc == self.target.index

    def condition(self) -> Expr | None:
        """The same test as an expression over registers (for in-guest probes)."""
        if not self.conditional:
            return None
        test = jump_test(self.site.insn)
        return test if self.taken else Unary("!", test)

    def describe(self) -> str:
        insn = self.site.insn
        if not self.conditional:
            return f"insn {insn.index} (it goes on to insn {self.target.index})"
        how = "jumps" if self.taken else "falls through"
        return f"insn {insn.index} when it {how} to insn {self.target.index}"


def jump_test(insn: Insn) -> Expr:
    """``insn``'s jump condition (taken when non-zero) over registers, in the untyped
    expression language (u64, unsigned comparisons)."""
    bits32 = insn.cls == JMP32
    mask = M32 if bits32 else M64
    left: Expr = Reg(insn.dst)
    right: Expr | int = Reg(insn.src) if insn.uses_reg_src else insn.imm & mask
    if bits32:
        left = Binary("&", left, Num(M32))
        right = Binary("&", right, Num(M32)) if isinstance(right, Reg) else right
    if insn.op == JSET:
        both = Binary("&", left, _num(right))
        return Binary("!=", both, Num(0))
    op, signed = _JUMPS[insn.op]
    if signed:  # flipping the sign bit turns a signed order into the unsigned one
        sign = SIGN32 if bits32 else SIGN64
        left = Binary("^", left, Num(sign))
        right = right ^ sign if isinstance(right, int) else Binary("^", right, Num(sign))
    return Binary(op, left, _num(right))


def _num(value: Expr | int) -> Expr:
    return Num(value) if isinstance(value, int) else value


@dataclass(frozen=True)
class PathCheck:
    """The edges of a path that leave one instruction (both directions of a jump can)."""

    edges: tuple[PathEdge, ...]

    def holds(self, regs: Sequence[int]) -> bool:
        """Whether control goes one of the edges' ways from registers ``regs``."""
        return any(e.holds(regs) for e in self.edges)

    def condition(self) -> Expr | None:
        """The same test over registers; None when it always holds."""
        tests = [e.condition() for e in self.edges]
        if any(t is None for t in tests) or len(tests) > 1:
            return None  # an unconditional edge, or both ways of one jump
        return tests[0]


def on_path(spec: Spec, path: PathCheck | None) -> Spec:
    """``spec`` whose condition also requires ``path`` to be taken (a probe location of
    a merged-away line; a ``watch`` condition is left as it is)."""
    test = path.condition() if path is not None else None
    if test is None or isinstance(spec.condition, Watch):
        return spec
    both = test if spec.condition is None else Binary("&&", test, spec.condition)
    return dataclasses.replace(spec, condition=both)


@dataclass(frozen=True)
class MergedLine:
    """A return line without code, the line of its ``if`` and the edges of its path."""

    file: str
    line: int
    cond_line: int
    next_line: int
    edges: tuple[PathEdge, ...]

    def checks(self) -> dict[int, PathCheck]:
        """The check at each instruction a path edge leaves, by instruction index."""
        out: dict[int, list[PathEdge]] = {}
        for e in self.edges:
            out.setdefault(e.site.index, []).append(e)
        return {index: PathCheck(tuple(edges)) for index, edges in out.items()}

    def message(self) -> str:
        """What ``break`` says: where it stops, or why there is no such place."""
        name = self.file.rsplit("/", 1)[-1]
        if not self.edges:
            return (f"{name}:{self.line} (a return) has no code of its own, and no instruction "
                    f"tells the path to it from the other paths leaving line "
                    f"{self.cond_line}; nearest lines with code: {self.cond_line}, "
                    f"{self.next_line}")
        into = sorted({_into(e.target) for e in self.edges})
        return (f"{name}:{self.line} has no code of its own: the compiler merged it into "
                f"{' and '.join(into)}; stopping where the path to it leaves line "
                f"{self.cond_line}: {'; '.join(e.describe() for e in self.edges)}")


def _into(target: InsnSite) -> str:
    line = target.source.line if target.source else 0
    return f"line {line}'s exit" if target.insn.is_exit else f"code shared with line {line}"


def merged_line(prog: LoadedProgram, file: str, line: int,
                in_file: list[InsnSite]) -> MergedLine | None:
    """The path to ``file:line`` (a return without live code), or None when the line is
    not one; its ``edges`` are empty when no instruction tells the path apart."""
    lines = sorted({s.source.line for s in in_file if s.source and not s.removed})
    before = [n for n in lines if n < line]
    after = [n for n in lines if n > line]
    if not before or not after:
        return None
    cond, nxt = before[-1], after[0]
    path = next((s.source.file for s in in_file if s.source), file)
    text = source_lines(prog, path)
    if not _same_source(text, in_file, (cond, nxt)):
        return None  # the file on disk is not the one compiled
    kind = _shape(text, cond, line)
    if kind is None:
        return None
    edges = _out_edges(prog, in_file, cond)
    chosen = _after_if(prog, edges, nxt) if kind == "if" else _after_statement(edges)
    return MergedLine(path, line, cond, nxt, tuple(chosen))


def _same_source(text: dict[int, str], in_file: list[InsnSite], lines: tuple[int, ...]) -> bool:
    """Whether ``text`` has, on ``lines``, the text the object's line info carries."""
    carried = {s.source.line: s.source.text for s in in_file if s.source and s.source.text}
    return all(text.get(n, "").strip() == carried[n].strip() for n in lines if n in carried)


def _code(line: str) -> str:
    """A source line without its comments."""
    return re.sub(r"/\*.*?(\*/|$)|//.*", "", line).strip()


def _shape(text: dict[int, str], cond: int, line: int) -> str | None:
    """How ``return ...;`` on ``line`` follows ``cond``: ``if`` (the condition of the ``if``
    whose body it is in), ``plain`` (a statement before it in its block), or None."""
    if not _RETURN.match(text.get(line, "")):
        return None
    if any(_BETWEEN.search(_code(text.get(n, ""))) for n in range(cond + 1, line)):
        return None
    start = cond
    while start > max(cond - 8, 1) and not _ends_statement(text.get(start - 1, "")):
        start -= 1
    statement = " ".join(_code(text.get(n, "")) for n in range(start, cond + 1))
    if _IF_START.match(statement):
        return "if"
    return None if _CONTROL.match(statement) else "plain"


def _ends_statement(line: str) -> bool:
    code = _code(line)
    return not code or code.startswith("#") or code.endswith((";", "{", "}"))


def _key(site: InsnSite) -> tuple[str, int] | None:
    return (site.source.file, site.source.line) if site.source else None


def _line_of(site: InsnSite | None) -> int | None:
    return site.source.line if site is not None and site.source else None


def _live(prog: LoadedProgram, index: int | None) -> InsnSite | None:
    site = prog.sites.get(index) if index is not None else None
    return site if site is not None and not site.removed and site.exact else None


def _out_edges(prog: LoadedProgram, in_file: list[InsnSite], cond: int) -> list[PathEdge]:
    """Every edge from an instruction of line ``cond`` to an instruction of another line."""
    edges = []
    for site in sorted((s for s in in_file if _line_of(s) == cond and s.exact),
                       key=lambda s: s.index):
        insn = site.insn
        targets = []
        if insn.jump_target is not None and not insn.is_call and not insn.is_exit:
            targets.append(_live(prog, insn.jump_target))
        if falls_through(insn):
            targets.append(_live(prog, insn.index + insn.size))
        for target in targets:
            if target is not None and _key(target) != _key(site):
                edges.append(PathEdge(site, target))
    return edges


def _after_if(prog: LoadedProgram, edges: list[PathEdge], nxt: int) -> list[PathEdge]:
    """The edges to a return in the ``if``'s body: those that run straight to ``exit``
    and do not start ``nxt``'s code (the statement after the ``if``); none unless
    another edge goes on (else the paths cannot be told apart)."""
    path = [e for e in edges if _straight_to_exit(prog, e.target.index)
            and not (_line_of(e.target) == nxt and _starts_run(prog, e.target))]
    return path if len(path) < len(edges) else []


def _after_statement(edges: list[PathEdge]) -> list[PathEdge]:
    """A return right after a statement of its block: wherever that statement's code
    leaves to (one place), control goes on to the return."""
    return edges if len({e.target.index for e in edges}) == 1 else []


def _straight_to_exit(prog: LoadedProgram, index: int) -> bool:
    """Whether code from ``index`` reaches ``exit`` without a conditional jump."""
    for _ in range(MAX_EXIT_PATH):
        site = _live(prog, index)
        if site is None or is_conditional(site.insn) or site.insn.is_pseudo_call:
            return False
        if site.insn.is_exit:
            return True
        jump = site.insn.is_jump and site.insn.op == JMP_JA and not site.insn.is_call
        index = site.insn.jump_target if jump and site.insn.jump_target is not None \
            else index + site.insn.size
    return False


def _starts_run(prog: LoadedProgram, target: InsnSite) -> bool:
    """Whether ``target`` is the first of a run of its line's instructions."""
    prev = next((prog.sites[i] for i in range(target.index - 1, -1, -1)
                 if i in prog.sites and not prog.sites[i].removed), None)
    return prev is None or prev.function != target.function or _line_of(prev) != _line_of(target)
