"""The typed form of a scenario file (see docs/scenarios.md for the TOML)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from qstep.loadopts import LoadOptions


@dataclass(frozen=True)
class Where:
    """A place in a scenario file, for messages."""

    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class InspectExpectation:
    """A probe to attach during the case and what it must report."""

    spec: str
    hits: int | None
    printed: tuple[tuple[str, ...], ...] | None  # per hit, the printed items as text
    where: Where


@dataclass(frozen=True)
class TraceExpectation:
    """Properties of the instruction trace of the case's first run."""

    insns: int | None
    lines: tuple[int, ...]  # source lines that must execute
    where: Where


@dataclass(frozen=True)
class CaseExpectation:
    retval: int | str | None = None  # a number or a name such as "XDP_PASS"
    packet_out: bytes | None = None
    packet_out_mask: bytes | None = None
    maps: tuple[tuple[str, str, str], ...] = ()  # (map, key text, value text)
    inspect: tuple[InspectExpectation, ...] = ()
    trace: TraceExpectation | None = None
    verifier_check: bool = False  # check every traced value against the verifier's states


@dataclass(frozen=True)
class Case:
    """One input: a packet run ``repeat`` times on a fresh load of the program."""

    name: str
    packet: bytes
    repeat: int
    maps: tuple[str, ...]  # extra 'NAME KEY=VALUE' lines for this case
    expect: CaseExpectation
    where: Where


@dataclass(frozen=True)
class VerifierExpectation:
    verdict: str | None = None  # "accept" or "reject"
    message: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Scenario:
    """A program, the kernels to check it on, its map contents and its cases."""

    name: str
    file: Path
    object: Path | None
    source: Path | None
    cflags: tuple[str, ...]  # extra clang flags for ``source`` (e.g. -mcpu=v4)
    program: str | None
    kernels: tuple[str, ...]
    maps: tuple[tuple[str, str], ...]  # ('NAME KEY=VALUE', origin)
    verifier: VerifierExpectation
    cases: tuple[Case, ...] = field(default=())
    load: LoadOptions = LoadOptions()  # program type, globals set before load, modules
