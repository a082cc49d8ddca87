"""GDB remote serial protocol framing: ``$payload#cs`` packets, escapes, run lengths.

No I/O here. Received bodies are decoded the way gdb does it: run lengths
(``X*n``) are expanded on the raw bytes first, then ``}`` escapes are undone.
``PacketReader`` takes bytes as they arrive and yields whole decoded payloads;
acks (``+``/``-``) between packets are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

ESCAPE = 0x7D  # '}': the next byte is XORed with 0x20
RUN = 0x2A  # '*': repeat the previous byte (next byte - 29) more times
MUST_ESCAPE = frozenset(b"$#}*")


class PacketError(Exception):
    """A packet that cannot be decoded (bad checksum, dangling escape, bad run)."""


def checksum(raw: bytes) -> int:
    return sum(raw) & 0xFF


def escape(payload: bytes) -> bytes:
    """Escape the bytes that may not appear in a packet body."""
    out = bytearray()
    for byte in payload:
        if byte in MUST_ESCAPE:
            out += bytes((ESCAPE, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """``$<escaped payload>#<checksum>``."""
    body = escape(payload)
    return b"$" + body + b"#%02x" % checksum(body)


def expand_runs(body: bytes) -> bytes:
    """Expand ``X*n`` runs on the raw body (as gdb does, before unescaping)."""
    if RUN not in body:
        return body
    out = bytearray()
    i = 0
    while (star := body.find(RUN, i)) >= 0:
        out += body[i:star]
        count = body[star + 1] - 29 if star + 1 < len(body) else 0
        if not out or not 0 < count <= 255:
            raise PacketError(f"bad run-length encoding at offset {star}")
        out += out[-1:] * count
        i = star + 2
    return bytes(out + body[i:])


def unescape(data: bytes) -> bytes:
    """Undo ``}`` escapes (binary data)."""
    if ESCAPE not in data:
        return data
    out = bytearray()
    i = 0
    while (esc := data.find(ESCAPE, i)) >= 0:
        if esc + 1 >= len(data):
            raise PacketError("packet ends inside an escape")
        out += data[i:esc]
        out.append(data[esc + 1] ^ 0x20)
        i = esc + 2
    return bytes(out + data[i:])


def decode_body(body: bytes) -> bytes:
    """A received packet body → payload: runs first, then escapes."""
    return unescape(expand_runs(body))


class PacketReader:
    """Reassembles packets from a byte stream."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_packet(self) -> bytes | None:
        """The next complete decoded payload, or None until more bytes arrive."""
        start = self._buf.find(b"$")
        if start < 0:
            self._buf.clear()  # only acks (or noise) so far
            return None
        end = self._buf.find(b"#", start)
        if end < 0 or len(self._buf) < end + 3:
            del self._buf[:start]
            return None
        body = bytes(self._buf[start + 1: end])
        sent = bytes(self._buf[end + 1: end + 3])
        del self._buf[: end + 3]
        try:
            ok = int(sent, 16) == checksum(body)
        except ValueError:
            ok = False
        if not ok:
            raise PacketError(f"bad checksum {sent!r} for packet {body[:40]!r}")
        return decode_body(body)


@dataclass(frozen=True)
class StopReply:
    """A decoded ``S``/``T``/``W``/``X`` stop reply."""

    kind: str  # "S", "T", "W" or "X"
    signal: int
    watch_kind: str | None = None  # "write", "read" or "access"
    watch_addr: int | None = None
    thread: str | None = None  # "01", or "p01.01" in multiprocess mode


WATCH_KEYS = {"watch": "write", "rwatch": "read", "awatch": "access"}


def is_stop_reply(payload: bytes) -> bool:
    return payload[:1] in (b"S", b"T", b"W", b"X") and len(payload) >= 3


def parse_stop_reply(payload: bytes) -> StopReply:
    """Decode ``T05thread:01;watch:ffff...;`` and friends."""
    text = payload.decode("ascii", "replace")
    kind = text[0]
    try:
        signal = int(text[1:3], 16)
    except ValueError:
        raise PacketError(f"malformed stop reply {text!r}") from None
    if kind != "T":
        return StopReply(kind, signal)
    pairs = dict(item.partition(":")[::2] for item in text[3:].split(";") if item)
    thread = pairs.get("thread")
    for key, watch_kind in WATCH_KEYS.items():
        if key in pairs:
            return StopReply(kind, signal, watch_kind, int(pairs[key], 16), thread)
    return StopReply(kind, signal, thread=thread)


def thread_pid(thread: str | None) -> int | None:
    """The process id of a multiprocess thread id ``pPID.TID`` (None otherwise)."""
    if thread is None or not thread.startswith("p"):
        return None
    return int(thread[1:].split(".", 1)[0], 16)


def decode_hex(payload: bytes, what: str) -> bytes:
    """Hex text → bytes; ``PacketError`` for error replies or unavailable (``xx``) bytes."""
    try:
        return bytes.fromhex(payload.decode("ascii"))
    except ValueError:
        raise PacketError(f"{what}: unexpected reply {payload[:40]!r}") from None
