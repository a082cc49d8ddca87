"""Three-way listing: each source line, its BPF instructions, and their x86 code.

The x86 instructions shown under a BPF instruction are exactly the bytes of its
JIT range as the kernel reported it; capstone only turns them into text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import capstone

from qstep.bpf import insn as bpf_insn
from qstep.loaded import InsnSite, JitFunction, LoadedProgram, SourceLoc

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


@dataclass(frozen=True)
class X86Line:
    addr: int
    text: str
    hex: str


@dataclass
class BpfLine:
    index: int
    text: str
    xlated_index: int | None
    removed: bool
    jit_start: int | None
    jit_end: int | None
    patched: list[str] = field(default_factory=list)
    x86: list[X86Line] = field(default_factory=list)
    note: str = ""
    variables: str = ""  # where C variables live before it runs (``disasm --vars``)


@dataclass
class SourceBlock:
    source: SourceLoc | None
    insns: list[BpfLine] = field(default_factory=list)


@dataclass
class FunctionListing:
    function: JitFunction
    blocks: list[SourceBlock] = field(default_factory=list)


def disassemble_x86(code: bytes, addr: int) -> list[X86Line]:
    """capstone text of ``code`` placed at ``addr``."""
    return [X86Line(i.address, f"{i.mnemonic} {i.op_str}".strip(), i.bytes.hex())
            for i in _CS.disasm(code, addr)]


def map_namer(prog: LoadedProgram, site: InsnSite) -> bpf_insn.MapNamer:
    """Name maps in ld_imm64 through the map id the kernel put in the xlated copy."""
    by_id = {m.id: m.name for m in prog.maps.values()}

    def name(insn: bpf_insn.Insn) -> str | None:
        xl = None if site.xlated_index is None else _xlated_at(prog, site.xlated_index)
        if xl is not None and xl.is_ldimm64:
            return by_id.get(xl.imm & 0xFFFFFFFF)
        # Removed: only the guest fd libbpf put there is known; never call it an id.
        return f"fd:{insn.imm & 0xFFFFFFFF}" if insn.src in (1, 2) else None
    return name


def _xlated_at(prog: LoadedProgram, index: int) -> bpf_insn.Insn | None:
    return next((x for x in prog.xlated if x.index == index), None)


def bpf_text(prog: LoadedProgram, site: InsnSite) -> str:
    """bpftool-style text with call targets and maps named."""
    ins = site.insn
    text = bpf_insn.format_insn(ins, map_name=map_namer(prog, site))
    target = ins.call_target
    if ins.is_pseudo_call and target is not None:
        callee = next((f for f in [*prog.functions, *prog.removed_functions]
                       if f.start_insn == target), None)
        if callee is not None:
            text += f"  <{callee.name}>"
    if site.index in prog.kfunc_names:
        text += f"  <{prog.kfunc_names[site.index]}>"
    return text


def xlated_span(prog: LoadedProgram, site: InsnSite) -> list[bpf_insn.Insn]:
    """The xlated instructions that stand for this original instruction."""
    if site.xlated_index is None:
        return []
    later = [s.xlated_index for s in prog.sites.values()
             if s.xlated_index is not None and s.xlated_index > site.xlated_index]
    end = min(later) if later else site.xlated_index + 1 + 10**6
    return [x for x in prog.xlated if site.xlated_index <= x.index < end]


def patched_text(prog: LoadedProgram, site: InsnSite) -> list[str]:
    """The verifier's replacement, when it changed this instruction's shape."""
    span = xlated_span(prog, site)
    if not span:
        return []
    # Calls keep their shape; the kernel rewrites their imm/off (helper address
    # offset, or for bpf-to-bpf calls the subprogram number), which is not a patch.
    ins = site.insn
    same = (len(span) == 1 and span[0].code == ins.code and span[0].dst == ins.dst
            and span[0].src == ins.src
            and (ins.is_call or _same_jump(prog, ins, span[0])
                 or (span[0].off == ins.off and (span[0].imm == ins.imm or ins.is_ldimm64))))
    if same:
        return []
    return [bpf_insn.format_insn(x) for x in span]


def _same_jump(prog: LoadedProgram, ins: bpf_insn.Insn, xl: bpf_insn.Insn) -> bool:
    """A jump whose offset changed only because code was inserted or removed around it."""
    if ins.jump_target is None or xl.jump_target is None or ins.imm != xl.imm:
        return False
    target = prog.sites.get(ins.jump_target)
    return target is not None and target.xlated_index == xl.jump_target


def bpf_line(prog: LoadedProgram, site: InsnSite) -> BpfLine:
    line = BpfLine(site.index, bpf_text(prog, site), site.xlated_index, site.removed,
                   site.jit_start, site.jit_end)
    if site.removed:
        return line
    if not site.exact:
        line.note = f"no exact JIT address (shares the line-info record of insn {site.jit_group})"
        return line
    line.patched = patched_text(prog, site)
    assert site.jit_start is not None and site.jit_end is not None
    line.x86 = disassemble_x86(prog.jit_bytes(site.jit_start, site.jit_end), site.jit_start)
    return line


def build_listing(prog: LoadedProgram,
                  variables: dict[int, str] | None = None) -> list[FunctionListing]:
    """Group every instruction by function, then by consecutive source line;
    ``variables`` (instruction → text) annotates where C variables live."""
    result = []
    for func in [*prog.functions, *prog.removed_functions]:
        fl = FunctionListing(func)
        for index in range(func.start_insn, func.end_insn):
            site = prog.sites.get(index)
            if site is None:
                continue  # second slot of ld_imm64
            if not fl.blocks or not _same_line(fl.blocks[-1].source, site.source):
                fl.blocks.append(SourceBlock(site.source))
            line = bpf_line(prog, site)
            line.variables = (variables or {}).get(index, "")
            fl.blocks[-1].insns.append(line)
        result.append(fl)
    return result


def _same_line(a: SourceLoc | None, b: SourceLoc | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.file, a.line) == (b.file, b.line)


def format_listing(listing: list[FunctionListing], marker: int | None = None) -> str:
    """Human text; ``marker`` is an instruction index to flag with ``=>``."""
    out: list[str] = []
    for fl in listing:
        f = fl.function
        where = ("removed by the verifier (unreachable), no JIT code" if f.removed else
                 f"JIT {f.addr:#x}..{f.addr + f.length:#x} ({f.length} bytes)")
        out.append(f"{f.name}:  insns {f.start_insn}..{f.end_insn - 1}, {where}")
        for block in fl.blocks:
            src = block.source
            out.append(f"  {src.short():<18} {src.text}" if src else "  <no source line>")
            for ins in block.insns:
                out.extend(_format_bpf_line(ins, marker, set() if f.removed else {f.start_insn}))
        out.append("")
    return "\n".join(out)


def _format_bpf_line(ins: BpfLine, marker: int | None, entries: set[int]) -> list[str]:
    mark = "=>" if ins.index == marker else "  "
    state = "   ; removed by the verifier" if ins.removed else ""
    if ins.note:
        state += f"   ; {ins.note}"
    if ins.index in entries:
        state += "   ; JIT code starts with the function prologue"
    lines = [f"  {mark} {ins.index:4}: {ins.text}{state}"]
    if ins.variables:
        lines.append(f"            ; vars: {ins.variables}")
    if ins.patched:
        lines.append("            ; patched by the verifier into:")
        lines.extend(f"            ;   {t}" for t in ins.patched)
    lines.extend(f"              {x.addr:#x}:  {x.text}" for x in ins.x86)
    return lines


def listing_json(listing: list[FunctionListing]) -> list[dict[str, Any]]:
    return [asdict(fl) for fl in listing]
