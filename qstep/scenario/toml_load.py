"""Read a scenario TOML file into `qstep.scenario.model`, with file:line in every error."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from qstep.bpf.values import split_key_value
from qstep.errors import UsageError
from qstep.loadopts import LoadOptions, parse_attach_type, parse_prog_type
from qstep.probe.spec import parse_spec
from qstep.scenario.model import (
    Case,
    CaseExpectation,
    InspectExpectation,
    Scenario,
    TraceExpectation,
    VerifierExpectation,
    Where,
)
from qstep.scenario.tomlpos import Path as KeyPath
from qstep.scenario.tomlpos import key_lines, line_of
from qstep.userinput import parse_hex, read_map_file, read_packet

SCENARIO_KEYS = {"name", "object", "source", "cflags", "program", "kernels", "maps_file", "maps",
                 "expect", "prog_type", "attach_type", "set", "modules"}
SCENARIO_EXPECT_KEYS = {"verifier", "verifier_message", "verifier_check"}
CASE_KEYS = {"name", "packet", "packet_hex", "repeat", "maps", "expect", "inspect"}
EXPECT_KEYS = {"retval", "packet_out", "packet_out_mask", "maps", "trace", "verifier_check"}
INSPECT_KEYS = {"spec", "hits", "printed"}
TRACE_KEYS = {"insns", "lines"}
MAX_REPEAT = 1_000_000


class ScenarioError(UsageError):
    """A scenario file that cannot be used; the message starts with file:line."""


class _Reader:
    """Typed access to the parsed TOML, raising `ScenarioError` at the right line."""

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self.lines = key_lines(text)

    def where(self, path: KeyPath) -> Where:
        return Where(self.file, line_of(self.lines, path))

    def fail(self, path: KeyPath, message: str) -> ScenarioError:
        return ScenarioError(f"{self.where(path)}: {message}")

    def table(self, data: Any, path: KeyPath, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(path, f"'{_dotted(path)}' must be a table")
        for key in data:
            if key not in allowed:
                raise self.fail(path + (key,), f"unknown key '{_dotted(path + (key,))}'; "
                                f"expected one of: {', '.join(sorted(allowed))}")
        return data

    def get(self, data: dict[str, Any], path: KeyPath, key: str, kind: type | tuple[type, ...],
            default: Any = None) -> Any:
        if key not in data:
            return default
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(
                k.__name__ for k in kind)
            raise self.fail(path + (key,), f"'{_dotted(path + (key,))}' must be {_a(names)}")
        return value

    def strings(self, data: dict[str, Any], path: KeyPath, key: str) -> tuple[str, ...]:
        value = self.get(data, path, key, list, [])
        if not all(isinstance(v, str) for v in value):
            raise self.fail(path + (key,), f"'{_dotted(path + (key,))}' must be a list of "
                            "strings")
        return tuple(value)

    def path(self, data: dict[str, Any], path: KeyPath, key: str) -> Path | None:
        value = self.get(data, path, key, str)
        return (self.file.parent / value) if value is not None else None

    def guard(self, path: KeyPath, action: Callable[[], Any]) -> Any:
        """Run ``action``; a `UsageError` it raises gets this path's line."""
        try:
            return action()
        except ScenarioError:
            raise
        except UsageError as err:
            raise self.fail(path, str(err)) from None


def _dotted(path: KeyPath) -> str:
    return ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")


def _a(noun: str) -> str:
    return {"str": "a string", "int": "an integer", "list": "a list", "dict": "a table",
            "int or str": "an integer or a string", "bool": "true or false"}.get(noun, noun)


