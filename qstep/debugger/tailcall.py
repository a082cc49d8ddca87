"""Leaving a program through ``bpf_tail_call``: where qstep stops following it.

A tail call jumps into another program's JIT code and never returns: the rest of
the run (and its return value) belongs to the tail-called program, whose code
qstep does not map. Stepping and recordings end at the tail call with one message;
the run itself goes on (``continue`` finishes it).
"""

from __future__ import annotations

from qstep.bpf.uapi import Helper
from qstep.errors import UsageError
from qstep.loaded import InsnSite

LEFT = "bpf_tail_call: left for another program (not followed)"


class TailCalled(UsageError):
    """Stepping left the program through a tail call."""


def is_tail_call(site: InsnSite | None) -> bool:
    """``site`` calls bpf_tail_call."""
    return site is not None and site.insn.is_helper_call and site.insn.imm == Helper.TAIL_CALL


def tail_called(site: InsnSite) -> TailCalled:
    """The error of a step that left the program at the tail call ``site``."""
    where = f" ({site.source.short()})" if site.source else ""
    return TailCalled(f"{site.function.name} tail-called another program at insn "
                      f"{site.index}{where}; qstep does not follow into it (its code is not "
                      "mapped): 'continue' finishes the run")
