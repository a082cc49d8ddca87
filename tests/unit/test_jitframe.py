"""Frame layouts read from JIT prologues that real kernels emitted (bytes captured in guests)."""

from __future__ import annotations

import dataclasses

import pytest

from qstep.debugger.jitframe import FrameLayout, JitLayoutError, parse_prologue
from qstep.debugger.regs import bpf_regs
from qstep.target.base import X86Regs

BASE = 0xFFFFFFFFC0000648
# l4lb_ingress on 6.1: nop5; xchg ax,ax; push rbp; mov rbp,rsp; sub rsp,0x28; push rbx...
L4LB_61 = bytes.fromhex("0f1f4400006690554889e54881ec28000000534155488b7750488b97d000000031c0")
# the same on 7.3: endbr64 at the entry and after mov rbp,rsp
L4LB_73 = bytes.fromhex("f30f1efa0f1f4400000f1f00554889e5f30f1efa4881ec28000000534155488b7750")
# privstack_main (raw_tp, 96 bytes of stack) on 7.3: mov r9, PTR; add r9, gs:[this_cpu_off]
PRIV_73 = bytes.fromhex("f30f1efa0f1f4400000f1f00554889e5f30f1efa49c7c11029d083654c030c2530c0cd83"
                        "488b77004883c601498971a8")
# the same program on 6.1 (no private stacks yet): an ordinary rbp frame
PRIV_61 = bytes.fromhex("0f1f4400006690554889e54881ec58000000488b77004883c601488975a8")


def regs(**values: int) -> X86Regs:
    base = dict.fromkeys(f.name for f in dataclasses.fields(X86Regs))
    return X86Regs(**{k: values.get(k, 0x1000 + i) for i, k in enumerate(base)})


def test_rbp_frames_of_6_1_and_7_3() -> None:
    assert parse_prologue(L4LB_61, BASE) == FrameLayout(
        BASE, BASE + 7, BASE + 11, "rbp", BASE + 11, 0x28, None)
    assert parse_prologue(L4LB_73, BASE) == FrameLayout(
        BASE, BASE + 12, BASE + 16, "rbp", BASE + 16, 0x28, None)
    assert parse_prologue(PRIV_61, BASE).fp_reg == "rbp"


def test_private_stack_frame_of_7_3() -> None:
    layout = parse_prologue(PRIV_73, BASE)
    assert (layout.fp_reg, layout.fp_ready, layout.stack_size) == ("r9", BASE + 36, None)
    assert layout.private_stack == 0xFFFFFFFF83D02910  # imm32, sign-extended by the mov


@pytest.mark.parametrize("pc_off, expect", [
    (0, "rsp-8"), (7, "rsp-8"), (8, "rsp"), (11, "rbp"), (40, "rbp")])
def test_rbp_frame_pointer_before_in_and_after_the_prologue(pc_off: int, expect: str) -> None:
    layout = parse_prologue(L4LB_61, BASE)
    x86 = regs(rip=BASE + pc_off, rsp=0xFFFFC90000A0FE00, rbp=0xFFFFC90000A0FF00)
    want = {"rsp-8": x86.rsp - 8, "rsp": x86.rsp, "rbp": x86.rbp}[expect]
    assert layout.frame_pointer(x86, lambda: pytest.fail("no per-CPU offset needed")) == want
    assert bpf_regs(x86, want)[10] == want
    assert bpf_regs(x86, want)[1] == x86.rdi and bpf_regs(x86, want)[9] == x86.r15


def test_private_frame_pointer_is_r9_once_set_and_computed_before() -> None:
    layout = parse_prologue(PRIV_73, BASE)
    # 7.3 guest: r9 became 0xffff88801f43e6e0 after 'mov r9, 0xffffffff83d026e0; add r9, gs:..'
    percpu = (0xFFFF88801F43E6E0 - 0xFFFFFFFF83D026E0) % (1 << 64)
    for pc_off in (0, 12, 20, 27):
        x86 = regs(rip=BASE + pc_off, r9=0xDEAD)
        assert layout.frame_pointer(x86, lambda: percpu) == 0xFFFF88801F43E910
    x86 = regs(rip=BASE + 36, r9=0xFFFF88801F43E6E0, rbp=0x1234)
    assert layout.frame_pointer(x86, lambda: pytest.fail("not needed")) == 0xFFFF88801F43E6E0


@pytest.mark.parametrize("code", [b"\xc3", bytes.fromhex("554889ec"), b""])
def test_an_unknown_prologue_is_refused_not_guessed(code: bytes) -> None:
    with pytest.raises(JitLayoutError, match="unknown JIT prologue"):
        parse_prologue(code, BASE)