def load_scenario(file: Path) -> Scenario:
    """Parse and validate ``file``; raise `ScenarioError` naming file and line."""
    try:
        text = file.read_text()
    except OSError as err:
        raise ScenarioError(f"{file}: cannot read: {err.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{file}: not valid TOML: {err}") from None
    reader = _Reader(file, text)
    reader.table(data, (), {"scenario", "case"})
    if "scenario" not in data:
        raise ScenarioError(f"{file}:1: missing the [scenario] table")
    head = reader.table(data["scenario"], ("scenario",), SCENARIO_KEYS)
    cases = reader.get(data, (), "case", list, [])
    expect_path: KeyPath = ("scenario", "expect")
    check_all = reader.get(reader.table(head.get("expect", {}), expect_path,
                                        SCENARIO_EXPECT_KEYS),
                           expect_path, "verifier_check", bool, False)
    return Scenario(
        name=reader.get(head, ("scenario",), "name", str, file.stem),
        file=file, object=reader.path(head, ("scenario",), "object"),
        source=reader.path(head, ("scenario",), "source"),
        cflags=reader.strings(head, ("scenario",), "cflags"),
        program=reader.get(head, ("scenario",), "program", str),
        kernels=reader.strings(head, ("scenario",), "kernels") or ("6.1",),
        maps=_scenario_maps(reader, head),
        verifier=_verifier(reader, head),
        cases=tuple(_case(reader, c, i, check_all) for i, c in enumerate(cases)),
        load=_load_options(reader, head))


def _load_options(reader: _Reader, head: dict[str, Any]) -> LoadOptions:
    """prog_type, attach_type, set, modules: the CLI's load options."""
    path: KeyPath = ("scenario",)

    def named(key: str, parse: Callable[[str], int]) -> int | None:
        text = reader.get(head, path, key, str)
        return None if text is None else reader.guard(path + (key,), lambda: parse(text))
    sets = reader.strings(head, path, "set")
    for text in sets:
        reader.guard(path + ("set",), partial(split_key_value, text))
    return LoadOptions(named("prog_type", parse_prog_type), named("attach_type", parse_attach_type),
                       sets, reader.strings(head, path, "modules"))


