"""Host-side model of a BPF ELF object file: programs, subprograms, maps, relocations.

Instruction indexes are slot indexes relative to the start of the ELF section that
holds them (the convention of relocations, BTF.ext and DWARF in a `.o`).
Global-data sections (.data*, .rodata*, .bss*) are modelled as single-entry array
maps named after their section.
"""

from __future__ import annotations

import dataclasses
import io
import re
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Section, SymbolTableSection

from qstep.bpf import insn as bi
from qstep.bpf.btf import (
    KIND_ARRAY,
    KIND_DATASEC,
    KIND_PTR,
    KIND_STRUCT,
    VOID,
    Btf,
    BtfExt,
    BtfVarSecInfo,
    LineInfo,
)
from qstep.bpf.dwarf_lines import LineRow, section_lines
from qstep.bpf.helpers import MAP_TYPE_NAMES
from qstep.bpf.insn import Insn, decode, format_insn
from qstep.bpf.uapi import MapType
from qstep.errors import ObjectError

EM_BPF = 247
GLOBAL_DATA_PREFIXES = (".data", ".rodata", ".bss")
# What pyelftools raises on corrupt headers, tables or offsets.
_ELF_ERRORS = (ELFError, struct.error, OverflowError, ValueError, KeyError, IndexError)
_MAP_INT_FIELDS = ("type", "max_entries", "map_flags", "key_size", "value_size", "numa_node",
                   "pinning", "map_extra")


@dataclass(frozen=True)
class Program:
    """A function in an executable section; `insns` are indexed within the section."""

    name: str
    section: str
    offset: int
    insn_count: int
    is_subprog: bool
    insns: tuple[Insn, ...]

    def contains(self, index: int) -> bool:
        """True if slot `index` of the section belongs to this function."""
        return self.offset <= index < self.offset + self.insn_count


@dataclass(frozen=True)
class MapDef:
    """A map declared by the object (BTF-defined in .maps, or a global-data section)."""

    name: str
    section: str
    offset: int
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    key_type_id: int | None = None
    value_type_id: int | None = None
    is_global_data: bool = False

    @property
    def type_name(self) -> str:
        """Map type as a lower-case name such as 'hash' (or the number)."""
        return MAP_TYPE_NAMES.get(self.map_type, str(self.map_type))


@dataclass(frozen=True)
class Reloc:
    """A relocation in a program section; `offset` in bytes, `symbol_section` may be ''."""

    offset: int
    insn_index: int
    type: int
    symbol: str
    symbol_section: str
    symbol_value: int
    is_section_symbol: bool


@dataclass(frozen=True)
class _Sym:
    """The symbol table fields we use."""

    name: str
    section: str
    value: int
    size: int
    type: str


@dataclass
class _Symbols:
    """Symbol table lookups."""

    rows: list[_Sym] = field(default_factory=list)

    def in_section(self, section: str, sym_type: str) -> list[_Sym]:
        """Symbols of `sym_type` (e.g. 'STT_FUNC') in `section`, by value."""
        found = [s for s in self.rows if s.section == section and s.type == sym_type]
        return sorted(found, key=lambda s: s.value)

    def value_of(self, name: str, section: str) -> int | None:
        """Value of symbol `name` defined in `section`."""
        return next((s.value for s in self.rows if s.name == name and s.section == section), None)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ObjectError(f"{path}: no such file") from None
    except OSError as exc:
        raise ObjectError(f"{path}: cannot read ({exc.strerror or exc})") from None


def parser_text(exc: Exception) -> str:
    """pyelftools' complaint in words: "expected 4, found 0" is a structure cut short."""
    text = str(exc) or type(exc).__name__
    cut = re.search(r"expected (\d+), found (\d+)", text)
    if cut:
        return (f"the file ends inside a structure: {cut.group(1)} bytes needed, "
                f"{cut.group(2)} there; truncated or corrupt")
    return text


def _load_elf(path: Path, data: bytes) -> ELFFile:
    if not data.startswith(b"\x7fELF"):
        raise ObjectError(f"{path}: not an ELF file")
    try:
        elf = ELFFile(io.BytesIO(data))
    except ELFError as exc:
        raise ObjectError(f"{path}: malformed ELF ({parser_text(exc)})") from None
    machine = elf.header["e_machine"]
    if machine not in ("EM_BPF", EM_BPF):
        raise ObjectError(f"{path}: ELF machine is {machine}, not BPF (EM_BPF = {EM_BPF})")
    if not elf.little_endian or elf.elfclass != 64:
        raise ObjectError(f"{path}: only 64-bit little-endian BPF objects are supported")
    return elf


