"""The DWARF model of a BPF object: functions, inlined calls, variables in scope and
their locations at every instruction, globals, and types.

Addresses in a BPF ``.o`` are per ELF section (each program section and ``.text``
start at 0). A function lives in one section, so everything nested in a
subprogram DIE (inlined calls, lexical blocks, location lists) is in the
subprogram's section; that section comes from the ``.debug_addr`` relocation of
the subprogram's ``DW_AT_low_pc`` (``addrx``). Instruction indexes are section
slots (byte address / 8), the convention of ``qstep.bpf.elf``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.locationlists import BaseAddressEntry, LocationEntry, LocationExpr
from elftools.dwarf.ranges import BaseAddressEntry as RangeBase
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from qstep.bpf.dwarf_lines import DECODE_ERRORS, abs64_sections, file_name
from qstep.bpf.insn import INSN_SIZE
from qstep.dwarf.location import Location, Op, Piece
from qstep.dwarf.ops import parse_location
from qstep.dwarf.types import CType, TypeTable, die_name
from qstep.errors import ObjectError

OPTIMIZED_OUT = None
_SCOPE_TAGS = ("DW_TAG_subprogram", "DW_TAG_inlined_subroutine", "DW_TAG_lexical_block")
_VAR_TAGS = ("DW_TAG_formal_parameter", "DW_TAG_variable")


@dataclass
class Variable:
    """A C variable or parameter; ``locations`` is [(lo, hi, Location)] in insn slots."""

    name: str
    type: CType
    is_param: bool
    decl_line: int
    locations: list[tuple[int, int, Location]] = field(default_factory=list)
    whole_scope: Location | None = None  # a single expression valid wherever in scope

    def location_at(self, insn: int) -> Location | None:
        """Where the value is when ``insn`` is about to run; None: optimized out there."""
        if self.whole_scope is not None:
            return self.whole_scope
        for lo, hi, loc in self.locations:
            if lo <= insn < hi:
                return None if loc.optimized_out else loc
        return OPTIMIZED_OUT

    def available_ranges(self) -> list[tuple[int, int]]:
        return [(lo, hi) for lo, hi, loc in self.locations if not loc.optimized_out]


@dataclass
class Block:
    """A function body, an inlined call or a lexical block (``ranges`` in insn slots)."""

    kind: str  # "function" | "inlined" | "lexical"
    name: str
    ranges: list[tuple[int, int]]
    variables: list[Variable] = field(default_factory=list)
    children: list[Block] = field(default_factory=list)
    call_file: str = ""
    call_line: int = 0
    call_column: int = 0

    def contains(self, insn: int) -> bool:
        return any(lo <= insn < hi for lo, hi in self.ranges)


@dataclass(frozen=True)
class Function:
    """A concrete (out-of-line) function: its section and [lo, hi) instruction slots."""

    name: str
    section: str
    lo: int
    hi: int
    die_offset: int


@dataclass(frozen=True)
class Frame:
    """One source-level frame at an instruction: a function or an inlined call of one."""

    function: str
    inlined: bool
    variables: tuple[Variable, ...]  # parameters first, innermost block's variables first
    call_file: str = ""  # for an inlined frame: where its caller called it
    call_line: int = 0
    call_column: int = 0

    def find(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)

    @property
    def params(self) -> list[Variable]:
        return [v for v in self.variables if v.is_param]

    @property
    def locals(self) -> list[Variable]:
        return [v for v in self.variables if not v.is_param]


@dataclass(frozen=True)
class GlobalVar:
    """A global variable: its section (``.data``, ``.bss``, ``.maps``...) and offset."""

    name: str
    type: CType
    section: str
    offset: int


class DwarfModel:
    """Variables, inlined calls and types of one object (built lazily, per function)."""

    def __init__(self, elf: ELFFile) -> None:
        self._elf = elf
        self._dwarf = elf.get_dwarf_info() if elf.has_dwarf_info() else None
        self.types = TypeTable()
        self._addr_relocs = dict(abs64_sections(elf, ".rel.debug_addr"))
        self._blocks: dict[int, Block] = {}
        self._parser = (DWARFExprParser(self._dwarf.structs) if self._dwarf is not None
                        else None)

    @property
    def has_dwarf(self) -> bool:
        """Whether the object has DWARF at all (static linkers may drop it)."""
        return self._dwarf is not None

    @classmethod
    def from_bytes(cls, data: bytes) -> DwarfModel:
        try:
            return cls(ELFFile(io.BytesIO(data)))
        except DECODE_ERRORS as exc:
            raise ObjectError(f"DWARF: cannot decode ({exc})") from exc

    # -- functions ------------------------------------------------------
    def _cus(self) -> Iterator[Any]:
        return iter(self._dwarf.iter_CUs()) if self._dwarf is not None else iter(())

    @cached_property
    def functions(self) -> list[Function]:
        """Every function with code, with its section."""
        out = []
        try:
            for cu in self._cus():
                for die in cu.get_top_DIE().iter_children():
                    func = self._function(cu, die)
                    if func is not None:
                        out.append(func)
        except DECODE_ERRORS as exc:
            raise ObjectError(f"DWARF: cannot decode ({exc})") from exc
        return out

    def _function(self, cu: Any, die: Any) -> Function | None:
        attrs = die.attributes
        if die.tag != "DW_TAG_subprogram" or "DW_AT_low_pc" not in attrs:
            return None
        low = attrs["DW_AT_low_pc"]
        high = attrs["DW_AT_high_pc"].value
        hi = high if attrs["DW_AT_high_pc"].form.startswith("DW_FORM_addr") else low.value + high
        name = die_name(die)
        section = self._addr_section(cu, low.raw_value) if low.form.startswith(
            "DW_FORM_addrx") else self._symbol_section(name)
        return Function(name, section, low.value // INSN_SIZE, hi // INSN_SIZE, die.offset)

    def _addr_section(self, cu: Any, index: int) -> str:
        base = cu.get_top_DIE().attributes["DW_AT_addr_base"].value
        return self._addr_relocs.get(base + index * cu.header.address_size, "")

    def _symbol_section(self, name: str) -> str:
        symtab = self._elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            return ""
        for sym in symtab.get_symbol_by_name(name) or []:
            if isinstance(sym["st_shndx"], int):
                return str(self._elf.get_section(sym["st_shndx"]).name)
        return ""

    def function_at(self, section: str, insn: int) -> Function | None:
        return next((f for f in self.functions
                     if f.section == section and f.lo <= insn < f.hi), None)

    # -- scopes ---------------------------------------------------------
    def body(self, func: Function) -> Block:
        """The block tree of a function (built on first use)."""
        block = self._blocks.get(func.die_offset)
        if block is None:
            assert self._dwarf is not None
            die = self._dwarf.get_DIE_from_refaddr(func.die_offset)
            try:
                block = self._block(die, "function", [(func.lo, func.hi)])
            except DECODE_ERRORS as exc:
                raise ObjectError(f"DWARF of {func.name}: cannot decode ({exc})") from exc
            self._blocks[func.die_offset] = block
        return block

    def frames_at(self, section: str, insn: int) -> list[Frame]:
        """Source frames active at an instruction, innermost (inlined) first."""
        func = self.function_at(section, insn)
        if func is None:
            return []
        chain: list[list[Block]] = [[self.body(func)]]
        block = chain[0][0]
        while True:
            inner = next((c for c in block.children if c.contains(insn)), None)
            if inner is None:
                break
            if inner.kind == "inlined":
                chain.append([inner])
            else:
                chain[-1].append(inner)
            block = inner
        frames = [self._frame(blocks, insn) for blocks in chain]
        return frames[::-1]

    @staticmethod
    def _frame(blocks: list[Block], insn: int) -> Frame:
        head = blocks[0]
        ordered: list[Variable] = []
        for b in reversed(blocks):
            ordered.extend(v for v in b.variables
                           if v.name not in {o.name for o in ordered})
        params = [v for v in head.variables if v.is_param]
        rest = [v for v in ordered if not v.is_param]
        return Frame(head.name, head.kind == "inlined", tuple(params + rest),
                     head.call_file, head.call_line, head.call_column)

    def _block(self, die: Any, kind: str, ranges: list[tuple[int, int]]) -> Block:
        origin = _origin(die)
        block = Block(kind, die_name(origin or die), ranges)
        if kind == "inlined":
            attrs = die.attributes
            block.call_line = _int_attr(attrs, "DW_AT_call_line")
            block.call_column = _int_attr(attrs, "DW_AT_call_column")
            block.call_file = self._call_file(die)
        seen: set[int] = set()
        for child in die.iter_children():
            if child.tag in _VAR_TAGS:
                var = self._variable(child)
                if var is not None:
                    block.variables.append(var)
                    child_origin = _origin(child)
                    seen.add((child_origin or child).offset)
            elif child.tag in _SCOPE_TAGS:
                child_kind = "inlined" if child.tag == "DW_TAG_inlined_subroutine" else (
                    "lexical")
                block.children.append(self._block(child, child_kind, self._ranges(child)))
        if origin is not None:
            block.variables.extend(self._missing(origin, seen))
        return block

    def _missing(self, origin: Any, seen: set[int]) -> list[Variable]:
        """Variables of an abstract origin with no concrete instance: optimized out."""
        out = []
        for child in origin.iter_children():
            if child.tag in _VAR_TAGS and child.offset not in seen and die_name(child):
                out.append(Variable(die_name(child), self.types.from_attr(child),
                                    child.tag == "DW_TAG_formal_parameter",
                                    _int_attr(child.attributes, "DW_AT_decl_line")))
        return out

    def _variable(self, die: Any) -> Variable | None:
        named = _origin(die) or die
        name = die_name(named)
        if not name:
            return None
        var = Variable(name, self.types.from_attr(named),
                       die.tag == "DW_TAG_formal_parameter",
                       _int_attr(named.attributes, "DW_AT_decl_line"))
        attrs = die.attributes
        if "DW_AT_const_value" in attrs:
            var.whole_scope = _const_location(attrs["DW_AT_const_value"].value, var.type)
        elif "DW_AT_location" in attrs:
            self._locations(die, var)
        return var

    def _locations(self, die: Any, var: Variable) -> None:
        assert self._dwarf is not None
        attr = die.attributes["DW_AT_location"]
        lp = self._dwarf.location_lists()
        from elftools.dwarf.locationlists import LocationParser
        parsed = LocationParser(lp).parse_from_attribute(attr, die.cu.header.version, die)
        if isinstance(parsed, LocationExpr):
            var.whole_scope = self._expr(die.cu, parsed.loc_expr)
            return
        base = 0
        for entry in parsed:
            if isinstance(entry, BaseAddressEntry):
                base = entry.base_address
            elif isinstance(entry, LocationEntry):
                lo = entry.begin_offset + (0 if entry.is_absolute else base)
                hi = entry.end_offset + (0 if entry.is_absolute else base)
                var.locations.append((lo // INSN_SIZE, hi // INSN_SIZE,
                                      self._expr(die.cu, entry.loc_expr)))

    def _expr(self, cu: Any, expr: list[int]) -> Location:
        assert self._parser is not None
        return parse_location(expr, self._parser, lambda off: _convert_type(cu, off),
                              lambda index: self._global_addr(cu, index))

    def _global_addr(self, cu: Any, index: int) -> tuple[str, int]:
        assert self._dwarf is not None
        return self._addr_section(cu, index), self._dwarf.get_addr(cu, index)

    def _ranges(self, die: Any) -> list[tuple[int, int]]:
        attrs = die.attributes
        if "DW_AT_low_pc" in attrs:
            lo = attrs["DW_AT_low_pc"].value
            high = attrs["DW_AT_high_pc"]
            hi = high.value if high.form.startswith("DW_FORM_addr") else lo + high.value
            return [(lo // INSN_SIZE, hi // INSN_SIZE)]
        if "DW_AT_ranges" not in attrs:
            return []
        assert self._dwarf is not None
        rl = self._dwarf.range_lists()
        if rl is None:
            return []
        entries = rl.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=die.cu)
        out, base = [], 0
        for e in entries:
            if isinstance(e, RangeBase):
                base = e.base_address
            else:
                add = 0 if e.is_absolute else base
                out.append(((e.begin_offset + add) // INSN_SIZE,
                            (e.end_offset + add) // INSN_SIZE))
        return out

    def _call_file(self, die: Any) -> str:
        assert self._dwarf is not None
        index = _int_attr(die.attributes, "DW_AT_call_file")
        lineprog = self._dwarf.line_program_for_CU(die.cu)
        return file_name(lineprog, index) if lineprog is not None else ""

    # -- globals and types ---------------------------------------------
    @cached_property
    def globals(self) -> dict[str, GlobalVar]:
        """Global variables with a static address, by name."""
        out: dict[str, GlobalVar] = {}
        for cu in self._cus():
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_variable" or "DW_AT_location" not in die.attributes:
                    continue
                loc = self._expr(cu, die.attributes["DW_AT_location"].value)
                ops = loc.pieces[0].ops
                if len(loc.pieces) == 1 and len(ops) == 1 and ops[0].name == "addr":
                    section, offset = ops[0].args
                    out[die_name(die)] = GlobalVar(die_name(die), self.types.from_attr(die),
                                                    section, offset)
        return out

    def find_type(self, name: str) -> CType | None:
        """A named type: ``struct X``, ``union X``, ``enum X`` or a typedef/base name."""
        kind, _, bare = name.partition(" ") if name.split(" ")[0] in (
            "struct", "union", "enum") else ("", "", name)
        tags = {"struct": "DW_TAG_structure_type", "union": "DW_TAG_union_type",
                "enum": "DW_TAG_enumeration_type", "": None}
        for cu in self._cus():
            for die in cu.iter_DIEs():
                if die_name(die) != bare.strip():
                    continue
                if tags[kind] is None and die.tag in ("DW_TAG_typedef", "DW_TAG_base_type"):
                    return self.types.of(die)
                if die.tag == tags[kind] and not die.attributes.get("DW_AT_declaration"):
                    return self.types.of(die)
        return None


def _int_attr(attrs: Any, name: str) -> int:
    attr = attrs.get(name)
    return int(attr.value) if attr is not None else 0


def _origin(die: Any) -> Any | None:
    """The abstract origin (or declaration) a concrete DIE refers to, followed to its end."""
    current = None
    node = die
    for _ in range(8):
        key = next((k for k in ("DW_AT_abstract_origin", "DW_AT_specification")
                    if k in node.attributes), None)
        if key is None:
            break
        node = node.get_DIE_from_attribute(key)
        current = node
    return current


def _convert_type(cu: Any, offset: int) -> tuple[int, bool]:
    """(width in bits, signed) of DW_OP_convert's base type. LLVM names these types
    ``DW_ATE_unsigned_<bits>`` (``_1`` for a bool: 1 bit in a 1-byte type)."""
    die = cu.get_DIE_from_refaddr(cu.cu_offset + offset)
    attrs = die.attributes
    bits = _int_attr(attrs, "DW_AT_bit_size")
    named = re.fullmatch(r"DW_ATE_(?:un)?signed(?:_char)?_(\d+)", die_name(die))
    if not bits:
        bits = int(named.group(1)) if named else _int_attr(attrs, "DW_AT_byte_size") * 8
    return bits, _int_attr(attrs, "DW_AT_encoding") in (0x05, 0x06)


def _const_location(value: Any, ctype: CType) -> Location:
    if isinstance(value, int):
        return Location((Piece(None, (Op("const", (value,)), Op("stack_value"))),))
    data = bytes(value)
    return Location((Piece(None, (Op("implicit_value", (len(data), data)),)),))
