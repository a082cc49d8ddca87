"""What an older state still vouches for after a pruning point (qstep.verifier.trust)."""

from __future__ import annotations

from qstep.bpf.insn import Insn
from qstep.verifier.states import parse_reg_state
from qstep.verifier.trust import Trust


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Insn:
    return Insn(0, code, dst, src, off, imm)


FP0 = 0x1000  # the runtime frame pointer in these examples
REGS: list[int | None] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, FP0]
CLAIMS = {r: parse_reg_state(t) for r, t in
          [(1, "scalar(id=3)"), (2, "P7"), (3, "scalar(id=3)"), (4, "map_value(ks=4,vs=8)"),
           (10, "fp0")]}


def test_trust_follows_what_a_value_is_computed_from() -> None:
    trust = Trust.after_pruning(CLAIMS)  # r2 (precise) and r4 (a pointer) pending
    assert trust.read_pending(insn(0x0F, 5, 2)) == [(2, CLAIMS[2])]  # r5 += r2: reads r2
    trust.apply(insn(0x0F, 5, 2), CLAIMS, REGS)
    assert not trust.trusted(5)  # r5 itself was not compared
    trust.apply(insn(0xB7, 5, imm=9), CLAIMS, REGS)  # r5 = 9
    trust.apply(insn(0xBF, 6, 5), CLAIMS, REGS)  # r6 = r5
    assert trust.trusted(5) and trust.trusted(6) and trust.trusted(2)
    # A store of a trusted value to the stack, loaded back: trusted; other bytes: not.
    trust.apply(insn(0x7B, 10, 6, off=-8), CLAIMS, REGS)  # *(u64 *)(r10 -8) = r6
    trust.apply(insn(0x79, 7, 10, off=-8), CLAIMS, REGS)  # r7 = *(u64 *)(r10 -8)
    trust.apply(insn(0x79, 8, 10, off=-16), CLAIMS, REGS)  # r8 = *(u64 *)(r10 -16)
    assert trust.trusted(7) and not trust.trusted(8)
    # Through a map value (r4, pending until read): an unknown scalar, so trusted.
    trust.read_pending(insn(0x61, 9, 4))
    trust.apply(insn(0x61, 9, 4), CLAIMS, REGS)  # r9 = *(u32 *)(r4 +0)
    assert trust.trusted(9) and trust.trusted(4)


def test_a_jump_on_an_untrusted_value_untrusts_what_it_narrows() -> None:
    trust = Trust.after_pruning(CLAIMS)
    trust.apply(insn(0xB7, 3, imm=1), CLAIMS, REGS)  # r3 = 1: trusted, but id=3 links r1
    trust.read_pending(insn(0x2D, 2, 1))
    trust.apply(insn(0x2D, 2, 1), CLAIMS, REGS)  # if r2 > r1: r1 is not trusted
    assert not trust.trusted(2) and not trust.trusted(1) and not trust.trusted(3)
