"""``DW_OP_entry_value``: a register's value at its function's entry, where still known.

``qstep.dwarf.copies`` tells which places of a function still hold its entry rN
before each instruction. The entry value of rN in a frame is then read from such
a place that the frame can read: any register or a stack slot in the innermost frame; r6-r9 in a
calling frame (the callee cannot change them: ``qstep.debugger.unwind`` restores
them; its stack slots it could write through a pointer, so they are not used).
A subprogram's entry rN is also its caller's rN just before the call, found the
same way in the caller (up to the caller's own entry values). Otherwise the value
is unavailable and the message says why: never a guess.
"""

from __future__ import annotations

from collections.abc import Callable

from qstep.debugger.frames import Frame
from qstep.debugger.unwind import CALLEE_SAVED, caller_register
from qstep.dwarf.copies import ARGS, Place, places_like
from qstep.dwarf.location import Unavailable
from qstep.loaded import LoadedProgram


def entry_value(prog: LoadedProgram, frames: list[Frame], level: int, n: int,
                regs: list[int], read: Callable[[int, int], bytes]) -> int:
    """rN at the entry of frame ``level``'s function; ``regs`` are the innermost frame's
    registers. Raises ``Unavailable`` saying why when no place keeps it."""
    frame = frames[level]
    if frame.site is None:
        raise Unavailable(f"r{n} at the function's entry: not stopped in the program")
    if n not in ARGS:
        raise Unavailable(f"r{n} at the function's entry is not an argument register")
    for place in sorted(places_like(prog, frame.function, frame.site.index, ("entry", n))):
        value = _read(prog, frames, level, place, regs, read)
        if value is not None:
            return value
    if level + 1 < len(frames):
        return _from_caller(prog, frames, level + 1, n, regs, read)
    raise Unavailable(f"r{n} at the entry of {frame.function.name} is kept in no register or "
                      "stack slot here")


def _from_caller(prog: LoadedProgram, frames: list[Frame], level: int, n: int,
                 regs: list[int], read: Callable[[int, int], bytes]) -> int:
    caller = frames[level]
    assert caller.site is not None
    like = places_like(prog, caller.function, caller.site.index, ("r", n))
    for place in sorted(like):
        value = _read(prog, frames, level, place, regs, read)
        if value is not None:
            return value
    for kind, m in sorted(like):
        if kind == "entry":
            return entry_value(prog, frames, level, m, regs, read)
    raise Unavailable(f"r{n} at the function's entry: {caller.function.name} passed it in r{n} "
                      f"(insn {caller.site.index}) and kept it nowhere the call preserves")


def _read(prog: LoadedProgram, frames: list[Frame], level: int, place: Place,
          regs: list[int], read: Callable[[int, int], bytes]) -> int | None:
    kind, n = place
    if level == 0 and kind == "r":
        return regs[n]
    if level == 0 and kind == "fp":
        return int.from_bytes(read(frames[0].r10 + n, 8), "little")
    if kind == "r" and n in CALLEE_SAVED:
        return caller_register(prog, frames, level, n, regs[n], read)
    return None
