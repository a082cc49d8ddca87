"""Programs an object puts in its own prog arrays (``.values = { [0] = &prog }``).

libbpf fills such a prog array when it loads the object, and fails the load when a
target program is not loaded with it; qstep loads those targets too (the agent's
``also`` option). They are the ``.maps`` section's relocations to program symbols.
"""

from __future__ import annotations

import io

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from qstep.bpf.elf import BpfObject


def prog_array_targets(obj: BpfObject) -> list[str]:
    """The programs named in the object's prog array initialisers, in order."""
    elf = ELFFile(io.BytesIO(obj.data))
    rel = elf.get_section_by_name(".rel.maps")
    if not isinstance(rel, RelocationSection):
        return []
    symtab = elf.get_section(rel["sh_link"])
    if not isinstance(symtab, SymbolTableSection):
        return []
    programs = {p.name for p in obj.programs}
    names: list[str] = []
    for r in rel.iter_relocations():
        name = symtab.get_symbol(r["r_info_sym"]).name
        if name in programs and name not in names:
            names.append(name)
    return names
