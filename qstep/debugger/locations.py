"""Locations the user names (``func:offset``, ``file.c:line``, ``func``, ``*ADDR``, ``#N``).

A location resolves to BPF instructions of the loaded program; errors say why
a location has no code (out of range, removed by the verifier, no code for a line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qstep.debugger.lineentries import line_locations
from qstep.debugger.mergedlines import PathCheck, merged_line
from qstep.errors import UsageError
from qstep.loaded import InsnSite, LoadedProgram


@dataclass(frozen=True)
class Resolved:
    """Instructions a location stands for: one, or for a source line every place
    where control enters the line's code (``qstep.debugger.lineentries``)."""

    text: str
    sites: tuple[InsnSite, ...]
    # A merged-away line (``qstep.debugger.mergedlines``): the path each site stands
    # for (by instruction index) and what the user is told about it.
    paths: dict[int, PathCheck] = field(default_factory=dict)
    note: str = ""


def resolve(prog: LoadedProgram, text: str, current_file: str | None = None) -> Resolved:
    """Resolve ``text`` to live instructions; raise ``UsageError`` explaining failures."""
    text = text.strip()
    if not text:
        raise UsageError("missing location")
    if text.startswith("*"):
        return Resolved(text, (_by_address(prog, text[1:]),))
    if text.startswith("#"):
        return Resolved(text, (_live(prog, _index(text[1:], text), text),))
    name, sep, number = text.rpartition(":")
    if sep and re.fullmatch(r"-?\d+", number):
        if re.search(r"\.[ch]$", name):
            return _by_line(prog, text, name, int(number))
        return Resolved(text, (_by_offset(prog, name, int(number), text),))
    if re.fullmatch(r"\d+", text):
        if current_file is None:
            raise UsageError(f"'{text}': give a file (file.c:{text}) or a function offset")
        return _by_line(prog, text, current_file, int(text))
    func = prog.function_named(text)
    if func is None:
        raise _no_function(prog, text)
    return Resolved(text, (_live(prog, func.start_insn, text),))


def _no_function(prog: LoadedProgram, name: str) -> UsageError:
    if any(f.name == name for f in prog.removed_functions):
        return UsageError(f"function '{name}' was removed by the verifier: it is unreachable "
                          f"from {prog.functions[0].name} as loaded, so it has no JIT code")
    return UsageError(f"no function '{name}'; functions: "
                      f"{', '.join(f.name for f in prog.functions)}")


def _index(text: str, where: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"'{where}': not an instruction number") from None


def _live(prog: LoadedProgram, index: int, where: str) -> InsnSite:
    site = prog.sites.get(index)
    if site is None:
        if index - 1 in prog.sites and prog.sites[index - 1].insn.is_ldimm64:
            raise UsageError(f"{where}: instruction {index} is the second half of the "
                             f"ld_imm64 at {index - 1}")
        raise UsageError(f"{where}: no instruction {index} (program has {len(prog.insns)})")
    if site.removed:
        raise UsageError(f"{where}: instruction {index} was removed by the verifier "
                         "(dead code); it never runs")
    if not site.exact:
        group = prog.sites[site.jit_group or 0]
        raise UsageError(
            f"{where}: instruction {index} has no exact JIT address: the program was loaded "
            f"outside qstep and its own line info gives one address for the instructions "
            f"from {group.index}; use {group.function.name}:"
            f"{group.index - group.function.start_insn}")
    return site


def _by_offset(prog: LoadedProgram, func_name: str, offset: int, where: str) -> InsnSite:
    func = prog.function_named(func_name)
    if func is None:
        raise _no_function(prog, func_name)
    last = func.end_insn - func.start_insn - 1
    if not 0 <= offset <= last:
        raise UsageError(f"{where}: offset {offset} is outside {func_name} (0..{last})")
    return _live(prog, func.start_insn + offset, where)


def _by_address(prog: LoadedProgram, text: str) -> InsnSite:
    try:
        addr = int(text, 0)
    except ValueError:
        raise UsageError(f"'*{text}': not an address") from None
    site = prog.site_at(addr)
    if site is None:
        raise UsageError(f"address {addr:#x} is not in the program's JIT code")
    return site


def _file_matches(path: str, name: str) -> bool:
    return path == name or path.endswith("/" + name)


def _by_line(prog: LoadedProgram, text: str, file: str, line: int) -> Resolved:
    in_file = [s for s in prog.sites.values() if s.source and _file_matches(s.source.file, file)]
    if not in_file:
        files = sorted({s.source.file.rsplit("/", 1)[-1] for s in prog.sites.values()
                        if s.source})
        raise UsageError(f"no code from file '{file}'; files: {', '.join(files)}")
    in_line = [s for s in in_file if s.source and s.source.line == line and not s.removed]
    chosen = line_locations(prog, in_line)
    exact = tuple(s for s in chosen if s.exact)
    if exact:
        return Resolved(text, exact)
    if chosen:
        raise UsageError(f"{file}:{line}: no exact JIT address where control enters this line "
                         "(the program was loaded outside qstep and its own line info is "
                         "coarser); use func:offset")
    has_code = any(s.source and s.source.line == line for s in in_file)
    merged = None if has_code else merged_line(prog, file, line, in_file)
    if merged is not None and not merged.edges:
        raise UsageError(merged.message())
    if merged is not None:
        checks = merged.checks()
        sites = tuple(prog.sites[index] for index in sorted(checks))
        return Resolved(text, sites, checks, merged.message())
    raise UsageError(_no_code_message(file, line, in_file))


def _no_code_message(file: str, line: int, in_file: list[InsnSite]) -> str:
    live = sorted({s.source.line for s in in_file if s.source and not s.removed})
    removed = {s.source.line for s in in_file if s.source and s.removed}
    if line in removed:
        return f"{file}:{line}: all code of this line was removed by the verifier (dead code)"
    below = [n for n in live if n < line]
    above = [n for n in live if n > line]
    near = ", ".join(str(n) for n in ([below[-1]] if below else []) + ([above[0]] if above else []))
    return (f"line {line} of {file} has no code after optimisation; nearest lines with "
            f"code: {near}")

