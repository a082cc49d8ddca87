"""The lockstep oracle over recordings: every program of tests/progs, on 6.1 and 6.12.

Each program is recorded once (the recorder plugin, no stepping) and the reference
interpreter checks every recorded instruction: the registers at the next boundary,
the next instruction and every store. What the oracle cannot check is named exactly
(``UNSUPPORTED``); a fault injected into a recording is reported at its step.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import load_program

from qstep.bpf.elf import BpfObject
from qstep.bpf.uapi import ProgType
from qstep.loaded import LoadedProgram
from qstep.loadopts import LoadOptions
from qstep.oracle.recorded import lockstep_recording, percpu_offset_reader
from qstep.paths import REPO_ROOT
from qstep.recorder.recording import Recording
from qstep.recorder.run import record_run
from qstep.session import Session
from qstep.userinput import read_packet

pytestmark = pytest.mark.vm

PACKETS = REPO_ROOT / "examples" / "l4lb" / "packets"
IPV4 = read_packet(str(PACKETS / "ipv4_to_v4real.hex"))
IPV6 = read_packet(str(PACKETS / "ipv6_to_v6real.hex"))
PROGS = json.loads((REPO_ROOT / "tests/progs/expected.json").read_text())
PRIVSTACK_CTX = bytes.fromhex(PROGS["privstack"]["cases"][0]["ctx_hex"])

# (source, program, packet, context, prog type option, fill the example's maps)
PROGRAMS = [
    ("examples/l4lb/l4lb.bpf.c", "l4lb_ingress", IPV6, b"", None, True),
    ("tests/progs/alu.bpf.c", "alu_main", IPV4, b"", None, False),
    ("tests/progs/alu_v4.bpf.c", "alu_v4_main", IPV4, b"", None, False),
    ("tests/progs/big.bpf.c", "big_main", IPV4, b"", None, False),
    ("tests/progs/calls.bpf.c", "calls_main", IPV4, b"", None, False),
    ("tests/progs/config.bpf.c", "config_main", IPV4, b"", None, False),
    ("tests/progs/conntrack.bpf.c", "ct_main", IPV4, b"", None, False),
    ("tests/progs/core.bpf.c", "core_skb", IPV4, b"", None, False),
    ("tests/progs/core.bpf.c", "core_task", b"", PRIVSTACK_CTX, None, False),
    ("tests/progs/cpu_id.bpf.c", "cpu_id_main", IPV4, b"", None, False),
    ("tests/progs/deadcode.bpf.c", "dead_main", IPV4, b"", None, False),
    ("tests/progs/deadsub.bpf.c", "lb_main", IPV6, b"", None, False),
    ("tests/progs/deadsub.bpf.c", "lb_ipv4_only_entry_point", IPV4, b"", None, False),
    ("tests/progs/dupline.bpf.c", "dup_classify", IPV4, b"", None, False),
    ("tests/progs/entryval.bpf.c", "entryval", IPV4, b"", None, False),
    ("tests/progs/flowsum.bpf.c", "flowsum_main", IPV4, b"", None, False),
    ("tests/progs/iters.bpf.c", "iter_sum", IPV4, b"", None, False),
    ("tests/progs/legacy.bpf.c", "cls_ssh_guard", IPV4, b"", ProgType.SCHED_CLS, False),
    ("tests/progs/legacy.bpf.c", "xdp_ttl_guard", IPV4, b"", ProgType.XDP, False),
    ("tests/progs/maps.bpf.c", "maps_main", IPV4, b"", None, False),
    ("tests/progs/maptypes.bpf.c", "maptypes_main", IPV4, b"", None, False),
    ("tests/progs/merged.bpf.c", "merged", IPV4, b"", None, False),
    ("tests/progs/merged.bpf.c", "tail", IPV4, b"", None, False),
    ("tests/progs/pcpuhash.bpf.c", "pcpuhash_main", IPV4, b"", None, False),
    ("tests/progs/pktwalk.bpf.c", "xdp_walk", IPV4, b"", None, False),
    ("tests/progs/pktwalk.bpf.c", "tc_tag", IPV4, b"", None, False),
    ("tests/progs/privstack.bpf.c", "privstack_main", b"", PRIVSTACK_CTX, None, False),
    ("tests/progs/progtypes.bpf.c", "sock_keep", IPV4, b"", None, False),
    ("tests/progs/progtypes.bpf.c", "dissect", IPV4, b"", None, False),
    ("tests/progs/progtypes.bpf.c", "sys_sum", IPV4, b"", None, False),
    ("tests/progs/scratch.bpf.c", "scratch_main", IPV4, b"", None, False),
    ("tests/progs/shapes.bpf.c", "shapes_main", IPV4, b"", None, False),
    ("tests/progs/socket.bpf.c", "socket_len", IPV4, b"", None, False),
    ("tests/progs/streams.bpf.c", "stream_main", IPV4, b"", None, False),
    ("tests/progs/tailcall.bpf.c", "tail_main", IPV4, b"", None, False),
    ("tests/progs/tailcall.bpf.c", "tail_v4", IPV4, b"", None, False),
    ("tests/progs/tunnel.bpf.c", "tunnel_main", IPV6, b"", None, False),
    ("tests/progs/vars.bpf.c", "vars_main", IPV4, b"", None, False),
]
# Programs the oracle cannot check to the end, and why. Not here: reject.bpf.c does not
# load; on_test1 (progtypes.bpf.c, fentry) runs from a trampoline when BPF_PROG_TEST_RUN
# calls bpf_fentry_test1, and nothing of it is recorded yet; spin.bpf.c runs 16M
# instructions on purpose (recording it hits the agent's run timeout); linked.bpf.o
# (linkmain + linklib, bpftool gen object) is built only by test_prog_shapes.
TAIL_CALL = "the program tail-called another program, which qstep does not follow"
UNSUPPORTED = {("6.1", "tail_main"): TAIL_CALL, ("6.12", "tail_main"): TAIL_CALL}
NEWER = ("alu_v4_main", "iter_sum")  # ISA v4 (6.6+), open-coded iterators (6.4+)
CASES = [(k, *p) for k in ("6.1", "6.12") for p in PROGRAMS
         if not (k == "6.1" and p[1] in NEWER)]


def _record(vm: Session, obj: Path, name: str, packet: bytes, ctx: bytes,
            prog_type: int | None, maps: bool) -> tuple[Recording, Callable[[], int] | None]:
    prog: LoadedProgram = (vm.load(BpfObject.open(obj), name, LoadOptions(prog_type=prog_type))
                           if prog_type is not None else load_program(vm, obj, name, maps))
    try:
        result, rec = record_run(vm, prog, packet, ctx, repeat=0 if ctx else 1)
        assert result.retval == rec.retval
        return rec, percpu_offset_reader(vm, prog)
    finally:
        vm.unload(prog)


@pytest.mark.parametrize("kernel, source, name, packet, ctx, prog_type, maps", CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_every_recorded_instruction_agrees_with_the_oracle(
        guests: Callable[[str], Session], bpf_obj: Callable[[str], Path], kernel: str,
        source: str, name: str, packet: bytes, ctx: bytes, prog_type: int | None,
        maps: bool) -> None:
    rec, percpu = _record(guests(kernel), bpf_obj(source), name, packet, ctx, prog_type, maps)
    report = lockstep_recording(rec, percpu)
    assert report.divergence is None, report.divergence
    why = UNSUPPORTED.get((kernel, name))
    if why is not None:
        assert report.unsupported is not None and why in report.unsupported
        assert 0 <= report.checked < len(rec.steps)
        return
    assert report.unsupported is None
    assert report.checked == len(rec.steps) and report.retval == rec.retval


FAULT_STEP = 50


def test_a_fault_injected_into_a_recording_is_reported_at_its_step(
        vm: Session, l4lb_obj: Path) -> None:
    """A register after step 50, then a stored byte of a later store: each is the first
    divergence, at exactly that step."""
    rec = _record(vm, l4lb_obj, "l4lb_ingress", IPV6, b"", None, True)[0]
    assert lockstep_recording(rec).divergence is None
    regs = dict(rec.steps[FAULT_STEP].x86)
    regs["rbx"] ^= 0x40  # BPF r6 after step 50
    bad = _with_step(rec, FAULT_STEP, dataclasses.replace(rec.steps[FAULT_STEP], x86=regs))
    div = lockstep_recording(bad).divergence
    assert div is not None
    assert (div.step, div.site) == (FAULT_STEP, rec.steps[FAULT_STEP - 1].site)
    good = rec.steps[FAULT_STEP].regs()[6]
    assert div.what == f"r6 is {good ^ 0x40:#x}, BPF semantics give {good:#x}"

    k = next(k for k, s in enumerate(rec.steps) if k > FAULT_STEP and
             any(a.store for a in s.accesses))
    store = next(a for a in rec.steps[k].accesses if a.store)
    accesses = [dataclasses.replace(a, value=a.value ^ 1) if a is store else a
                for a in rec.steps[k].accesses]
    bad = _with_step(rec, k, dataclasses.replace(rec.steps[k], accesses=accesses))
    div = lockstep_recording(bad).divergence
    assert div is not None and (div.step, div.site) == (k + 1, rec.steps[k].site)
    wrote = store.value.to_bytes(store.size, "little")
    stored = (store.value ^ 1).to_bytes(store.size, "little")
    assert div.what == (f"memory at {store.addr:#x} holds {stored.hex()}, BPF semantics "
                        f"wrote {wrote.hex()}")

    k = next(k for k, s in enumerate(rec.steps) if k > FAULT_STEP and not s.accesses)
    extra = dataclasses.replace(store, pc=rec.steps[k].site.jit_start or 0, value=0x5A, old=0)
    bad = _with_step(rec, k, dataclasses.replace(rec.steps[k], accesses=[extra]))
    div = lockstep_recording(bad).divergence
    assert div is not None and (div.step, div.site) == (k + 1, rec.steps[k].site)
    assert div.what == (f"the JIT stored 0x5a at {store.addr:#x}, which BPF semantics do "
                        "not write")


def _with_step(rec: Recording, k: int, step: object) -> Recording:
    steps = list(rec.steps)
    steps[k] = step  # type: ignore[call-overload]
    return dataclasses.replace(rec, steps=steps)


def test_a_fault_after_an_inlined_bpf_loop_is_reported_at_the_callbacks_exit(
        vm: Session, bpf_obj: Callable[[str], Path]) -> None:
    """flowsum's bpf_loop is inlined: a loop in the call's own xlated code calls the
    callback, then restores r6-r8. A wrong r6 after the last callback returns is
    reported at that callback's exit instruction."""
    rec = _record(vm, bpf_obj("tests/progs/flowsum.bpf.c"), "flowsum_main", IPV4, b"",
                  None, False)[0]
    assert lockstep_recording(rec).divergence is None
    loop = next(k for k, s in enumerate(rec.steps) if s.site.insn.is_helper_call
                and s.site.insn.imm == 181)
    after = next(k for k in range(loop + 1, len(rec.steps))
                 if rec.steps[k].site.index == rec.steps[loop].site.index + 1)
    assert rec.steps[after - 1].site.insn.is_exit  # the callback's last exit
    regs = dict(rec.steps[after].x86)
    regs["rbx"] ^= 0x10
    bad = _with_step(rec, after, dataclasses.replace(rec.steps[after], x86=regs))
    div = lockstep_recording(bad).divergence
    assert div is not None and (div.step, div.site) == (after, rec.steps[after - 1].site)
    good = rec.steps[after].regs()[6]
    assert div.what == f"r6 is {good ^ 0x10:#x}, BPF semantics give {good:#x}"
