"""Lay out one program of an ELF object with its subprograms, ready for `run_program`.

The program's function comes first (slot 0), then all of ``.text``. Bpf-to-bpf
calls are re-targeted to the flat layout, and map references (relocated ld_imm64)
become ``src=PSEUDO_MAP_IDX`` (imm = index in ``obj.maps``) or, for global data,
``src=PSEUDO_MAP_IDX_VALUE`` with the value offset in the upper half, as libbpf
encodes them.
"""

from __future__ import annotations

import dataclasses

from qstep.bpf import insn as bi
from qstep.bpf.elf import BpfObject
from qstep.bpf.insn import Insn
from qstep.oracle.interp import OracleError


def _place(obj: BpfObject, name: str) -> tuple[dict[tuple[str, int], int], list[tuple[str, Insn]]]:
    prog = obj.find_program(name)
    text = obj.section_insns.get(".text", [])
    where: dict[tuple[str, int], int] = {}
    order: list[tuple[str, Insn]] = []
    for i in prog.insns:
        where[(prog.section, i.index)] = i.index - prog.offset
        order.append((prog.section, i))
    for i in text:
        where[(".text", i.index)] = prog.insn_count + i.index
        order.append((".text", i))
    return where, order


def _map_ref(obj: BpfObject, section: str, insn: Insn) -> Insn:
    found = obj.ldimm64_map(section, insn)
    if found is None:
        return insn
    m, off = found
    idx = obj.maps.index(m)
    if m.is_global_data:
        return dataclasses.replace(insn, src=bi.PSEUDO_MAP_IDX_VALUE, imm=idx,
                                   imm64=idx | (off << 32))
    return dataclasses.replace(insn, src=bi.PSEUDO_MAP_IDX, imm=idx, imm64=idx)


def _relocate(obj: BpfObject, where: dict[tuple[str, int], int], section: str,
              insn: Insn) -> Insn:
    new = dataclasses.replace(insn, index=where[(section, insn.index)])
    if insn.is_ldimm64:
        return dataclasses.replace(_map_ref(obj, section, insn), index=new.index)
    target = obj.call_target(section, insn)
    if target is None:
        return new
    if target not in where:
        raise OracleError(f"call at {section}:{insn.index} goes to {target}, not linked")
    return dataclasses.replace(new, imm=where[target] - new.index - 1)


def link_program(obj: BpfObject, name: str) -> list[Insn]:
    """Instructions of program `name` followed by ``.text``, indexed from 0."""
    where, order = _place(obj, name)
    return [_relocate(obj, where, section, i) for section, i in order]
