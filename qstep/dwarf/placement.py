"""Loaded instructions ↔ the object's (section, slot), and where variables live there.

libbpf lays out a program as its function followed by the subprograms it calls,
each copied whole, so a loaded instruction is ``offset + (index - start)`` in the
ELF function of the same name (the names come from BTF func_info).
"""

from __future__ import annotations

from functools import cached_property

from qstep.bpf.elf import BpfObject, Program
from qstep.dwarf.frame import stack_size_from_insns
from qstep.dwarf.model import DwarfModel
from qstep.loaded import InsnSite, LoadedProgram


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
