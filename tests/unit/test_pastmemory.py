"""Memory before a recorded step, across helper calls (qstep.recorder.pastmemory).

A hand-made recording of four steps in a program whose stack ends at TOP: step 0
stores 0x11 at a stack byte and 0x22 at a map value byte, step 1 calls a helper,
step 2 loads both bytes, step 3 is the exit. What the helper may write decides what
is known before step 2.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from qstep.bpf.uapi import Helper
from qstep.errors import UsageError
from qstep.recorder.log import REG_NAMES, MemAccess
from qstep.recorder.pastmemory import PastMemory
from qstep.recorder.recording import RecordedStep, Recording

ENTRY = 0x1000
RSP = 0x8000  # at the entry: the return address's slot
STACK, MAP = RSP - 0x10, 0x50000  # a stack byte of the program, a map value byte


def _site(n: int, call: int | None = None) -> Any:
    insn = SimpleNamespace(is_helper_call=call is not None, imm=call or 0)
    return SimpleNamespace(index=n, xlated_index=n, jit_start=ENTRY + 8 * n, insn=insn)


def _recording(helper: int, args: dict[str, int]) -> Recording:
    regs = dict.fromkeys(REG_NAMES, 0) | {"rsp": RSP}
    steps = [
        RecordedStep(_site(0), regs, [MemAccess(ENTRY, STACK, 1, True, 0x11, 0x00),
                                      MemAccess(ENTRY, MAP, 1, True, 0x22, 0x01)]),
        RecordedStep(_site(1, helper), regs | {"rsp": RSP - 0x20} | args),
        RecordedStep(_site(2), regs, [MemAccess(ENTRY + 16, STACK, 1, False, 0x11),
                                      MemAccess(ENTRY + 16, MAP, 1, False, 0x22)]),
        RecordedStep(_site(3), regs),
    ]
    xlated = [SimpleNamespace(index=n, is_helper_call=n == 1, is_kfunc_call=False)
              for n in range(4)]
    prog = SimpleNamespace(xlated=xlated, functions=[SimpleNamespace(addr=ENTRY)])
    return Recording(cast(Any, prog), steps, 0)


def _known(mem: PastMemory, addr: int, pos: int) -> int | None:
    return mem.byte(addr, pos)


def test_a_helper_that_writes_nothing_changes_nothing() -> None:
    mem = PastMemory(_recording(Helper.MAP_LOOKUP_ELEM, {"rsi": STACK}))
    assert [_known(mem, STACK, p) for p in range(4)] == [0x00, 0x11, 0x11, 0x11]
    assert [_known(mem, MAP, p) for p in range(4)] == [0x01, 0x22, 0x22, 0x22]


def test_another_helper_may_write_any_memory_but_the_stack_it_was_not_given() -> None:
    mem = PastMemory(_recording(Helper.MAP_UPDATE_ELEM, {"rsi": STACK + 1}))
    assert _known(mem, STACK, 2) == 0x11  # below every stack pointer argument
    assert _known(mem, MAP, 1) == 0x22 and _known(mem, MAP, 2) == 0x22  # the load after it
    assert mem.may_change(MAP, 1, 2) and not mem.may_change(STACK, 1, 2)


def test_a_stack_pointer_argument_below_a_byte_hides_it() -> None:
    mem = PastMemory(_recording(Helper.PROBE_READ_KERNEL, {"rdi": STACK - 4}))
    assert mem.may_change(STACK, 1, 2)
    assert _known(mem, STACK, 1) == 0x11  # before the call: the store of step 0
    assert _known(mem, STACK, 2) == 0x11  # after it: the load of step 2 saw it
    mem.rec.steps[2].accesses.clear()
    mem = PastMemory(mem.rec)
    assert _known(mem, STACK, 2) is None and _known(mem, MAP, 2) is None


def test_a_byte_never_seen_is_read_live_only_when_nothing_can_have_changed_it() -> None:
    mem = PastMemory(_recording(Helper.PROBE_READ_KERNEL, {"rdi": STACK - 4}))
    live = bytes(range(0x40, 0x48))
    assert mem.read(STACK - 8, 2, 2, 3, lambda a, n: live[:n]) == b"\x40\x41"
    with pytest.raises(UsageError, match=r"the byte at 0x7fee is not known"):
        mem.read(STACK - 2, 1, 0, 3, lambda a, n: live[:n])  # the helper at step 1
