"""What an older state still vouches for after a pruning point (qstep.verifier.trust)."""

from __future__ import annotations

from qstep.bpf.insn import Insn
from qstep.verifier.check import check_run
from qstep.verifier.log import parse_known
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


GLOBAL_LOG = """\
func#0 @0
func#1 @3
0: R1=ctx() R10=fp0
0: (85) call pc+2
Func#1 is global and valid. Skipping.
1: (b7) r0 = 2                        ; R0_w=2
2: (95) exit
Validating g() func#1...
3: R1=mem_or_null(id=2,sz=16) R10=fp0
3: (b7) r0 = 0                        ; R0_w=0
4: (95) exit
Func#1 is safe for any args that match its prototype
processed 5 insns
"""
PROGRAM = {0: Insn(0, 0x85, 0, 1, 0, 2), 1: Insn(1, 0xB7, 0, 0, 0, 2), 2: Insn(2, 0x95, 0, 0, 0, 0),
           3: Insn(3, 0xB7, 0, 0, 0, 0), 4: Insn(4, 0x95, 0, 0, 0, 0)}


def test_a_global_function_is_followed_into_and_back() -> None:
    """The verifier checks a global function on its own (its prototype's arguments) and
    skips the call: the run is followed into that path and back after the call."""
    log = parse_known(GLOBAL_LOG)
    fp, callee_fp, buf = 0xFFFFC90000010000, 0xFFFFC9000000FF00, 0xFFFFC9000000FFF0
    run = [(0, (None, 1) + (None,) * 8 + (fp,), (None, "ctx") + (None,) * 8 + ("fp",)),
           (3, (None, buf) + (None,) * 8 + (callee_fp,), (None, "fp-0x10") + (None,) * 9),
           (4, (0, buf) + (None,) * 8 + (callee_fp,), (0,) + (None,) * 10),
           (1, (0,) + (None,) * 9 + (fp,), (0,) + (None,) * 10),
           (2, (2,) + (None,) * 9 + (fp,), (2,) + (None,) * 10)]
    report = check_run(log, run, PROGRAM)
    # The stack pointer passed as mem_or_null is not judged: memory of any kind.
    assert (report.findings, report.stopped, report.steps, report.paths) == ([], "", 5, [0, 1, 0])
    # A wrong value inside it is reported there; back in the caller, too.
    bad = run[:2] + [(4, (5, buf) + (None,) * 8 + (callee_fp,), run[2][2])] + run[3:]
    assert [(f.step, f.insn, f.reg) for f in check_run(log, bad, PROGRAM).findings] == [
        (3, 4, 0)]
    bad = run[:4] + [(2, (3,) + (None,) * 9 + (fp,), run[4][2])]
    assert [(f.step, f.insn, f.reg) for f in check_run(log, bad, PROGRAM).findings] == [
        (5, 2, 0)]


DECIDED_LOG = """\
0: R1=ctx() R10=fp0
0: (b7) r2 = 0                        ; R2_w=0
1: (b7) r6 = 2                        ; R6_w=2
2: (6d) if r6 s> r2 goto pc+2
5: (b7) r0 = 2                        ; R0_w=2
6: (95) exit
processed 5 insns
"""


def test_a_jump_the_verifier_removed_is_stepped_over() -> None:
    """6 s> 0 is known: the verifier hard-wires the jump and removes it with the dead
    code, so the run goes from insn 1 straight to insn 5."""
    log = parse_known(DECIDED_LOG)
    fp = 0xFFFFC90000010000
    run = [(0, (None,) * 10 + (fp,)), (1, (None, 1, 0) + (None,) * 7 + (fp,)),
           (5, (None, 1, 0, None, None, None, 2) + (None,) * 3 + (fp,)),
           (6, (2, 1, 0, None, None, None, 2) + (None,) * 3 + (fp,))]
    report = check_run(log, run)
    assert (report.findings, report.stopped, report.steps) == ([], "", 4)
    wrong = run[:3] + [(6, (3,) + run[3][1][1:])]
    assert [(f.step, f.insn, f.reg) for f in check_run(log, wrong).findings] == [(4, 6, 0)]
