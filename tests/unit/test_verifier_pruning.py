"""The soundness check past pruning points, on a real traced run (recorded on 6.1 by
scripts/capture_verifier_logs.py: the example with an IPv4 packet to an IPv6 real)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qstep.bpf.insn import decode
from qstep.verifier.check import Regs, Shown, check_run
from qstep.verifier.log import parse_known, parse_log
from qstep.verifier.states import parse_reg_state
from qstep.verifier.trust import Trust

RUN = (Path(__file__).resolve().parent.parent / "fixtures" / "verifier_logs"
       / "run-l4lb-ipv4_udp_to_v6real-6.1.json")

Step = tuple[int, Regs, Shown]


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RUN.read_text())
    data["parsed"] = parse_log(data["log"])
    data["program"] = {i.index: i for i in decode(bytes.fromhex(data["insns"]))}
    data["run"] = [(insn, tuple(regs), tuple(shown)) for insn, regs, shown in data["steps"]]
    return data


def widened(steps: list[Step], step: int, reg: int, value: int) -> list[Step]:
    out = list(steps)
    insn, regs, shown = out[step - 1]
    out[step - 1] = (insn, (*regs[:reg], value, *regs[reg + 1:]), shown)
    return out


def test_the_whole_run_is_followed_past_its_pruning_points(run: dict[str, Any]) -> None:
    first = check_run(run["parsed"], run["run"])
    assert (first.steps, first.stopped) == (
        49, "at step 50 (insn 73) the verifier pruned this path: an earlier state there "
        "covers it")
    report = check_run(run["parsed"], run["run"], run["program"])
    assert (report.steps, len(run["run"]), report.stopped, report.findings) == (
        149, 149, "", [])
    assert (report.prunes, report.registers, report.pointers, report.unchecked) == (
        2, 216, 492, 441)


def test_a_value_after_pruning_is_reported_at_its_step(run: dict[str, Any]) -> None:
    # Every register value of the 50 steps from the first pruning point on, pushed 2**40
    # over: reported at exactly its step and register when the check trusts it, else not.
    steps: list[Step] = run["run"]
    judged = []
    for step in range(50, 100):
        insn, regs, _shown = steps[step - 1]
        for reg, value in enumerate(regs[:10]):
            if value is None:
                continue
            found = check_run(run["parsed"],
                              widened(steps, step, reg, (value + (1 << 40)) % (1 << 64)),
                              run["program"]).findings
            assert [(f.step, f.insn, f.reg) for f in found] in ([], [(step, insn, reg)])
            judged += [(step, reg, f.pruned_at) for f in found]
    assert len(judged) == 44 and {at for _s, _r, at in judged} == {73}
    # Step 50 is the pruning point, insn 73, a bpf-to-bpf call: its arguments are not
    # judged (whether the callee's reads count is not known), the callee's first values
    # computed from trusted ones are (r7 from step 55).
    assert min(judged) == (55, 7, 73)


def test_only_precise_scalars_and_pointers_are_compared_at_a_pruning_point() -> None:
    older = {r: parse_reg_state(t) for r, t in
             [(1, "ctx(off=0,imm=0)"), (2, "P5"), (3, "scalar(umax=255)"), (10, "fp0")]}
    trust = Trust.after_pruning(older)
    assert sorted(trust.pending) == [1, 2] and trust.regs == {10}
    assert not trust.trusted(3) and not trust.trusted(2)


ITER_LOG = """\
0: (bf) r1 = r10                      ; R1_w=fp0 R10=fp0
1: (07) r1 += -8                      ; R1_w=fp-8
2: (85) call bpf_iter_num_new#70000   ; R0_w=scalar() refs=1
3: (85) call bpf_iter_num_next#70001  ; R0_w=0 refs=1
4: (15) if r0 == 0x0 goto pc+1
6: R0_w=0 refs=1
6: (95) exit
from 3 to 4: R0_w=rdonly_mem(id=2,ref_obj_id=1,sz=4) R10=fp0 refs=1
4: R0_w=rdonly_mem(id=2,ref_obj_id=1,sz=4) R10=fp0 refs=1
4: (15) if r0 == 0x0 goto pc+1        ; R0_w=rdonly_mem(id=2,ref_obj_id=1,sz=4) refs=1
5: (b7) r0 = 7                        ; R0_w=7
6: (95) exit
processed 9 insns
"""


def test_an_iterator_next_call_branches_like_a_jump() -> None:
    """After bpf_iter_num_next the verifier goes on with r0 = 0 (drained) and queues the
    active state at the same instruction: a run on the active one is not a violation."""
    log = parse_log(ITER_LOG)
    assert [(p.parent, p.branch_index, [v.insn for v in p.visits]) for p in log.paths] == [
        (None, -1, [0, 1, 2, 3, 4, 6]), (0, 3, [4, 5, 6])]
    fp, item = 0xFFFFC90000010000, 0xFFFFC9000000FFF8
    regs = [(0, None), (1, None), (2, None), (3, None), (4, item), (5, item), (6, 7)]
    run = [(insn, (r0, *(None,) * 9, fp)) for insn, r0 in regs]
    report = check_run(log, run)
    assert (report.findings, report.stopped, report.steps) == ([], "", 7)
    drained = check_run(log, [(insn, (0 if insn >= 4 else None, *(None,) * 9, fp))
                              for insn in (0, 1, 2, 3, 4, 6)])
    assert (drained.findings, drained.steps) == ([], 6)


GLOBAL_FIRST_LOG = """\
func#0 @0
func#1 @3
Validating g() func#1...
3: R1=mem_or_null(id=2,off=0,imm=0) R10=fp0
3: (b7) r0 = 0                        ; R0_w=0
4: (95) exit
Func#1 is safe for any args that match its prototype
0: R1=ctx(off=0,imm=0) R10=fp0
0: (85) call pc+2
Func#1 is global and valid. Skipping.
1: (b7) r0 = 2                        ; R0_w=2
2: (95) exit
processed 5 insns
"""


def test_global_functions_checked_first_are_paths_of_their_own() -> None:
    """6.1 verifies global functions before the main program (6.8+ after it): each is a
    root path, and a run is followed from the one that starts at insn 0."""
    log = parse_known(GLOBAL_FIRST_LOG)
    assert [(p.parent, [v.insn for v in p.visits]) for p in log.paths] == [
        (None, [3, 4]), (None, [0, 1, 2])]
    fp = 0xFFFFC90000010000
    report = check_run(log, [(0, (None,) * 10 + (fp,)), (1, (None,) * 10 + (fp,)),
                             (2, (2,) + (None,) * 9 + (fp,))])
    assert (report.findings, report.stopped, report.steps, report.paths) == ([], "", 3, [1])
