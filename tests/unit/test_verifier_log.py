"""Verifier logs (level 2) of 6.1 and 6.12 as per-instruction states and explored paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qstep.errors import UsageError
from qstep.verifier.check import check_run, union_at
from qstep.verifier.explain import failing_path
from qstep.verifier.log import parse_known, parse_log
from qstep.verifier.states import parse_reg_state

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "verifier_logs"


@pytest.mark.parametrize("name", sorted(p.name for p in LOGS.glob("*.log")))
def test_a_state_for_every_processed_instruction(name: str) -> None:
    log = parse_log((LOGS / name).read_text())
    assert log.processed is not None and len(log.visits) == log.processed
    assert all(v.regs for v in log.visits if not v.pruned)  # none without a state
    assert all(p.parent is not None for p in log.paths[1:])  # every branch has its parent


def test_states_of_6_12_and_6_1_read_the_same_facts() -> None:
    new = parse_log((LOGS / "l4lb-6.12.log").read_text())
    # 24: (2d) if r7 > r5 goto pc+49, after r5 &= 15 and r7 = 5
    (r5,) = union_at(new, 24, 5)
    assert (r5.bound("umin"), r5.bound("umax"), r5.tnum) == (None, 15, (0, 0xF))
    assert union_at(new, 24, 7)[0].bound("umax") == 5
    old = parse_log((LOGS / "l4lb-6.1.log").read_text())
    assert [s.type for s in union_at(old, 24, 1)] == ["ctx"]


def test_bounds_in_either_spelling() -> None:
    old = parse_reg_state("scalar(umax=17179869180,var_off=(0x0; 0x3fffffffc),"
                          "s32_max=2147483644,u32_max=-4)")
    assert old.bound("umax32") == 0xFFFFFFFC and old.bound("smax32") == 2147483644
    assert old.contains(4) and not old.contains(5) and not old.contains(17179869184)
    new = parse_reg_state("scalar(smin=umin=smin32=umin32=5,smax=umax=smax32=umax32=15,"
                          "var_off=(0x0; 0xf))")
    assert [v for v in range(20) if new.contains(v)] == list(range(5, 16))
    assert parse_reg_state("P7").precise and parse_reg_state("P7").contains(7)
    assert not parse_reg_state("-1").contains(1)
    assert parse_reg_state("-1").contains((1 << 64) - 1)
    assert parse_reg_state("fp-40").type == "fp"


def test_a_run_off_the_logged_paths_is_not_judged() -> None:
    log = parse_log((LOGS / "alu_v4-6.12.log").read_text())
    report = check_run(log, [(0, (None,) * 11), (7, (None,) * 11)])
    assert report.steps == 1 and "left the paths the verifier logged" in report.stopped


def test_a_rejection_as_a_source_walk() -> None:
    lines = {0: 20, 1: 23, 2: 22, 3: 25, 4: 25, 5: 27, 6: 29}
    walk = failing_path((LOGS / "reject-6.1.rejected").read_text(),
                        lambda insn: f"reject.bpf.c:{lines[insn]}")
    assert walk == [
        "  reject.bpf.c:20", "  reject.bpf.c:23", "  reject.bpf.c:22", "  reject.bpf.c:25",
        "  reject.bpf.c:27",
        "      insn 5: if r3 > r2 goto pc+1: fell through (r3=pkt(off=14,r=0,imm=0), "
        "r2=pkt_end(off=0,imm=0))",
        "  reject.bpf.c:29",
        "      insn 6: (71) r0 = *(u8 *)(r1 +23)  <- rejected here"]


def test_stack_pointers_of_another_frame() -> None:
    state = parse_reg_state("fp[0]-40")  # 6.12+: the caller's stack seen from a callee
    assert (state.type, state.fields) == ("fp", {"off": "-40", "frame": "0"})


def test_a_7_2_log_reads_the_same_facts() -> None:
    log = parse_log((LOGS / "l4lb-7.2.log").read_text())
    assert (log.processed, len(log.visits)) == (328, 328)
    # 24: if r7 > r5 goto pc+49 (l4lb.bpf.c:205): r5 = ihl & 15, r7 = 5
    (r5,) = union_at(log, 24, 5)
    assert (r5.bound("umin"), r5.bound("umax"), r5.tnum) == (None, 15, (0, 0xF))
    assert [s.text for s in union_at(log, 24, 7)] == ["5"]
    assert [s.type for s in union_at(log, 1, 1)] == ["ctx"]


def test_a_7_2_rejection_as_a_source_walk() -> None:
    # 7.x prints its analysis passes (subprograms, stack use, live registers) first.
    lines = {0: 20, 1: 23, 2: 22, 3: 25, 4: 25, 5: 27, 6: 29}
    walk = failing_path((LOGS / "reject-7.2.rejected").read_text(),
                        lambda insn: f"reject.bpf.c:{lines[insn]}")
    assert walk[-3:] == [
        "      insn 5: if r3 > r2 goto pc+1: fell through (r3=pkt(r=0,imm=14), r2=pkt_end())",
        "  reject.bpf.c:29",
        "      insn 6: (71) r0 = *(u8 *)(r1 +23)  <- rejected here"]


def test_a_log_in_an_unknown_format_is_refused_clearly() -> None:
    text = (LOGS / "l4lb-6.12.log").read_text()
    assert len(parse_known(text).visits) == 328
    with pytest.raises(UsageError) as err:
        parse_known(re.sub(r"(?m)^(\d+):", r"insn \1:", text))  # no line reads
    assert str(err.value) == ("the verifier's log has no instruction states this qstep can "
                              "read (an unknown log format?); its first line: "
                              "'func#0 @0'")
    # Some lines of a new spelling: the states would be wrong, so none are shown.
    with pytest.raises(UsageError) as err:
        parse_known(text.replace("\n24: (2d)", "\n24 (2d)"))
    assert str(err.value) == ("the verifier's log says it processed 328 instructions, but "
                              "327 read as such: its format is not one this qstep knows, so "
                              "its states are not shown")


def test_a_written_register_7x_leaves_out_has_no_state() -> None:
    """7.x prints only live registers: ``r2 = *(u16 *)(r1 +0)`` with nothing after the
    ';' wrote r2 all the same, so the older r2=6 is no longer what the verifier knew
    (a run with r2 = 0 there was reported as a violation)."""
    log = parse_known("""\
0: R1=ctx() R10=fp0
0: (b7) r2 = 6                        ; R2=6
1: (18) r1 = 0xffffc90000702000      ; R1=map_value(map=qstep.rodata,ks=4,vs=43)
3: (69) r2 = *(u16 *)(r1 +0)         ;
4: (05) goto pc+0
5: (95) exit
processed 5 insns
""")
    assert [sorted(v.regs) for v in log.visits] == [[1, 10], [1, 2, 10], [1, 2, 10], [1, 10],
                                                    [1, 10]]
