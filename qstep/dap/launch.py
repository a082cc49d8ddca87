"""Launch and attach configurations (launch.json) → the CLI's program/input options.

A configuration is checked completely before the guest boots; every mistake is a
one-line ``UsageError`` naming the attribute. The result is the same namespace the
``debug`` command builds, so loading, map filling and guest setup are shared.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qstep.bpf.compile import compile_c
from qstep.errors import UsageError
from qstep.loadopts import parse_attach_type, parse_prog_type
from qstep.session import SELECTORS

LAUNCH_KEYS = {"program", "prog", "packets", "maps", "map", "set", "progType", "attachType",
               "modules", "kernel", "accel", "stopOnEntry", "cwd", "cflags", "verifierLog",
               "record"}
ATTACH_KEYS = {"select", "value", "guestFiles", "guestCommands", "packets", "maps", "map",
               "kernel", "accel", "stopOnEntry", "cwd"}
# Keys every client adds on its own (VS Code, nvim-dap, dape).
CLIENT_KEYS = {"type", "request", "name", "__sessionId", "__configurationTarget",
               "noDebug", "__restart", "presentation", "internalConsoleOptions",
               "preLaunchTask", "postDebugTask", "debugServer", "console"}


@dataclass
class LaunchConfig:
    """A validated configuration: the CLI namespace plus adapter options."""

    args: argparse.Namespace
    packets: list[str]
    stop_on_entry: bool
    record: bool = False  # record each run as it goes: stepBack, reverseContinue


def parse_config(request: str, config: dict[str, Any]) -> LaunchConfig:
    """Check a ``launch`` or ``attach`` request's arguments."""
    known = LAUNCH_KEYS if request == "launch" else ATTACH_KEYS
    unknown = sorted(set(config) - known - CLIENT_KEYS)
    if unknown:
        raise UsageError(f"{request}: unknown attribute(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    cwd = Path(_string(config, "cwd") or ".")
    args = argparse.Namespace(
        kernel=_string(config, "kernel"), accel=_string(config, "accel") or "tcg",
        prog=None, selector_value=None, prog_type=None, attach_type=None,
        set=_strings(config, "set"), modules=_strings(config, "modules"),
        guest_file=[], guest_cmd=[], map=_map_items(config), maps=None,
        print_cmd=False, json=True, command="dap")
    if args.accel not in ("tcg", "kvm"):
        raise UsageError(f"{request}: accel must be tcg or kvm, not {args.accel!r}")
    if _string(config, "maps"):
        args.maps = _existing(cwd, _string(config, "maps"), "maps")
    packets = [_packet(cwd, p) for p in _strings(config, "packets")]
    if not packets:
        raise UsageError(f"{request}: 'packets' needs at least one packet (a file or hex)")
    verifier_log = config.get("verifierLog", False)
    if not isinstance(verifier_log, bool):
        raise UsageError(f"{request}: 'verifierLog' must be true or false")
    args.verifier_log = verifier_log
    if request == "launch":
        _launch_program(config, cwd, args)
    else:
        _attach_program(config, cwd, args)
    return LaunchConfig(args, packets, bool(config.get("stopOnEntry", False)),
                        record=bool(config.get("record", False)))


def _launch_program(config: dict[str, Any], cwd: Path, args: argparse.Namespace) -> None:
    program = _string(config, "program")
    if not program:
        raise UsageError("launch: 'program' (a BPF object .o or a C source .c) is required")
    path = _existing(cwd, program, "program")
    if path.suffix == ".c":
        path = compile_c(path, _strings(config, "cflags"))
    args.object = path
    args.prog = _string(config, "prog")
    if _string(config, "progType"):
        args.prog_type = parse_prog_type(_string(config, "progType") or "")
    if _string(config, "attachType"):
        args.attach_type = parse_attach_type(_string(config, "attachType") or "")


def _attach_program(config: dict[str, Any], cwd: Path, args: argparse.Namespace) -> None:
    kind, value = _string(config, "select"), config.get("value")
    if kind not in SELECTORS:
        raise UsageError(f"attach: 'select' must be one of {', '.join(SELECTORS)}")
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        raise UsageError(f"attach: 'value' (the program's {kind}) is required")
    args.object, args.selector_value = kind, str(value)
    for spec in _strings(config, "guestFiles"):
        local, sep, guest = spec.rpartition(":")
        args.guest_file.append(f"{cwd / local}:{guest}" if sep else spec)
    args.guest_cmd = _strings(config, "guestCommands")


def _string(config: dict[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"'{key}' must be a string")
    return value


def _strings(config: dict[str, Any], key: str) -> list[str]:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"'{key}' must be a list of strings")
    return list(value)


def _map_items(config: dict[str, Any]) -> list[tuple[str, str]]:
    """'map': ["NAME KEY=VALUE", ...] (as --map NAME KEY=VALUE)."""
    items = []
    for text in _strings(config, "map"):
        name, _, entry = text.strip().partition(" ")
        if not entry.strip():
            raise UsageError(f"'map' entry {text!r}: expected 'NAME KEY=VALUE'")
        items.append((name, entry.strip()))
    return items


def _existing(cwd: Path, name: str | None, key: str) -> Path:
    path = cwd / (name or "")
    if not path.is_file():
        raise UsageError(f"'{key}': {path} does not exist")
    return path


def _packet(cwd: Path, text: str) -> str:
    """A packet file relative to cwd, or hex as given (read later by ``read_packet``)."""
    path = cwd / text
    return str(path) if path.is_file() else text