def _scenario_maps(reader: _Reader, head: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    path: KeyPath = ("scenario",)
    if (head.get("object") is None) == (head.get("source") is None):
        raise reader.fail(path, "give exactly one of 'object' (a BPF ELF file) or 'source' "
                          "(a .c file qstep compiles)")
    lines: list[tuple[str, str]] = []
    maps_file = reader.path(head, path, "maps_file")
    if maps_file is not None:
        entries = reader.guard(path + ("maps_file",), lambda: read_map_file(maps_file))
        lines += [(f"{e.map_name} {e.text}", e.origin) for e in entries]
    inline = reader.strings(head, path, "maps")
    lines += [(text, str(reader.where(path + ("maps",)))) for text in inline]
    return tuple(lines)


def _verifier(reader: _Reader, head: dict[str, Any]) -> VerifierExpectation:
    path: KeyPath = ("scenario", "expect")
    expect = reader.table(head.get("expect", {}), path, SCENARIO_EXPECT_KEYS)
    verdict = reader.get(expect, path, "verifier", str)
    if verdict not in (None, "accept", "reject"):
        raise reader.fail(path + ("verifier",), "'verifier' must be \"accept\" or \"reject\"")
    message = reader.get(expect, path, "verifier_message", str)
    try:
        pattern = re.compile(message) if message is not None else None
    except re.error as err:
        raise reader.fail(path + ("verifier_message",), f"not a valid regex: {err}") from None
    return VerifierExpectation(verdict, pattern)


def _case(reader: _Reader, data: Any, index: int, check_verifier: bool) -> Case:
    path: KeyPath = ("case", index)
    case = reader.table(data, path, CASE_KEYS)
    name = reader.get(case, path, "name", str, f"case {index + 1}")
    repeat = reader.get(case, path, "repeat", int, 1)
    if not 1 <= repeat <= MAX_REPEAT:
        raise reader.fail(path + ("repeat",), f"'repeat' must be 1..{MAX_REPEAT}")
    return Case(name=name, packet=_packet(reader, case, path), repeat=repeat,
                maps=reader.strings(case, path, "maps"),
                expect=_expectation(reader, case, path, check_verifier),
                where=reader.where(path))


def _packet(reader: _Reader, case: dict[str, Any], path: KeyPath) -> bytes:
    packet = reader.path(case, path, "packet")
    hex_text = reader.get(case, path, "packet_hex", str)
    if (packet is None) == (hex_text is None):
        raise reader.fail(path, "give exactly one of 'packet' (a file) or 'packet_hex'")
    if packet is not None:
        return bytes(reader.guard(path + ("packet",), lambda: read_packet(str(packet))))
    return bytes(reader.guard(path + ("packet_hex",),
                              lambda: parse_hex(hex_text or "", "packet_hex")))


def _expectation(reader: _Reader, case: dict[str, Any], path: KeyPath,
                 check_verifier: bool) -> CaseExpectation:
    epath = path + ("expect",)
    expect = reader.table(case.get("expect", {}), epath, EXPECT_KEYS)
    out = reader.get(expect, epath, "packet_out", str)
    mask = reader.get(expect, epath, "packet_out_mask", str)
    return CaseExpectation(
        retval=reader.get(expect, epath, "retval", (int, str)),
        packet_out=reader.guard(epath + ("packet_out",), lambda: parse_hex(
            out, "packet_out")) if out is not None else None,
        packet_out_mask=reader.guard(epath + ("packet_out_mask",), lambda: parse_hex(
            mask, "packet_out_mask")) if mask is not None else None,
        maps=_expected_maps(reader, expect, epath),
        inspect=tuple(_inspect(reader, item, path + ("inspect", i))
                      for i, item in enumerate(reader.get(case, path, "inspect", list, []))),
        trace=_trace(reader, expect, epath),
        verifier_check=reader.get(expect, epath, "verifier_check", bool, check_verifier))


def _expected_maps(reader: _Reader, expect: dict[str, Any], path: KeyPath
                   ) -> tuple[tuple[str, str, str], ...]:
    maps = reader.get(expect, path, "maps", dict, {})
    out = []
    for name in maps:
        epath = path + ("maps", name)
        table = reader.get(maps, path + ("maps",), name, dict)
        for key, value in table.items():
            if not isinstance(value, str):
                raise reader.fail(epath + (key,), f"the value of {name}[{key}] must be a "
                                  "string such as \"{packets: 1}\"")
            out.append((name, key, value))
    return tuple(out)


def _inspect(reader: _Reader, data: Any, path: KeyPath) -> InspectExpectation:
    item = reader.table(data, path, INSPECT_KEYS)
    spec = reader.get(item, path, "spec", str)
    if spec is None:
        raise reader.fail(path, "an [[case.inspect]] needs 'spec'")
    reader.guard(path + ("spec",), lambda: parse_spec(spec))
    hits = reader.get(item, path, "hits", int)
    printed = reader.get(item, path, "printed", list)
    if printed is not None and not all(
            isinstance(hit, list) and all(isinstance(v, str) for v in hit) for hit in printed):
        raise reader.fail(path + ("printed",), "'printed' must be a list of lists of strings "
                          "(the printed items of each hit)")
    return InspectExpectation(spec, hits, tuple(tuple(h) for h in printed)
                              if printed is not None else None, reader.where(path))


def _trace(reader: _Reader, expect: dict[str, Any], path: KeyPath) -> TraceExpectation | None:
    if "trace" not in expect:
        return None
    tpath = path + ("trace",)
    trace = reader.table(expect["trace"], tpath, TRACE_KEYS)
    lines = reader.get(trace, tpath, "lines", list, [])
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in lines):
        raise reader.fail(tpath + ("lines",), "'lines' must be a list of line numbers")
    return TraceExpectation(reader.get(trace, tpath, "insns", int), tuple(lines),
                            reader.where(tpath))
