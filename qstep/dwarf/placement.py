"""Loaded instructions ↔ the object's (section, slot), and where variables live there.

libbpf lays out a program as its function followed by the subprograms it calls,
each copied whole, so a loaded instruction is ``offset + (index - start)`` in the
ELF function of the same name (the names come from BTF func_info).
"""

from __future__ import annotations

from functools import cached_property

import capstone

from qstep.bpf.elf import BpfObject, Program
from qstep.dwarf.frame import stack_size_from_insns
from qstep.dwarf.model import DwarfModel
from qstep.loaded import InsnSite, LoadedProgram

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


class Placement:
    """Where each loaded instruction of ``prog`` is in ``obj``."""

    def __init__(self, obj: BpfObject) -> None:
        self.obj = obj

    @cached_property
    def _by_name(self) -> dict[str, Program]:
        return {p.name: p for p in self.obj.functions}

    def place(self, site: InsnSite) -> tuple[str, int] | None:
        """(ELF section, slot) of a loaded instruction (None: not from this object)."""
        prog = self._by_name.get(site.function.name)
        if prog is None:
            return None
        return prog.section, prog.offset + site.index - site.function.start_insn

    def global_bases(self, prog: LoadedProgram) -> dict[str, int]:
        """Guest address of each global-data section, from the JIT's ``movabs`` of a
        ``ld_imm64`` that refers to it (the kernel patched the map value address in)."""
        out: dict[str, int] = {}
        for site in prog.sites.values():
            if not site.insn.is_ldimm64 or site.jit_start is None or site.jit_end is None:
                continue
            place = self.place(site)
            elf_insn = next((i for i in self.obj.section_insns.get(place[0], [])
                             if i.index == place[1]), None) if place else None
            found = (self.obj.ldimm64_map(place[0], elf_insn)
                     if place and elf_insn is not None else None)
            if found is None or not found[0].is_global_data or found[0].section in out:
                continue
            imm = movabs_imm(prog.jit_bytes(site.jit_start, site.jit_end))
            if imm is not None:
                out[found[0].section] = imm - found[1]
        return out

    def stack_size(self, function_name: str) -> int:
        """StackSize of a function (clang-19's frame offsets need it)."""
        prog = self._by_name.get(function_name)
        return stack_size_from_insns(prog.insns) if prog is not None else 0


def variables_text(model: DwarfModel, places: Placement, site: InsnSite) -> str:
    """Every variable available before ``site`` runs, innermost frame first: ``name@loc``
    where it lives (``x@r8 key@[r10-16] p@{?:4, r1:4}``), ``name=value`` when DWARF
    computes it (``n=16``, ``k=r10-16``: the address itself)."""
    place = places.place(site)
    if place is None:
        return ""
    size = places.stack_size(site.function.name)
    seen: list[str] = []
    for frame in model.frames_at(*place):
        for var in frame.variables:
            loc = var.location_at(place[1])
            if loc is not None:
                desc = loc.describe(size)
                text = f"{var.name}{desc}" if desc.startswith("=") else f"{var.name}@{desc}"
                if text not in seen:
                    seen.append(text)
    return " ".join(seen)


def annotate(obj: BpfObject, prog: LoadedProgram) -> dict[int, str]:
    """Loaded instruction index → its variables text (for ``disasm --vars``)."""
    model = DwarfModel.from_bytes(obj.data)
    places = Placement(obj)
    return {i: variables_text(model, places, s) for i, s in prog.sites.items()}


def movabs_imm(code: bytes) -> int | None:
    for ins in _CS.disasm(code, 0):
        if ins.mnemonic == "movabs":
            return int(ins.op_str.split(", ")[1], 0)
    return None
