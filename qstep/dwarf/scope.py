"""The C names visible at one loaded instruction, for compiling C expressions there
(``qstep.expr.lower``): variables of every active frame (inlined calls included),
with the location valid at that instruction, and globals at their guest addresses."""

from __future__ import annotations

from qstep.bpf.elf import BpfObject
from qstep.dwarf.copies import places_like
from qstep.dwarf.location import FRAME_REG, MASK64
from qstep.dwarf.model import DwarfModel, Variable
from qstep.dwarf.placement import Placement
from qstep.dwarf.types import CType
from qstep.expr.ast import Binary, Expr, Mem, Num, Reg
from qstep.expr.lower import VarRef
from qstep.loaded import InsnSite, LoadedProgram

GLOBAL_SECTIONS = (".data", ".rodata", ".bss")


def line_ranges(lines: set[int]) -> str:
    """``{3, 4, 5, 9}`` → ``3-5, 9``."""
    out: list[str] = []
    for n in sorted(lines):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


class InsnScope:
    """``qstep.expr.lower.LowerEnv`` at ``site`` of ``prog``."""

    def __init__(self, obj: BpfObject, model: DwarfModel, prog: LoadedProgram,
                 site: InsnSite) -> None:
        self.obj = obj
        self.model = model
        self.prog = prog
        self.site = site
        self.places = Placement(obj)
        self.place = self.places.place(site)
        self.stack_size = self.places.stack_size(site.function.name)
        self._bases = self.places.global_bases(prog)

    def _where(self) -> str:
        src = self.site.source
        return f"{src.file.rsplit('/', 1)[-1]}:{src.line}" if src else f"insn {self.site.index}"

    def _lines(self, var: Variable) -> set[int]:
        assert self.place is not None
        rows = self.obj.dwarf_lines.get(self.place[0], [])
        ranges = var.available_ranges() or ([(0, 1 << 30)] if var.whole_scope else [])
        return {r.line for r in rows if r.line and any(lo <= r.insn_index < hi
                                                       for lo, hi in ranges)}

    def variable(self, name: str) -> VarRef | None:
        if self.place is None:
            return None
        for frame in self.model.frames_at(*self.place):
            var = frame.find(name)
            if var is None:
                continue
            loc = var.location_at(self.place[1])
            why = ""
            if loc is None:
                lines = self._lines(var)
                why = (f"{name} is optimized out at {self._where()}"
                       + (f"; it is available at lines {line_ranges(lines)}" if lines
                          else "; DWARF gives it no location anywhere"))
            return VarRef(name, var.type, loc, why)
        return None

    def global_address(self, name: str) -> tuple[int, CType] | None:
        glob = self.model.globals.get(name)
        if glob is None or not glob.section.startswith(GLOBAL_SECTIONS):
            return None
        base = self._bases.get(glob.section)
        return (base + glob.offset, glob.type) if base is not None else None

    def find_type(self, name: str) -> CType | None:
        return self.model.find_type(name)

    def entry_place(self, n: int) -> Expr | None:
        places = places_like(self.prog, self.site.function, self.site.index, ("entry", n))
        regs = sorted(k for kind, k in places if kind == "r")
        if regs:
            return Reg(regs[0])
        slots = sorted(off for kind, off in places if kind == "fp")
        if slots:
            return Mem(Binary("+", Reg(FRAME_REG), Num(slots[0] & MASK64)), 8)
        return None

    def map_value_type(self, name: str) -> CType | None:
        info = self.prog.maps.get(name)
        if info is None or not info.btf_value_type_id:
            return None
        ctype = self.model.find_type(self.prog.btf.type_name(info.btf_value_type_id))
        return ctype if ctype is not None and ctype.byte_size == info.value_size else None
