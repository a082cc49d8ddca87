"""Kernel bisection: the boundary, the number of boots, skipped kernels."""

from __future__ import annotations

import pytest

from qstep.scenario.bisect import Outcome, bisect

KERNELS = [f"k{i}" for i in range(16)]


def outcomes(change_at: int, broken: frozenset[str] = frozenset()):  # type: ignore[no-untyped-def]
    def outcome_of(kernel: str) -> Outcome:
        if kernel in broken:
            return Outcome(kernel, "error", "cannot boot")
        index = int(kernel[1:])
        return Outcome(kernel, "accept" if index >= change_at else "reject")
    return outcome_of


@pytest.mark.parametrize("change_at", [1, 2, 7, 8, 15])
def test_finds_the_first_changed_kernel_in_log_boots(change_at: int) -> None:
    result = bisect(KERNELS, outcomes(change_at))
    assert (result.good, result.bad) == (f"k{change_at - 1}", f"k{change_at}")
    assert result.boots <= 2 + 4  # 16 kernels: 2 ends + log2(16) probes


def test_no_change_boots_only_the_ends() -> None:
    result = bisect(KERNELS, outcomes(99))
    assert (result.good, result.bad, result.boots) == (None, None, 2)


def test_untestable_kernels_are_skipped() -> None:
    broken = frozenset({"k0", "k7", "k8"})
    result = bisect(KERNELS, outcomes(9, broken))
    # k7 and k8 cannot be tested: the change lies somewhere after k6, up to k9.
    assert (result.good, result.bad) == ("k6", "k9")
    assert set(result.skipped) == broken


def test_trace_divergence_names_the_first_differing_step() -> None:
    from qstep.commands.bisect import trace_divergence
    same = {"step": 1, "insn": 0, "function": "f", "file": "a.c", "line": 3,
            "regs": {"r1": "ctx", "r10": "fp"}}
    old = Outcome("6.1", "accept", trace=[same, {**same, "step": 2, "insn": 1,
                                                 "regs": {"r0": 5}}])
    new = Outcome("6.12", "accept", trace=[same, {**same, "step": 2, "insn": 1,
                                                  "regs": {"r0": 6}}])
    assert trace_divergence(old, new) == [
        "trace of the first case: the runs first differ at step 2, insn 1 (f, a.c:3)",
        "  6.1: insn 1: r0=0x5", "  6.12: insn 1: r0=0x6"]
    assert trace_divergence(old, old) == ["trace of the first case: identical (2 instructions)"]
