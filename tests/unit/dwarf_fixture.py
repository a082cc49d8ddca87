"""A DWARF fixture in the fixed (negative) r10 offset convention, made from a clang-19 object.

LLVM after PR #204722 emits ``DW_OP_fbreg``/``DW_OP_breg10`` offsets from r10
(negative); clang-19 emits them from ``r10 - StackSize`` (non-negative). This
rewrites every such offset of a clang-19 object in place (``off - StackSize``,
SLEB128 padded to the original length) in ``.debug_info`` expressions and
``.debug_loclists`` entries, so both conventions describe the same code.
"""

from __future__ import annotations

import io
from typing import Any

from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.locationlists import LocationEntry, LocationParser
from elftools.elf.elffile import ELFFile

from qstep.bpf.elf import BpfObject
from qstep.dwarf.frame import stack_size_from_insns
from qstep.dwarf.model import DwarfModel


def sleb(value: int, length: int) -> bytes:
    out = bytearray()
    for _ in range(length - 1):
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    if not -64 <= value <= 63:
        raise ValueError("does not fit")
    out.append(value & 0x7F)
    return bytes(out)


def _uleb_len(value: int) -> int:
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


class _Patcher:
    def __init__(self, data: bytes) -> None:
        self.out = bytearray(data)
        self.elf = ELFFile(io.BytesIO(data))
        self.dwarf = self.elf.get_dwarf_info()
        self.parser = DWARFExprParser(self.dwarf.structs)
        self.patched = 0

    def section_offset(self, name: str) -> int:
        sec = self.elf.get_section_by_name(name)
        assert sec is not None
        return int(sec["sh_offset"])

    def expr(self, file_off: int, expr: list[int], stack_size: int) -> None:
        ops = self.parser.parse_expr(expr)
        for i, op in enumerate(ops):
            if op.op_name not in ("DW_OP_fbreg", "DW_OP_breg10") or op.args[-1] < 0:
                continue
            end = ops[i + 1].offset if i + 1 < len(ops) else len(expr)
            start = op.offset + 1
            new = sleb(op.args[-1] - stack_size, end - start)
            self.out[file_off + start:file_off + end] = new
            self.patched += 1

    def die(self, die: Any, stack_size: int) -> None:
        attr = die.attributes.get("DW_AT_location")
        if attr is not None:
            if attr.form == "DW_FORM_exprloc":
                start = self.section_offset(".debug_info") + attr.offset + _uleb_len(
                    len(attr.value))
                self.expr(start, attr.value, stack_size)
            else:
                self.loclist(die, attr, stack_size)
        for child in die.iter_children():
            self.die(child, stack_size)

    def loclist(self, die: Any, attr: Any, stack_size: int) -> None:
        base = self.section_offset(".debug_loclists")
        entries = LocationParser(self.dwarf.location_lists()).parse_from_attribute(
            attr, die.cu.header.version, die)
        for e in entries:
            if isinstance(e, LocationEntry):
                start = e.entry_offset + e.entry_length - len(e.loc_expr)
                self.expr(base + start, e.loc_expr, stack_size)


def fixed_convention(obj: BpfObject) -> tuple[bytes, int]:
    """(patched object bytes, number of offsets rewritten)."""
    model = DwarfModel.from_bytes(obj.data)
    patcher = _Patcher(obj.data)
    for func in model.functions:
        insns = [i for i in obj.section_insns[func.section] if func.lo <= i.index < func.hi]
        die = patcher.dwarf.get_DIE_from_refaddr(func.die_offset)
        patcher.die(die, stack_size_from_insns(insns))
    return bytes(patcher.out), patcher.patched
