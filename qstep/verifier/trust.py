"""Which runtime values an explored path's states must contain, instruction by instruction.

From the program's entry the run follows states the verifier derived from the entry
state, so every value it tracked must lie inside them (``Trust()``: everything). At a
pruning point (``N: safe``) the verifier matched the run's state against an older state
at N and compared only what that older state needs: registers that are read later, and
among scalars only the precise ones (``P``); it ignored the rest. After that the older
path's states describe the run only for values that come from what it compared.
`Trust.after_pruning` starts from the older state: precise scalars and pointers are
*pending* (compared if read before written, so they are checked when the run reads
them), nothing else is trusted, not even the stack. `Trust.apply` carries trust through
one instruction: a result is trusted when everything it is computed from is. A
conditional jump narrows both operands and the registers linked to them (same ``id``);
when one of them is not trusted, none of them is afterwards. Calls to helpers and
kfuncs return a trusted r0 only when every argument register the verifier tracked is
trusted. Soundness first: whatever is not trusted is not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from qstep.bpf.insn import (
    ALU,
    ALU64,
    ALU_END,
    ALU_MOV,
    ALU_NEG,
    JMP,
    JMP32,
    LD,
    LDX,
    MODE_ATOMIC,
    ST,
    STX,
    Insn,
)
from qstep.verifier.states import RegState

FP = 10
_NONE = RegState("")
CALLEE_SAVED = (6, 7, 8, 9)


@dataclass
class Frame:
    """A caller's registers that survive a bpf-to-bpf call, saved at the call."""

    regs: frozenset[int] | None
    pending: dict[int, RegState]


@dataclass
class StackTrust:
    """Trusted stack bytes by address: all but ``bad`` (``good`` None), or ``good``."""

    good: set[int] | None = None
    bad: set[int] = field(default_factory=set)

    def covers(self, span: range) -> bool:
        if self.good is None:
            return not any(a in self.bad for a in span)
        return all(a in self.good for a in span)

    def mark(self, span: range, trusted: bool) -> None:
        for address in span:
            if self.good is None and trusted:
                self.bad.discard(address)
            elif self.good is None:
                self.bad.add(address)
            elif trusted:
                self.good.add(address)
            else:
                self.good.discard(address)

    def forget(self) -> None:
        """Nothing on the stack is trusted any more."""
        self.good, self.bad = set(), set()


