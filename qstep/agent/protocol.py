"""Agent protocol v2 framing (docs/agent-protocol.md): pure encode/decode functions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PROTOCOL_VERSION = 3
READY_RE = re.compile(r"^QSTEP-AGENT (\d+) READY ?(.*)$")
WORD_RE = re.compile(r"^[A-Za-z0-9_.:/-]+$")
SHARED_RE = re.compile(r"s:([0-9]+):([0-9]+)")
BLOB_PREFIXES = ("x:", "s:")

Token = int | str | bytes


@dataclass(frozen=True)
class SharedRef:
    """A blob in the shared-memory window: ``length`` bytes at ring position ``pos``."""

    pos: int
    length: int


WireToken = Token | SharedRef


def encode_token(token: WireToken) -> str:
    """Encode one argument: int → decimal, bytes → ``x:hex``, SharedRef → ``s:POS:LEN``,
    str → word."""
    if isinstance(token, bool):
        raise TypeError("bool is not a protocol token")
    if isinstance(token, int):
        return str(token)
    if isinstance(token, bytes | bytearray):
        return "x:" + bytes(token).hex()
    if isinstance(token, SharedRef):
        return f"s:{token.pos}:{token.length}"
    if not WORD_RE.match(token) or token.startswith(BLOB_PREFIXES):
        raise ValueError(f"not a protocol word: {token!r}")
    return token


def encode_request(seq: int, verb: str, *args: WireToken) -> bytes:
    return (" ".join([str(seq), encode_token(verb), *map(encode_token, args)]) + "\n").encode()


def decode_token(text: str) -> WireToken:
    if text.startswith("x:"):
        return bytes.fromhex(text[2:])
    shared = SHARED_RE.fullmatch(text)
    if shared:
        return SharedRef(int(shared.group(1)), int(shared.group(2)))
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


@dataclass
class Reply:
    """All lines of one reply, by key, in order."""

    seq: int
    lines: list[tuple[str, list[Token]]] = field(default_factory=list)
    error: str | None = None

    def all(self, key: str) -> list[list[Token]]:
        return [vals for k, vals in self.lines if k == key]

    def get(self, key: str) -> Token:
        found = self.all(key)
        if not found or not found[0]:
            raise KeyError(f"agent reply {self.seq} has no '{key}'")
        return found[0][0]

    def int(self, key: str) -> int:
        value = self.get(key)
        if not isinstance(value, int):
            raise TypeError(f"agent reply '{key}' is not an integer: {value!r}")
        return value

    def blob(self, key: str) -> bytes:
        value = self.get(key)
        if isinstance(value, int) or isinstance(value, str) and value != "x:":
            raise TypeError(f"agent reply '{key}' is not a blob: {value!r}")
        return value if isinstance(value, bytes) else b""

    def has(self, key: str) -> bool:
        return bool(self.all(key))


@dataclass(frozen=True)
class ReplyLine:
    seq: int
    key: str
    values: list[WireToken]
    rest: str


def parse_reply_line(line: str) -> ReplyLine:
    """Split ``<seq> <key> <values...>``; ``rest`` keeps the raw text after the key."""
    parts = line.split(" ", 2)
    if len(parts) < 2 or not re.fullmatch(r"[0-9]+", parts[0]):
        raise ValueError(f"malformed agent line: {line[:120]!r}")
    rest = parts[2] if len(parts) > 2 else ""
    values = [] if parts[1] == "err" else [decode_token(t) for t in rest.split()]
    return ReplyLine(int(parts[0]), parts[1], values, rest)