def _is_program_section(sec: Section) -> bool:
    return bool(sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR) and sec["sh_type"] == "SHT_PROGBITS" \
        and sec["sh_size"] > 0


def _is_global_data_section(sec: Section) -> bool:
    alloc = bool(sec["sh_flags"] & SH_FLAGS.SHF_ALLOC)
    return alloc and sec.name.startswith(GLOBAL_DATA_PREFIXES) and \
        sec["sh_type"] in ("SHT_PROGBITS", "SHT_NOBITS")


class BpfObject:
    """A parsed BPF object file; use `BpfObject.open(path)`."""

    def __init__(self, path: Path, data: bytes, elf: ELFFile) -> None:
        self.path = path
        self.data = data
        self._elf = elf
        self._symbols = self._read_symbols()
        self.has_btf = self._elf.get_section_by_name(".BTF") is not None
        self.btf = self._read_btf()
        self.btf_ext = self._read_btf_ext()
        self._fix_datasecs()
        self.section_insns: dict[str, list[Insn]] = {}
        self.relocations: dict[str, dict[int, Reloc]] = {}
        self._read_code()
        self.programs: list[Program] = []
        self.subprograms: list[Program] = []
        self._read_functions()
        if not self.programs:
            raise ObjectError(f"{path}: no BPF programs (no function in an executable section "
                              "other than .text)")
        self.maps: list[MapDef] = self._read_btf_maps() + self._read_data_maps()

    @classmethod
    def open(cls, path: str | Path) -> BpfObject:
        """Open and parse a BPF ELF object; raises `ObjectError` with a one-line reason."""
        p = Path(path)
        data = _read(p)
        try:
            return cls(p, data, _load_elf(p, data))
        except _ELF_ERRORS as exc:
            raise ObjectError(f"{p}: malformed ELF ({parser_text(exc)})") from None

    # ---- reading -------------------------------------------------------------------------

    def _read_symbols(self) -> _Symbols:
        syms = _Symbols()
        symtab = self._elf.get_section_by_name(".symtab")
        if isinstance(symtab, SymbolTableSection):
            for s in symtab.iter_symbols():
                syms.rows.append(_Sym(s.name, self._section_name(s["st_shndx"]), s["st_value"],
                                      s["st_size"], s["st_info"]["type"]))
        return syms

    def _section_name(self, shndx: int | str) -> str:
        """Name of section `shndx` ('' for SHN_UNDEF/SHN_ABS and the like)."""
        return self._elf.get_section(shndx).name if isinstance(shndx, int) else ""

    def _read_btf(self) -> Btf:
        sec = self._elf.get_section_by_name(".BTF")
        try:
            return Btf.parse(sec.data()) if sec is not None else Btf([VOID], b"\0")
        except ObjectError as exc:
            raise ObjectError(f"{self.path}: {exc}") from None

    def _read_btf_ext(self) -> BtfExt | None:
        sec = self._elf.get_section_by_name(".BTF.ext")
        if sec is None or not self.has_btf:
            return None
        try:
            return BtfExt.parse(sec.data(), self.btf)
        except ObjectError as exc:
            raise ObjectError(f"{self.path}: {exc}") from None

    def _fix_datasecs(self) -> None:
        """Fill DATASEC sizes and variable offsets from the ELF, as libbpf does."""
        for t in self.btf.types:
            sec = self._elf.get_section_by_name(t.name) if t.kind == KIND_DATASEC else None
            if sec is None:
                continue
            t.size_or_type = sec["sh_size"]
            t.var_secinfos = [self._fixed_secinfo(t.name, vsi) for vsi in t.var_secinfos]

    def _fixed_secinfo(self, section: str, vsi: BtfVarSecInfo) -> BtfVarSecInfo:
        value = self._symbols.value_of(self.btf.type_by_id(vsi.type_id).name, section)
        return vsi if value is None else dataclasses.replace(vsi, offset=value)

    def _read_code(self) -> None:
        for sec in self._elf.iter_sections():
            if _is_program_section(sec):
                try:
                    self.section_insns[sec.name] = decode(sec.data())
                except ObjectError as exc:
                    raise ObjectError(f"{self.path}: section {sec.name}: {exc}") from None
                self.relocations[sec.name] = {}
        for sec in self._elf.iter_sections():
            if isinstance(sec, RelocationSection):
                target = self._elf.get_section(sec["sh_info"]).name
                if target in self.relocations:
                    self.relocations[target] = self._read_relocs(sec)

    def _read_relocs(self, rel: RelocationSection) -> dict[int, Reloc]:
        symtab = self._elf.get_section(rel["sh_link"])
        out: dict[int, Reloc] = {}
        if not isinstance(symtab, SymbolTableSection):
            return out
        for r in rel.iter_relocations():
            sym = symtab.get_symbol(r["r_info_sym"])
            sec_name = self._section_name(sym["st_shndx"])
            is_sec = sym["st_info"]["type"] == "STT_SECTION"
            off = r["r_offset"]
            out[off // bi.INSN_SIZE] = Reloc(off, off // bi.INSN_SIZE, r["r_info_type"],
                                             sec_name if is_sec else sym.name, sec_name,
                                             sym["st_value"], is_sec)
        return out

    def _read_functions(self) -> None:
        for section, insns in self.section_insns.items():
            total = insns[-1].index + insns[-1].size if insns else 0
            funcs = self._symbols.in_section(section, "STT_FUNC")
            if not funcs:  # e.g. hand-written assembly: the whole section is one program
                funcs = [_Sym(section, section, 0, total * bi.INSN_SIZE, "STT_FUNC")]
            for i, sym in enumerate(funcs):
                start = sym.value // bi.INSN_SIZE
                if sym.size:
                    end = (sym.value + sym.size) // bi.INSN_SIZE
                else:
                    end = funcs[i + 1].value // bi.INSN_SIZE if i + 1 < len(funcs) else total
                prog = Program(sym.name, section, start, end - start, section == ".text",
                               tuple(x for x in insns if start <= x.index < end))
                (self.subprograms if prog.is_subprog else self.programs).append(prog)

    def _read_btf_maps(self) -> list[MapDef]:
        if self._elf.get_section_by_name(".maps") is None:
            return []
        if not self.has_btf:
            raise ObjectError(f"{self.path}: section .maps needs BTF, but there is no .BTF")
        datasec = self.btf.find_by_name(".maps", KIND_DATASEC)
        if datasec is None:
            return []
        maps = [self._btf_map(vsi.type_id, vsi.offset) for vsi in datasec.var_secinfos]
        return sorted(maps, key=lambda m: m.offset)

    def _btf_map(self, var_id: int, offset: int) -> MapDef:
        var = self.btf.type_by_id(var_id)
        struct = self.btf.resolve(var.ref)
        if struct.kind != KIND_STRUCT:
            raise ObjectError(f"{self.path}: map '{var.name}': definition is not a struct")
        ints: dict[str, int] = {}
        types: dict[str, int] = {}
        for m in self.btf.members(struct.id):
            ptr = self.btf.resolve(m.type_id)
            if ptr.kind != KIND_PTR:
                continue
            target = self.btf.resolve(ptr.ref)
            if m.name in _MAP_INT_FIELDS and target.kind == KIND_ARRAY and target.array:
                ints[m.name] = target.array.nelems
            elif m.name in ("key", "value"):
                types[m.name] = ptr.ref
        key_id, value_id = types.get("key"), types.get("value")
        return MapDef(
            name=var.name, section=".maps", offset=offset,
            map_type=ints.get("type", 0),
            key_size=self.btf.size_of(key_id) if key_id else ints.get("key_size", 0),
            value_size=self.btf.size_of(value_id) if value_id else ints.get("value_size", 0),
            max_entries=ints.get("max_entries", 0), map_flags=ints.get("map_flags", 0),
            key_type_id=key_id, value_type_id=value_id,
        )

    def _read_data_maps(self) -> list[MapDef]:
        out = []
        for sec in self._elf.iter_sections():
            if not _is_global_data_section(sec):
                continue
            ds = self.btf.find_by_name(sec.name, KIND_DATASEC)
            out.append(MapDef(sec.name, sec.name, 0, MapType.ARRAY, 4, sec["sh_size"], 1,
                              value_type_id=ds.id if ds else None, is_global_data=True))
        return out

    # ---- queries -------------------------------------------------------------------------

    @property
    def functions(self) -> list[Program]:
        """Programs followed by subprograms."""
        return self.programs + self.subprograms

    def find_program(self, name_or_section: str) -> Program:
        """Program by function name, or by section name when that section has one program."""
        for p in self.programs:
            if p.name == name_or_section:
                return p
        in_section = [p for p in self.programs if p.section == name_or_section]
        if len(in_section) == 1:
            return in_section[0]
        available = ", ".join(f"{p.name} ({p.section})" for p in self.programs)
        if in_section:
            raise ObjectError(f"section '{name_or_section}' has several programs; pick one of: "
                              + ", ".join(p.name for p in in_section))
        raise ObjectError(f"{self.path}: no program '{name_or_section}'; available: {available}")

    def function_at(self, section: str, index: int) -> Program | None:
        """The program or subprogram containing slot `index` of `section`."""
        for p in self.functions:
            if p.section == section and p.contains(index):
                return p
        return None

    def kfunc_calls(self, function: str) -> dict[int, str]:
        """Kfunc calls of a function (calls of an undefined, extern symbol): offset in
        the function → the kfunc's name."""
        prog = next((p for p in self.functions if p.name == function), None)
        if prog is None:
            return {}
        relocs = self.relocations.get(prog.section, {})
        return {ins.index - prog.offset: relocs[ins.index].symbol for ins in prog.insns
                if ins.is_call and ins.index in relocs and not relocs[ins.index].symbol_section}

    def section_data(self, name: str) -> bytes:
        """The bytes of a section as the object holds them (zeros for .bss-like ones)."""
        sec = self._elf.get_section_by_name(name)
        if sec is None:
            raise ObjectError(f"{self.path}: no section {name}")
        return bytes(sec["sh_size"]) if sec["sh_type"] == "SHT_NOBITS" else sec.data()

    def find_map(self, name: str) -> MapDef:
        """Map by name (global-data maps are named after their section)."""
        for m in self.maps:
            if m.name == name:
                return m
        names = ", ".join(m.name for m in self.maps) or "none"
        raise ObjectError(f"{self.path}: no map '{name}'; available: {names}")

    def line_table(self, section: str) -> list[LineInfo]:
        """BTF.ext line_info of `section` (instruction offsets), [] without BTF.ext."""
        return self.btf_ext.line_info.get(section, []) if self.btf_ext else []

    @cached_property
    def dwarf_lines(self) -> dict[str, list[LineRow]]:
        """DWARF line rows per section (see `qstep.bpf.dwarf_lines`)."""
        try:
            return section_lines(self._elf)
        except ObjectError as exc:
            raise ObjectError(f"{self.path}: {exc}") from None

    def call_target(self, section: str, insn: Insn) -> tuple[str, int] | None:
        """(section, slot index) a bpf-to-bpf call goes to, resolving its relocation.

        None for other instructions and for calls of undefined (extern, e.g. kfunc) symbols.
        """
        if not insn.is_pseudo_call:
            return None
        rel = self.relocations.get(section, {}).get(insn.index)
        if rel is None:
            return section, insn.index + 1 + insn.imm
        if not rel.symbol_section:
            return None
        return rel.symbol_section, rel.symbol_value // bi.INSN_SIZE + insn.imm + 1

    def ldimm64_map(self, section: str, insn: Insn) -> tuple[MapDef, int] | None:
        """(map, offset in its value) referenced by a relocated ld_imm64, else None."""
        rel = self.relocations.get(section, {}).get(insn.index)
        if rel is None or not insn.is_ldimm64:
            return None
        for m in self.maps:
            if m.section != rel.symbol_section:
                continue
            if m.is_global_data:
                return m, rel.symbol_value + insn.imm
            if m.offset == rel.symbol_value:
                return m, 0
        return None

    def format_insn(self, section: str, insn: Insn) -> str:
        """bpftool-style text with relocations applied symbolically.

        Map loads print as ``r1 = map[flows]`` or ``r1 = map[.bss][0]+8``; calls
        resolved through relocations (subprograms, extern kfuncs) as ``call name``.
        """
        found = self.ldimm64_map(section, insn)
        if found is not None:
            m, off = found
            src = bi.PSEUDO_MAP_IDX_VALUE if m.is_global_data else bi.PSEUDO_MAP_IDX
            pseudo = dataclasses.replace(insn, src=src, imm=self.maps.index(m), imm64=off << 32)
            return format_insn(pseudo, map_name=lambda _i: m.name)
        rel = self.relocations.get(section, {}).get(insn.index)
        if insn.is_call and rel is not None:
            target = self.call_target(section, insn)
            func = self.function_at(*target) if target else None
            if func is not None and target and func.offset == target[1]:
                return f"call {func.name}"
            if not rel.symbol_section:
                return f"call {rel.symbol}"
        return format_insn(insn)