@dataclass
class Trust:
    """Trusted registers and stack bytes on one followed path (None: all of them)."""

    regs: set[int] | None = None
    pending: dict[int, RegState] = field(default_factory=dict)
    stack: StackTrust = field(default_factory=StackTrust)
    frames: list[Frame] = field(default_factory=list)

    @classmethod
    def after_pruning(cls, older: dict[int, RegState]) -> Trust:
        """At a pruning point matched against the state ``older``."""
        pending = {r: s for r, s in older.items()
                   if r != FP and (s.type != "scalar" or s.precise)}
        return cls(regs={FP}, pending=pending, stack=StackTrust(good=set()))

    def copy(self) -> Trust:
        """An independent copy (a follower that splits in two)."""
        return Trust(None if self.regs is None else set(self.regs), dict(self.pending),
                     StackTrust(None if self.stack.good is None else set(self.stack.good),
                                set(self.stack.bad)), list(self.frames))

    def returned_from_global(self) -> Trust:
        """Back from a global function (the call's frame pushed): r0 is the unknown
        scalar the verifier assumes, the caller's registers as they were."""
        self._set(0, True)
        self._return()
        return self

    def trusted(self, reg: int) -> bool:
        return self.regs is None or reg in self.regs

    def key(self) -> tuple[object, ...]:
        """What distinguishes two trusts (to merge equal followers)."""
        return (None if self.regs is None else tuple(sorted(self.regs)),
                tuple(sorted((r, s.text) for r, s in self.pending.items())),
                self.stack.good is None, len(self.frames))

    def read_pending(self, insn: Insn) -> list[tuple[int, RegState]]:
        """Pending registers that ``insn`` reads (the verifier compared them): they
        become trusted; the caller checks them against the older state's claim."""
        found = []
        for reg in reads(insn):
            claim = self.pending.pop(reg, None)
            if claim is not None:
                found.append((reg, claim))
                self._set(reg, True)
        return found

    def distrust(self, reg: int) -> None:
        """``reg`` failed its check: do not judge what is computed from it."""
        self.pending.pop(reg, None)
        self._set(reg, False)

    def apply(self, insn: Insn, claims: dict[int, RegState], regs: Sequence[int | None]) -> None:
        """Carry trust through ``insn`` (``claims``/``regs``: the state and values before)."""
        cls = insn.cls
        if cls in (ALU, ALU64):
            self._alu(insn)
        elif cls == LD:
            self._ld(insn)
        elif cls == LDX:
            self._set(insn.dst, self.trusted(insn.src) and self._load_trusted(insn, claims, regs))
        elif cls in (ST, STX):
            self._store(insn, claims, regs)
        elif insn.is_pseudo_call:
            self._call_subprogram()
        elif insn.is_call:
            args = [r for r in range(1, 6) if r in claims]
            self._clobber(all(self.trusted(r) for r in args))
        elif insn.is_exit:
            self._return()
        elif cls in (JMP, JMP32) and insn.is_jump:
            self._narrow(insn, claims)

    def _set(self, reg: int, trusted: bool) -> None:
        self.pending.pop(reg, None)
        if self.regs is None:
            if trusted:
                return
            self.regs = set(range(11))
        if trusted:
            self.regs.add(reg)
        else:
            self.regs.discard(reg)

    def _alu(self, insn: Insn) -> None:
        if insn.op == ALU_MOV:  # includes movsx
            self._set(insn.dst, not insn.uses_reg_src or self.trusted(insn.src))
        elif insn.op in (ALU_NEG, ALU_END) or not insn.uses_reg_src:
            self._set(insn.dst, self.trusted(insn.dst))
        else:
            self._set(insn.dst, self.trusted(insn.dst) and self.trusted(insn.src))

    def _ld(self, insn: Insn) -> None:
        if insn.is_ldimm64:
            self._set(insn.dst, True)  # a constant, a map, a map value, a kernel symbol
            return
        inputs = [6] + ([insn.src] if insn.mode == 0x40 else [])  # legacy packet loads
        self._clobber(all(self.trusted(r) for r in inputs))

    def _load_trusted(self, insn: Insn, claims: dict[int, RegState],
                      regs: Sequence[int | None]) -> bool:
        base = claims.get(insn.src)
        if base is None or base.type != "fp":
            return True  # packet, map value, context: the verifier's claim is by type
        span = _span(insn, regs, insn.src)
        return span is not None and self.stack.covers(span)

    def _store(self, insn: Insn, claims: dict[int, RegState],
               regs: Sequence[int | None]) -> None:
        atomic = insn.cls == STX and insn.mode == MODE_ATOMIC
        if atomic and insn.imm & 0x01:  # fetch: the old value into src (cmpxchg: r0)
            # From memory the verifier does not track (a map value): an unknown scalar.
            off_stack = claims.get(insn.dst, _NONE).type not in ("fp", "")
            self._set(0 if insn.imm == 0xF1 else insn.src,
                      off_stack and self.trusted(insn.dst))
        if atomic and insn.imm == 0x100:  # load-acquire into dst
            self._set(insn.dst, False)
            return
        span = _span(insn, regs, insn.dst)
        if span is None:
            self.stack.forget()
            return
        good = (not atomic and all(self.trusted(r) for r in reads(insn))
                and claims.get(insn.dst, _NONE).type == "fp")
        self.stack.mark(span, good)

    def _clobber(self, result: bool) -> None:
        for reg in range(1, 6):
            self._set(reg, False)
        self._set(0, result)

    def _call_subprogram(self) -> None:
        saved = None if self.regs is None else frozenset(self.regs & set(CALLEE_SAVED))
        self.frames.append(Frame(saved, {r: s for r, s in self.pending.items()
                                         if r in CALLEE_SAVED}))
        for reg in (0, *CALLEE_SAVED):
            self._set(reg, False)
        # Pending arguments stay pending: the callee's registers r1-r5 are the caller's,
        # and a read of one in the callee marks the caller's older state's register read
        # (6.x liveness chains; 7.x counts a call's r1-r5 as used).

    def _return(self) -> None:
        result = self.trusted(0) and 0 not in self.pending
        if self.frames:
            frame = self.frames.pop()
            caller = set(range(11)) if frame.regs is None else set(frame.regs)
            self.regs, self.pending = caller | {FP}, dict(frame.pending)
            if frame.regs is None:
                self.regs -= set(range(1, 6))
        else:  # back in a caller this path never saw called: only r0 and r10
            self.regs, self.pending = {FP}, {}
        self._set(0, result)

    def _narrow(self, insn: Insn, claims: dict[int, RegState]) -> None:
        operands = [insn.dst] + ([insn.src] if insn.uses_reg_src else [])
        if insn.op == 0x00 or all(self.trusted(r) for r in operands):
            return  # ja, or narrowed by trusted values only
        ids = {claims[r].fields.get("id") for r in operands if r in claims} - {None, "0"}
        linked = [r for r, s in claims.items() if s.fields.get("id") in ids]
        for reg in operands + linked:
            self._set(reg, False)
        if ids:
            self.stack.forget()  # spilled copies with the same id are narrowed too


def reads(insn: Insn) -> list[int]:
    """Registers an instruction reads that the verifier marks as read (call arguments
    and exit's r0 left out: whether they count is not known from the instruction)."""
    cls = insn.cls
    if cls in (ALU, ALU64):
        if insn.op == ALU_MOV:
            return [insn.src] if insn.uses_reg_src else []
        return [insn.dst] + ([insn.src] if insn.uses_reg_src and insn.op not in (
            ALU_NEG, ALU_END) else [])
    if cls == LDX:
        return [insn.src]
    if cls == ST:
        return [insn.dst]
    if cls == STX:
        return [insn.dst, insn.src] + ([0] if insn.mode == MODE_ATOMIC and insn.imm == 0xF1
                                       else [])
    if cls in (JMP, JMP32) and insn.is_jump and insn.op != 0x00:
        return [insn.dst] + ([insn.src] if insn.uses_reg_src else [])
    return []


def _span(insn: Insn, regs: Sequence[int | None], base: int) -> range | None:
    """The bytes a load or store touches, from the base register's runtime value."""
    value = regs[base] if base < len(regs) else None
    size = insn.mem_size
    if value is None or size is None:
        return None
    start = (value + insn.off) & ((1 << 64) - 1)
    return range(start, start + size)
