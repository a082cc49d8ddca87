"""The debugger on a program whose frame pointer is not rbp (kernels from 6.13).

privstack_main (tests/progs/privstack.bpf.c) is a raw tracepoint program with a
96-byte stack: from 6.13 the JIT puts its stack on a per-CPU private stack with
BPF r10 in x86 r9; its subprogram fold (32 bytes) keeps an rbp frame. Known by
construction: the event struct (88 bytes) is main's only stack object, so fold's
argument is main's r10 - 88 and holds args + 1 and the tag 0x51; fold returns 144.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import matrix_kernels, release_version

from qstep.bpf.elf import BpfObject
from qstep.debugger.engine import RunRequest
from qstep.debugger.jitframe import layout_of
from qstep.session import Session

pytestmark = pytest.mark.vm
CTX = struct.pack("<6Q", 1, 2, 3, 4, 5, 6)
EVENT_SIZE = 88


@pytest.mark.parametrize("kernel", matrix_kernels())
def test_frames_arguments_and_finish_on_the_private_stack(
        guests: Callable[[str], Session], bpf_obj: Callable[[str], Path], kernel: str) -> None:
    vm = guests(kernel)
    prog = vm.load(BpfObject.open(bpf_obj("tests/progs/privstack.bpf.c")), "privstack_main")
    try:
        private = layout_of(prog, prog.functions[0]).private_stack is not None
        assert private == (release_version(vm.release) >= (6, 13))
        with vm.debugger(prog, RunRequest(b"", CTX, 0)) as dbg:
            dbg.add_breakpoint("privstack_main")
            dbg.add_breakpoint("fold")
            dbg.run()
            main_r10 = dbg.regs()[10]
            assert dbg.frames()[0].r10 == main_r10
            event = dbg.cont()
            assert event.site is not None and event.site.function.name == "fold"
            frames = dbg.frames()
            assert [f.function.name for f in frames] == ["fold", "privstack_main"]
            assert frames[1].r10 == main_r10
            ev = dbg.regs()[1]
            assert ev == main_r10 - EVENT_SIZE
            assert struct.unpack("<7Q", dbg.read_memory(ev, 56)) == (2, 3, 4, 5, 6, 7, 0x51)
            assert dbg.regs()[10] == frames[0].r10 != main_r10
            event = dbg.finish()
            assert event.site is not None and event.site.function.name == "privstack_main"
            assert (dbg.regs()[0], dbg.regs()[10]) == (144, main_r10)
            assert dbg.cont().retval == 144
    finally:
        vm.unload(prog)
