import struct

from qstep.commands.inspect import summary_text
from qstep.probe.inspector import Inspector, Probe
from qstep.probe.spec import parse_specs
from qstep.recorder.hits import classify
from qstep.recorder.log import REG_NAMES, Boundary, Vector, parse_log, parse_with_vectors

PC = 0xFFFFFFFFC0000846
OTHER = 0xFFFFFFFFC0000900


def boundary(pc: int) -> bytes:
    return struct.pack(f"<{2 + len(REG_NAMES)}Q", ord("B"), pc, *range(len(REG_NAMES)))


def vector(vec: int, pc: int, flags: int) -> bytes:
    return struct.pack("<3Q", ord("V") | vec << 8, pc, flags)


def test_vector_records_decode_and_stay_out_of_the_plain_log() -> None:
    data = vector(0xEC, PC, 0x10282) + boundary(PC)
    v, b = parse_with_vectors(data)
    assert v == Vector(PC, 0xEC, 0x10282)
    assert isinstance(b, Boundary) and b.pc == PC
    assert parse_log(data) == [b]


def test_an_execution_after_its_debug_exception_is_a_taken_breakpoint() -> None:
    # Seen in a guest: #DB pushes RF=0; a timer that fired during the handler is
    # delivered right after its IRET, RF=1 (correctly): still the breakpoint's hit.
    data = (vector(1, PC, 0x202) + vector(0xEC, PC, 0x10282) + boundary(PC)
            + vector(1, PC, 0x202) + boundary(PC))
    counts = classify(parse_with_vectors(data))
    assert (counts[PC], counts.after_debug[PC], counts.after_interrupt[PC]) == (2, 2, 0)


def test_an_execution_after_an_interrupt_that_pushed_rf_and_no_debug_is_a_miss() -> None:
    # The miss signature measured under QEMU 10.0.2: the local APIC timer (0xec)
    # delivered at the probed pc, pushed RFLAGS 0x10282 (RF=1), then no #DB.
    data = vector(0xEC, PC, 0x10282) + boundary(PC) + vector(1, PC, 0x202) + boundary(PC)
    counts = classify(parse_with_vectors(data))
    assert (counts[PC], counts.after_debug[PC], counts.after_interrupt[PC]) == (2, 1, 1)


def test_what_is_delivered_at_one_address_says_nothing_about_another() -> None:
    data = (vector(0xEC, OTHER, 0x10282) + vector(1, PC, 0x202) + boundary(PC)
            + boundary(OTHER) + vector(0xEC, PC, 0x282) + boundary(PC))
    counts = classify(parse_with_vectors(data))
    assert counts == {PC: 2, OTHER: 1}
    assert counts.after_interrupt == {OTHER: 1}  # RF=0 pushed at PC: not this bug
    assert counts.after_debug == {PC: 1}


def missed_probe(spec: str, interrupted: int | None) -> Inspector:
    inspector = Inspector.__new__(Inspector)
    probe = Probe(1, parse_specs([spec])[0], [], attached="hw_breakpoint",
                  executed=100000, interrupted=interrupted)
    probe.counters.reached = 99998
    inspector.probes, inspector.lost = [probe], 0
    return inspector


def test_a_miss_is_reported_with_its_cause_and_the_way_around_it() -> None:
    lines = summary_text(missed_probe("f:3 print $r0", 2))[2:]
    assert lines == [
        "WARNING: probe 1: the emulator ran its instruction 100000 times, the hardware "
        "breakpoint reported 99998: 2 hit(s) missed (each right after an interrupt that "
        "QEMU returned with the resume flag set, a QEMU >= 9.1 TCG bug; see "
        "qstep/recorder/hits.py)",
        "  inspect --from-recording evaluates every execution in the emulator, with no "
        "breakpoint to miss (slower: ~10x)"]
    assert "(1 right after an interrupt that QEMU returned with the resume flag set; the "\
        "others unexplained)" in summary_text(missed_probe("f:3 print $r0", 1))[2]
    assert "(a TCG breakpoint quirk)" in summary_text(missed_probe("f:3 print $r0", None))[2]
    stops = summary_text(missed_probe("f:3 stop", 2))
    assert len(stops) == 3  # a stop needs the live VM: no --from-recording hint
