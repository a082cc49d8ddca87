"""Turning command-line text into bytes: packets and typed map entries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qstep.agent.replies import MapInfo
from qstep.bpf import values
from qstep.bpf.btf import Btf
from qstep.errors import UsageError
from qstep.pcap import pcap_frame

HEX_TEXT = re.compile(r"^[0-9a-fA-F\s:]*$")


def strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def parse_hex(text: str, what: str) -> bytes:
    """Hex text with optional whitespace, ``:`` separators and ``#`` comments."""
    cleaned = re.sub(r"[\s:]", "", strip_comments(text))
    cleaned = cleaned.removeprefix("0x")
    if len(cleaned) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", cleaned):
        raise UsageError(f"{what}: not a file and not hex bytes: {text[:60]!r}")
    return bytes.fromhex(cleaned)


def read_packet(arg: str) -> bytes:
    """A packet from a file (hex text, raw bytes, or ``capture.pcap[#N]``: frame N of a
    pcap file) or from hex on the command line."""
    name, hash_, number = arg.rpartition("#") if ".pcap#" in arg else (arg, "", "")
    path = Path(name)
    if path.suffix == ".pcap" and _is_file(path):
        if hash_ and not number.isdigit():
            raise UsageError(f"{arg}: expected FILE.pcap#N with a frame number N")
        return pcap_frame(path, int(number) if number else None)
    if _is_file(path):
        raw = path.read_bytes()
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return raw
        if HEX_TEXT.match(strip_comments(text)):
            return parse_hex(text, f"packet file {arg}")
        return raw
    if "/" in arg or arg.endswith((".hex", ".bin", ".pcap")):
        raise UsageError(f"packet file {arg!r} does not exist")
    return parse_hex(arg, "--packet")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for a file: hex text
        return False


@dataclass(frozen=True)
class MapEntry:
    """One ``--map NAME KEY=VALUE`` as given by the user."""

    map_name: str
    text: str
    origin: str


def read_map_file(path: Path) -> list[MapEntry]:
    """Lines ``NAME KEY=VALUE``; ``#`` starts a comment."""
    if not path.is_file():
        raise UsageError(f"map file {path} does not exist")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, rest = line.partition(" ")
        if not rest.strip():
            raise UsageError(f"{path}:{number}: expected 'MAPNAME KEY=VALUE'")
        entries.append(MapEntry(name, rest.strip(), f"{path}:{number}"))
    return entries


def encode_entry(entry: MapEntry, info: MapInfo, btf: Btf) -> tuple[bytes, bytes]:
    """Typed key/value text → the bytes the map stores."""
    key_text, value_text = values.split_key_value(entry.text)
    where = f"{entry.origin}: map {entry.map_name}"
    key = _encode(key_text, info.btf_key_type_id, info.key_size, btf, f"{where} key")
    value = _encode(value_text, info.btf_value_type_id, info.value_size, btf, f"{where} value")
    return key, value


def _encode(text: str, type_id: int, size: int, btf: Btf, where: str) -> bytes:
    try:
        data = (values.parse_value(text, btf, type_id) if type_id
                else values.parse_value_sized(text, size))
    except UsageError as err:
        raise UsageError(f"{where}: {err}") from None
    if len(data) != size:
        raise UsageError(f"{where}: {len(data)} bytes given, the map needs {size}")
    return data
