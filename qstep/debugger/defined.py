"""Which BPF registers hold a defined value, instruction by instruction.

At a program's entry only r1 (the context) and r10 (the frame pointer) are
defined; the other x86 registers hold whatever the kernel left there, which is
not BPF state and would make traces differ between identical runs. A register
becomes defined when an instruction writes it; a helper call defines r0 and
leaves r1-r5 undefined; a bpf-to-bpf call starts a frame where r1-r5 (the
arguments) and r10 are defined, and its exit restores the caller's r6-r10. A
helper that calls back into the program (bpf_loop, for_each_map_elem...) starts
a callback frame the same way; the callback's exit returns to the helper, which
calls it again or returns to the caller as a helper call does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qstep.bpf import insn as bi

ENTRY = frozenset({1, 10})
ARGS = frozenset({1, 2, 3, 4, 5})


def written(ins: bi.Insn) -> frozenset[int]:
    """Registers an instruction (other than a call or exit) defines."""
    if ins.cls in (bi.ALU, bi.ALU64, bi.LDX) or ins.is_ldimm64:
        return frozenset({ins.dst})
    if ins.cls == bi.STX and ins.mode == bi.MODE_ATOMIC:
        if ins.imm == 0xF1:  # cmpxchg: r0 gets the old value
            return frozenset({0})
        if ins.imm & 0x01 or ins.imm == 0xE1:  # BPF_FETCH, xchg
            return frozenset({ins.src})
    if ins.cls == bi.LD:  # legacy packet loads define r0
        return frozenset({0})
    return frozenset()


@dataclass
class DefinedRegs:
    """Tracks defined registers across a run, with a frame per bpf-to-bpf call."""

    current: frozenset[int] = ENTRY
    # Each caller's registers, and whether the frame is a callback (entered by a helper).
    callers: list[tuple[frozenset[int], bool]] = field(default_factory=list)

    def after(self, ins: bi.Insn, callback_args: frozenset[int] | None = None
              ) -> frozenset[int]:
        """Update for one executed instruction; return the registers defined after it.

        ``callback_args``: the next instruction is a function's entry that ``ins``
        (not a bpf-to-bpf call) leads to, i.e. a helper calls back into the program
        with these argument registers.
        """
        in_callback = bool(self.callers) and self.callers[-1][1]
        if callback_args is not None and ins.is_exit and in_callback:
            self.current = callback_args | {10}  # the helper calls the callback again
        elif callback_args is not None:
            self.callers.append(((self.current - ARGS) | {0}, True))
            self.current = callback_args | {10}
        elif ins.is_pseudo_call:
            self.callers.append((self.current, False))
            self.current = (self.current & ARGS) | {10}
        elif ins.is_call:
            self.current = (self.current - ARGS) | {0}
        elif ins.is_exit:
            caller, callback = self.callers.pop() if self.callers else (frozenset(), False)
            self.current = caller if callback else (caller - ARGS) | {0}
        else:
            self.current = self.current | written(ins)
        return self.current
