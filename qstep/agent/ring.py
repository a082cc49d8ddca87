"""Ring arithmetic of the shared-memory window (pure; docs/agent-protocol.md).

Each direction of the window is a ring of ``size`` bytes with one producer and
one consumer. Positions are monotonic byte counters; a blob at position ``pos``
occupies ring offsets ``pos % size`` .. ``pos % size + length`` and never wraps
(the producer skips to the ring's start instead). The consumer frees blobs in
order by publishing ``tail = pos + length`` once it has copied the blob out.
The agent implements the same rules in C.
"""

from __future__ import annotations

from dataclasses import dataclass

from qstep.agent.protocol import SharedRef


@dataclass
class RingProducer:
    """Chooses where the next blob goes, given the consumer's published tail."""

    size: int
    head: int = 0

    def place(self, length: int, tail: int) -> int | None:
        """The position for ``length`` bytes, or None if they do not fit now."""
        if length <= 0 or length > self.size or tail > self.head:
            return None
        offset = self.head % self.size
        empty = tail == self.head  # all consumed: restart at the ring's start (fewest pages)
        if empty or offset + length > self.size:
            start = self.head + (self.size - offset) % self.size
        else:
            start = self.head
        if not empty and start + length - tail > self.size:
            return None
        self.head = start + length
        return start


def ring_offset(ref: SharedRef, size: int) -> int:
    """Offset of ``ref`` inside a ring of ``size`` bytes; ValueError if it cannot be there."""
    offset = ref.pos % size
    if ref.length > size or offset + ref.length > size:
        raise ValueError(f"shared blob s:{ref.pos}:{ref.length} is outside the {size}-byte ring")
    return offset
