"""Debugger targets: a stopped guest CPU behind QEMU's gdbstub.

``open_target("rsp", path)`` speaks the GDB remote protocol directly (fast);
``open_target("gdb", path)`` drives gdb over MI. QEMU accepts one client at a
time: close one target before opening another.
"""

from __future__ import annotations

from pathlib import Path

from qstep.target.base import Stop, Target, TargetError, X86Regs
from qstep.target.gdbmi import GdbMiTarget
from qstep.target.rsp import RspTarget

KINDS = ("rsp", "gdb")
DEFAULT_KIND = "rsp"


def open_target(kind: str | None, socket_path: str | Path) -> Target:
    """Connect a target of ``kind`` ("rsp", the default for None, or "gdb")."""
    kind = kind or DEFAULT_KIND
    if kind == "rsp":
        return RspTarget(socket_path)
    if kind == "gdb":
        return GdbMiTarget(socket_path)
    raise ValueError(f"unknown target kind {kind!r}; use one of {', '.join(KINDS)}")


__all__ = ["DEFAULT_KIND", "KINDS", "GdbMiTarget", "RspTarget", "Stop", "Target", "TargetError",
           "X86Regs", "open_target"]
