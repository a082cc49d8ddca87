from qstep.bpf.insn import Insn
from qstep.debugger.defined import DefinedRegs, written


def ins(code: int, dst: int = 0, src: int = 0, imm: int = 0, off: int = 0) -> Insn:
    return Insn(0, code, dst, src, off, imm)


MOV64_IMM, LDX_DW, CALL, EXIT, STX_ATOMIC_DW = 0xB7, 0x79, 0x85, 0x95, 0xDB


def test_entry_defines_ctx_and_frame_pointer_only() -> None:
    assert DefinedRegs().current == {1, 10}


def test_writes_define_their_destination() -> None:
    assert written(ins(MOV64_IMM, dst=3)) == {3}
    assert written(ins(LDX_DW, dst=7, src=1)) == {7}
    assert written(ins(STX_ATOMIC_DW, dst=1, src=2, imm=0x01)) == {2}  # add | fetch
    assert written(ins(STX_ATOMIC_DW, dst=1, src=2, imm=0x00)) == set()  # plain add
    assert written(ins(STX_ATOMIC_DW, dst=1, src=2, imm=0xF1)) == {0}  # cmpxchg


def test_helper_call_defines_r0_and_clobbers_arguments() -> None:
    regs = DefinedRegs()
    regs.after(ins(MOV64_IMM, dst=6))
    regs.after(ins(MOV64_IMM, dst=2))
    assert regs.after(ins(CALL, imm=1)) == {0, 6, 10}


def test_bpf_call_and_exit_restore_the_callers_registers() -> None:
    regs = DefinedRegs()
    regs.after(ins(MOV64_IMM, dst=6))
    regs.after(ins(MOV64_IMM, dst=2))
    assert regs.after(ins(CALL, src=1, imm=5)) == {1, 2, 10}
    regs.after(ins(MOV64_IMM, dst=7))
    assert regs.after(ins(EXIT)) == {0, 6, 10}


def test_helper_callback_frames_hide_the_kernels_callee_saved_registers() -> None:
    regs = DefinedRegs()
    regs.after(ins(MOV64_IMM, dst=6))
    regs.after(ins(MOV64_IMM, dst=3))
    # bpf_loop calls the callback: a new frame with the arguments and r10 only
    args = frozenset({1, 2})
    assert regs.after(ins(CALL, imm=181), callback_args=args) == {1, 2, 10}
    regs.after(ins(MOV64_IMM, dst=7))
    assert regs.after(ins(EXIT), callback_args=args) == {1, 2, 10}  # called again
    assert regs.after(ins(EXIT)) == {0, 6, 10}  # back after the helper call: r0 defined
    assert regs.callers == []
