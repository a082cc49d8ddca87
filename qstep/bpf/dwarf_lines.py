"""Per-section DWARF line table of a BPF object file (via pyelftools).

In a BPF `.o` every program section and `.text` start at address 0, so a line
table address alone does not say which section it is in. Each line sequence
starts with DW_LNE_set_address, and each of those carries one R_BPF_64_ABS64
relocation in `.rel.debug_line` against the section (or a symbol in it). The
k-th set_address of a line program takes the k-th such relocation inside that
program's byte range.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from qstep.errors import ObjectError

R_BPF_64_ABS64 = 2
DW_LNE_SET_ADDRESS = 0x02
INSN_SIZE = 8
UNKNOWN_SECTION = ""
# What pyelftools raises on corrupt DWARF (it also asserts on some inconsistencies).
DECODE_ERRORS = (ELFError, DWARFError, ValueError, KeyError, IndexError, AttributeError,
                  AssertionError, OverflowError, TypeError)


@dataclass(frozen=True)
class LineRow:
    """One DWARF line row mapped to an instruction slot of its section."""

    insn_index: int
    file: str
    line: int
    col: int
    is_stmt: bool


def abs64_sections(elffile: ELFFile, rel_name: str = ".rel.debug_line") -> list[tuple[int, str]]:
    """(offset in the relocated section, target section name) of each ABS64 relocation
    in ``rel_name``, by offset."""
    rel = elffile.get_section_by_name(rel_name)
    if not isinstance(rel, RelocationSection):
        return []
    symtab = elffile.get_section(rel["sh_link"])
    if not isinstance(symtab, SymbolTableSection):
        return []
    out = []
    for r in rel.iter_relocations():
        if r["r_info_type"] != R_BPF_64_ABS64:
            continue
        sym = symtab.get_symbol(r["r_info_sym"])
        shndx = sym["st_shndx"]
        name = elffile.get_section(shndx).name if isinstance(shndx, int) else UNKNOWN_SECTION
        out.append((r["r_offset"], name))
    out.sort()
    return out


def file_name(lineprog: Any, file_index: int) -> str:
    """Path of a line-table file index (DWARF 5 is 0-based, older is 1-based)."""
    header = lineprog.header
    version = header["version"]
    entries = header["file_entry"] or []
    idx = file_index if version >= 5 else file_index - 1
    if not 0 <= idx < len(entries):
        return ""
    entry = entries[idx]
    name = _text(entry.name)
    dirs = header["include_directory"] or []
    didx = entry.dir_index if version >= 5 else entry.dir_index - 1
    if 0 <= didx < len(dirs):
        return os.path.join(_text(dirs[didx]), name)
    return name


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _program_rows(lineprog: Any, relocs: list[tuple[int, str]],
                  out: dict[str, list[LineRow]]) -> None:
    start, end = lineprog.program_start_offset, lineprog.program_end_offset
    sections = iter([name for off, name in relocs if start <= off < end])
    current = UNKNOWN_SECTION
    for entry in lineprog.get_entries():
        if entry.is_extended and entry.command == DW_LNE_SET_ADDRESS:
            current = next(sections, UNKNOWN_SECTION)
        state = entry.state
        if state is None or state.end_sequence:
            continue
        row = LineRow(state.address // INSN_SIZE, file_name(lineprog, state.file), state.line,
                      state.column, bool(state.is_stmt))
        out.setdefault(current, []).append(row)


def section_lines(elffile: ELFFile) -> dict[str, list[LineRow]]:
    """DWARF line rows per ELF section name, in line-program order.

    Rows of sequences whose section cannot be found are under the key "".
    Returns {} when the object has no DWARF line table.
    """
    if not elffile.has_dwarf_info() or elffile.get_section_by_name(".debug_line") is None:
        return {}
    try:
        dwarf = elffile.get_dwarf_info()
        relocs = abs64_sections(elffile)
        out: dict[str, list[LineRow]] = {}
        for cu in dwarf.iter_CUs():
            lineprog = dwarf.line_program_for_CU(cu)
            if lineprog is not None:
                _program_rows(lineprog, relocs, out)
    except DECODE_ERRORS as exc:
        raise ObjectError(f"DWARF line table: cannot decode ({exc})") from exc
    return out
