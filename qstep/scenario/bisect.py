"""Find the first kernel where a scenario's outcome changes, with as few boots as possible.

The outcome on a kernel is what the program did there, whatever the scenario expected:
the verifier's verdict, and for each case the retval, output packet and maps. Kernels
are ordered by version; the search assumes one change between the first and the last
(as `git bisect` does) and boots 2 + log2(n) kernels. A kernel that cannot be tested
is skipped, like `git bisect skip`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qstep.loaded import LoadedProgram


@dataclass
class Outcome:
    """What happened on one kernel."""

    kernel: str
    verdict: str  # "accept", "reject" or "error" (could not test)
    log: str = ""  # the verifier's (annotated) log when rejected; the error when "error"
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    program: LoadedProgram | None = None  # as loaded there, for the xlated/JIT diff
    trace: list[dict[str, Any]] = field(default_factory=list)  # the first case, traced

    @property
    def signature(self) -> str:
        """Equal on two kernels exactly when the program behaved the same."""
        return json.dumps({"verdict": self.verdict, "cases": self.cases}, sort_keys=True)


@dataclass
class BisectResult:
    """The last kernel that behaves like the first, and the first that does not."""

    kernels: list[str]
    outcomes: dict[str, Outcome]
    good: str | None = None
    bad: str | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def boots(self) -> int:
        return len(self.outcomes)


def bisect(kernels: list[str], outcome_of: Callable[[str], Outcome]) -> BisectResult:
    """Binary search over ``kernels`` (oldest first) for the first change of outcome."""
    result = BisectResult(list(kernels), {})

    def probe(kernel: str) -> Outcome | None:
        outcome = outcome_of(kernel)
        result.outcomes[kernel] = outcome
        if outcome.verdict == "error":
            result.skipped.append(kernel)
            return None
        return outcome

    candidates = list(kernels)
    first = _first_testable(candidates, probe)
    last = _first_testable(list(reversed(candidates)), probe)
    if first is None or last is None or first.signature == last.signature:
        return result
    lo, hi = candidates.index(first.kernel), candidates.index(last.kernel)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        found = probe(candidates[mid])
        if found is None:
            del candidates[mid]
            hi -= 1
            continue
        if found.signature == first.signature:
            lo = mid
        else:
            hi = mid
    result.good, result.bad = candidates[lo], candidates[hi]
    return result


def _first_testable(order: list[str], probe: Callable[[str], Outcome | None]
                    ) -> Outcome | None:
    """Probe kernels in ``order`` until one can be tested; drop the others from it."""
    while order:
        found = probe(order[0])
        if found is not None:
            return found
        order.pop(0)
    return None
