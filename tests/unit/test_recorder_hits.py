import struct

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
