"""A program as the kernel holds it: every instruction tied to source, xlated code and JIT.

Built from what the agent reports after a load. The JIT addresses come only from
the kernel (``jited_line_info`` of the synthetic per-instruction line info); the
source lines come from libbpf's relocated ``line_info`` and the object's BTF.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from qstep.agent.replies import LoadInfo, MapInfo, ProgInfo
from qstep.bpf import insn as bpf_insn
from qstep.bpf.btf import Btf, LineInfo
from qstep.bpf.progtypes import prog_type_name
from qstep.errors import GuestError


@dataclass(frozen=True)
class SourceLoc:
    """A source position and the text of that line."""

    file: str
    line: int
    col: int
    text: str

    def short(self) -> str:
        """``file.c:line`` (the file's base name)."""
        return f"{self.file.rsplit('/', 1)[-1]}:{self.line}"


@dataclass(frozen=True)
class JitFunction:
    """One JIT-compiled function (the main program or a bpf-to-bpf subprogram)."""

    index: int
    name: str
    start_insn: int
    end_insn: int  # exclusive, in original instruction indices
    addr: int
    length: int
    image_offset: int
    removed: bool = False  # dropped by the verifier as unreachable: no JIT code

    def contains(self, addr: int) -> bool:
        """True if ``addr`` is in this function's JIT code."""
        return self.addr <= addr < self.addr + self.length


@dataclass(frozen=True)
class InsnSite:
    """One original instruction and where it ended up."""

    insn: bpf_insn.Insn
    function: JitFunction
    source: SourceLoc | None
    xlated_index: int | None
    jit_start: int | None
    jit_end: int | None
    # For programs loaded outside qstep the kernel reports JIT addresses only at the
    # program's own line-info records: ``jit_group`` is then the first instruction
    # of this instruction's record, and instructions inside a record have no address.
    jit_group: int | None = None

    @property
    def index(self) -> int:
        """The instruction's index (original for qstep's loads, xlated for others)."""
        return self.insn.index

    @property
    def removed(self) -> bool:
        """True if the verifier removed this instruction (it has no JIT code)."""
        return self.jit_start is None and self.jit_group is None

    @property
    def exact(self) -> bool:
        """True when this instruction's own JIT start address is known."""
        return self.jit_start is not None


@dataclass
class LoadedProgram:
    """Everything known about one loaded program."""

    handle: int
    prog_id: int
    prog_type: int
    name: str  # the full name: the entry function's (the object's program name)
    tag: str
    btf: Btf
    insns: list[bpf_insn.Insn]
    xlated: list[bpf_insn.Insn]
    jited_image: bytes
    functions: list[JitFunction]
    sites: dict[int, InsnSite]
    maps: dict[str, MapInfo]
    map_ids: list[int] = field(default_factory=list)
    # Subprograms the verifier dropped as unreachable: no JIT code, not in ``functions``.
    removed_functions: list[JitFunction] = field(default_factory=list)
    kernel_name: str = ""  # the kernel's copy of the name: at most 15 characters
    foreign: bool = False  # loaded outside qstep: coarse JIT map, no agent handle
    kfunc_names: dict[int, str] = field(default_factory=dict)  # call insn index → kfunc
    # Kernel address of __per_cpu_offset, looked up at load time when a function runs
    # on a private stack (its frame pointer depends on the CPU's per-CPU offset).
    percpu_offset_addr: int | None = None
    verifier_log: str = ""  # the verifier's level-2 log, when the load kept it
    _ranges: list[tuple[int, int, int]] | None = field(default=None, repr=False)
    _range_starts: list[int] = field(default_factory=list, repr=False)

    @property
    def type_name(self) -> str:
        """The program type's name (xdp, sched_cls, ...)."""
        return prog_type_name(self.prog_type)

    def site_at(self, addr: int) -> InsnSite | None:
        """The instruction whose JIT code contains ``addr`` (None outside the program)."""
        if self._ranges is None:
            self._ranges = sorted((s.jit_start, s.jit_end, i) for i, s in self.sites.items()
                                  if s.jit_start is not None and s.jit_end is not None
                                  and s.jit_start < s.jit_end)
            self._range_starts = [r[0] for r in self._ranges]
        pos = bisect.bisect_right(self._range_starts, addr) - 1
        if pos >= 0 and self._ranges[pos][0] <= addr < self._ranges[pos][1]:
            return self.sites[self._ranges[pos][2]]
        return None

    def function_named(self, name: str) -> JitFunction | None:
        """The JIT function called ``name`` (None if absent or removed)."""
        return next((f for f in self.functions if f.name == name), None)

    def jit_bytes(self, start: int, end: int) -> bytes:
        """The JIT image bytes of ``[start, end)`` (addresses)."""
        for func in self.functions:
            if func.contains(start):
                lo = func.image_offset + start - func.addr
                return self.jited_image[lo: lo + end - start]
        return b""



def source_locations(line_info: list[LineInfo], insn_count: int) -> dict[int, SourceLoc]:
    """Source position of each instruction from a relocated line_info."""
    by_insn: dict[int, SourceLoc] = {}
    records = sorted(line_info, key=lambda r: r.insn_off)
    for pos, rec in enumerate(records):
        loc = SourceLoc(rec.file_name, rec.line, rec.col, rec.line_text.strip())
        end = records[pos + 1].insn_off if pos + 1 < len(records) else insn_count
        for index in range(rec.insn_off, end):
            by_insn[index] = loc
    return by_insn


def jit_functions(starts: list[tuple[int, int, str]], info: ProgInfo) -> list[JitFunction]:
    """JIT functions from ``(start, end, name)`` in the kernel's order and its ksyms."""
    ksyms, lens = info.jited_ksyms, info.jited_func_lens
    if not len(starts) == len(ksyms) == len(lens):
        raise GuestError(f"kernel reports {len(ksyms)} JIT functions for {len(starts)} "
                         "functions in func_info")
    result, offset = [], 0
    for i, ((start, end, name), addr, length) in enumerate(zip(starts, ksyms, lens,
                                                              strict=True)):
        result.append(JitFunction(i, name, start, end, addr, length, offset))
        offset += length
    return result


def record_ranges(keys: list[int], info: ProgInfo,
                  functions: list[JitFunction]) -> dict[int, tuple[int, int]]:
    """``keys[k]`` → the JIT range of the kernel's k-th line-info record.

    A range ends where the next record starts, or at its function's end.
    """
    addrs = info.jited_line_info
    if len(keys) != len(addrs):
        raise GuestError(f"kernel line_info ({len(keys)}) and jited_line_info "
                         f"({len(addrs)}) differ in length")
    ranges = {}
    for k, (key, addr) in enumerate(zip(keys, addrs, strict=True)):
        func = next((f for f in functions if f.contains(addr)), None)
        if func is None:
            raise GuestError(f"JIT address {addr:#x} of insn {key} is outside every function")
        nxt = addrs[k + 1] if k + 1 < len(addrs) else None
        end = nxt if nxt is not None and func.contains(nxt) and nxt >= addr else (
            func.addr + func.length)
        ranges[key] = (addr, end)
    return ranges


def function_of(functions: list[JitFunction], index: int) -> JitFunction:
    """The function (live or removed) whose instruction range holds ``index``."""
    return next(f for f in functions if f.start_insn <= index < f.end_insn)


def libbpf_functions(load: LoadInfo, info: ProgInfo, btf: Btf,
                     count: int) -> tuple[list[JitFunction], list[JitFunction]]:
    """libbpf's functions (original indices) paired with the kernel's JIT functions.

    The verifier drops subprograms unreachable from the entry point, so the kernel
    may report fewer JIT functions than libbpf's func_info has. Each JIT function's
    first address is its first line-info record, whose synthetic ``line_col`` is
    the original index: that names which functions survived. Returns (live, removed).
    """
    funcs = sorted((f.insn_off, f.name) for f in load.func_info.funcs(btf)) or [(0, "main")]
    bounds = [(start, funcs[i + 1][0] if i + 1 < len(funcs) else count, name)
              for i, (start, name) in enumerate(funcs)]
    start_at = {addr: line.line_col for line, addr in zip(
        info.kernel_lines(), info.jited_line_info, strict=False)}
    live_starts = [start_at.get(addr) for addr in info.jited_ksyms]
    if len(bounds) == len(info.jited_ksyms) or None in live_starts:
        live = bounds  # nothing dropped (or no per-instruction line info to tell)
    else:
        by_start = {b[0]: b for b in bounds}
        live = [by_start[s] for s in live_starts if s in by_start]
    removed = [JitFunction(-1, name, start, end, 0, 0, 0, removed=True)
               for start, end, name in bounds if (start, end, name) not in live]
    return jit_functions(live, info), removed


def full_name(functions: list[JitFunction], kernel_name: str) -> str:
    """The entry function's name when BTF gives one that the kernel's name abbreviates."""
    entry = functions[0].name if functions else ""
    return entry if entry.startswith(kernel_name) and kernel_name else kernel_name


def build_loaded(load: LoadInfo, info: ProgInfo, btf: Btf) -> LoadedProgram:
    """Join the agent's ``load`` and ``info`` reports into a ``LoadedProgram``."""
    insns = bpf_insn.decode(load.insns)
    count = len(load.insns) // 8
    sources = source_locations(load.line_info.lines(btf), count)
    functions, removed = libbpf_functions(load, info, btf, count)
    lines = info.kernel_lines()
    # The synthetic line info carries each record's original index in line_col.
    ranges = record_ranges([line.line_col for line in lines], info, functions)
    xlated_of = {line.line_col: line.insn_off for line in lines}
    sites = {}
    for ins in insns:
        func = function_of(functions + removed, ins.index)
        start, end = ranges.get(ins.index, (None, None))
        sites[ins.index] = InsnSite(ins, func, sources.get(ins.index),
                                    xlated_of.get(ins.index), start, end)
    return LoadedProgram(
        handle=load.handle, prog_id=info.prog_id, prog_type=info.prog_type,
        name=full_name(functions, info.name), kernel_name=info.name,
        tag=info.tag, btf=btf, insns=insns, xlated=bpf_insn.decode(info.xlated),
        jited_image=info.jited, functions=functions, sites=sites, maps=load.maps,
        map_ids=info.map_ids, removed_functions=removed)
