"""DAP base protocol framing: ``Content-Length: N\\r\\n\\r\\n`` + N bytes of UTF-8 JSON.

Strict: a header block without Content-Length, a non-numeric or negative length,
a body that is not a JSON object, or a stream cut inside a message is a
``ProtocolError``; a clean end of stream between messages is ``None``.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

from qstep.errors import UsageError

MAX_HEADER_BYTES = 8192
MAX_BODY_BYTES = 64 << 20


class ProtocolError(UsageError):
    """A malformed DAP message on the wire."""


def read_message(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream (between messages)."""
    length = _read_headers(stream)
    if length is None:
        return None
    body = _read_exact(stream, length)
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"DAP message body is not JSON: {err}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("DAP message is not an object with a 'type'")
    return message


def _read_headers(stream: BinaryIO) -> int | None:
    length: int | None = None
    seen = 0
    while True:
        line = stream.readline(MAX_HEADER_BYTES)
        if not line:
            if seen:
                raise ProtocolError("DAP stream ended inside a header block")
            return None
        seen += len(line)
        if seen > MAX_HEADER_BYTES or not line.endswith(b"\r\n"):
            raise ProtocolError("DAP header line too long or not ended by CRLF")
        if line == b"\r\n":
            if length is None:
                raise ProtocolError("DAP header block without Content-Length")
            return length
        name, sep, value = line[:-2].decode("ascii", "replace").partition(":")
        if not sep:
            raise ProtocolError(f"bad DAP header line: {line!r}")
        if name.strip().lower() == "content-length":
            length = _length(value.strip())


def _length(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_BODY_BYTES:
        raise ProtocolError(f"bad Content-Length: {text!r}")
    return int(text)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise ProtocolError(f"DAP stream ended inside a message ({len(data)} of "
                                f"{size} bytes)")
        data += chunk
    return data


def encode_message(message: dict[str, Any]) -> bytes:
    """One framed message."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body
