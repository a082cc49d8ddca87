"""The shared window's ring rules: blobs never wrap and never overwrite unconsumed ones."""

from __future__ import annotations

import random

import pytest

from qstep.agent.protocol import SharedRef
from qstep.agent.ring import RingProducer, ring_offset

SIZE = 1000


def test_an_empty_ring_restarts_at_its_start() -> None:
    ring = RingProducer(SIZE)
    assert ring.place(300, tail=0) == 0
    assert ring.place(300, tail=0) == 300
    # all consumed: the next blob goes to offset 0 again, at a later position
    assert ring.place(100, tail=600) == 1000
    assert ring.head == 1100


def test_a_blob_that_would_wrap_skips_to_the_start() -> None:
    ring = RingProducer(SIZE)
    assert ring.place(700, tail=0) == 0
    assert ring.place(200, tail=500) == 700
    assert ring.place(200, tail=800) == 1000  # 900 + 200 would pass the end
    assert ring_offset(SharedRef(1000, 200), SIZE) == 0


def test_full_ring_and_impossible_requests_are_refused() -> None:
    ring = RingProducer(SIZE)
    assert ring.place(600, tail=0) == 0
    assert ring.place(500, tail=0) is None  # only 400 free
    assert ring.place(400, tail=0) == 600
    assert ring.place(1, tail=0) is None
    assert ring.place(SIZE + 1, tail=ring.head) is None
    assert ring.place(0, tail=ring.head) is None
    assert ring.place(10, tail=ring.head + 1) is None  # a tail ahead of the head is bogus
    assert ring.head == 1000


@pytest.mark.parametrize("ref", [SharedRef(0, SIZE + 1), SharedRef(900, 200), SharedRef(1999, 2)])
def test_references_outside_the_ring_are_refused(ref: SharedRef) -> None:
    with pytest.raises(ValueError, match="outside"):
        ring_offset(ref, SIZE)


def test_live_blobs_never_overlap_under_random_traffic() -> None:
    rng = random.Random(7)
    ring = RingProducer(SIZE)
    live: list[tuple[int, int]] = []  # (pos, length) placed, not yet consumed
    tail = placed = 0
    for _ in range(20000):
        if live and rng.random() < 0.45:
            done_pos, done_len = live.pop(0)
            tail = done_pos + done_len
            continue
        length = rng.choice([1, 7, 64, 333, 999, 1000])
        pos = ring.place(length, tail)
        if pos is None:
            continue
        placed += 1
        offset = ring_offset(SharedRef(pos, length), SIZE)
        for other_pos, other_len in live:
            other = other_pos % SIZE
            assert offset + length <= other or other + other_len <= offset
        live.append((pos, length))
    assert placed > 5000
