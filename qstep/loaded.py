"""A program as the kernel holds it: every instruction tied to source, xlated code and JIT.

Built from what the agent reports after a load. The JIT addresses come only from
the kernel (``jited_line_info`` of the synthetic per-instruction line info); the
source lines come from libbpf's relocated ``line_info`` and the object's BTF.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

from qstep.agent.protocol import Reply
from qstep.bpf import insn as bpf_insn
from qstep.bpf.btf import Btf, LineInfo, decode_func_info, decode_line_info
from qstep.bpf.progtypes import prog_type_name
from qstep.errors import GuestError

LINE_REC = struct.Struct("<IIII")  # insn_off, file_name_off, line_off, line_col


@dataclass(frozen=True)
class SourceLoc:
    """A source position and the text of that line."""

    file: str
    line: int
    col: int
    text: str

    def short(self) -> str:
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

    def contains(self, addr: int) -> bool:
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
        return self.insn.index

    @property
    def removed(self) -> bool:
        return self.jit_start is None and self.jit_group is None

    @property
    def exact(self) -> bool:
        """True when this instruction's own JIT start address is known."""
        return self.jit_start is not None


@dataclass(frozen=True)
class MapInfo:
    name: str
    id: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    btf_key_type_id: int
    btf_value_type_id: int


@dataclass
class LoadedProgram:
    """Everything known about one loaded program."""

    handle: int
    prog_id: int
    prog_type: int
    name: str
    tag: str
    btf: Btf
    insns: list[bpf_insn.Insn]
    xlated: list[bpf_insn.Insn]
    jited_image: bytes
    functions: list[JitFunction]
    sites: dict[int, InsnSite]
    maps: dict[str, MapInfo]
    map_ids: list[int] = field(default_factory=list)
    foreign: bool = False  # loaded outside qstep: coarse JIT map, no agent handle
    _ranges: list[tuple[int, int, int]] | None = field(default=None, repr=False)
    _range_starts: list[int] = field(default_factory=list, repr=False)

    @property
    def type_name(self) -> str:
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
        return next((f for f in self.functions if f.name == name), None)

    def jit_bytes(self, start: int, end: int) -> bytes:
        """The JIT image bytes of ``[start, end)`` (addresses)."""
        for func in self.functions:
            if func.contains(start):
                lo = func.image_offset + start - func.addr
                return self.jited_image[lo: lo + end - start]
        return b""


def _u32s(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 4}I", blob))


def _u64s(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 8}Q", blob))


def _records(blob: bytes, rec_size: int, rec: struct.Struct) -> list[tuple[int, ...]]:
    if rec_size < rec.size:
        return []
    return [rec.unpack_from(blob, off) for off in range(0, len(blob) - rec.size + 1, rec_size)]


def source_locations(line_info: list[LineInfo], insn_count: int) -> dict[int, SourceLoc]:
    """Source position of each instruction from libbpf's relocated line_info."""
    by_insn: dict[int, SourceLoc] = {}
    records = sorted(line_info, key=lambda r: r.insn_off)
    for pos, rec in enumerate(records):
        loc = SourceLoc(rec.file_name, rec.line, rec.col, rec.line_text.strip())
        end = records[pos + 1].insn_off if pos + 1 < len(records) else insn_count
        for index in range(rec.insn_off, end):
            by_insn[index] = loc
    return by_insn


def build_functions(load: Reply, info: Reply, btf: Btf, insn_count: int) -> list[JitFunction]:
    """Pair libbpf's func_info (original indices) with the kernel's ksyms and lengths."""
    funcs = sorted((f.insn_off, f.name) for f in decode_func_info(
        load.blob("func_info"), load.int("func_info_rec_size"), btf))
    ksyms = _u64s(info.blob("jited_ksyms"))
    lens = _u32s(info.blob("jited_func_lens"))
    if not funcs:
        funcs = [(0, "main")]
    if len(funcs) != len(ksyms) or len(ksyms) != len(lens):
        raise GuestError(f"kernel reports {len(ksyms)} JIT functions for {len(funcs)} "
                         "functions in func_info")
    result = []
    offset = 0
    for i, ((start, name), addr, length) in enumerate(zip(funcs, ksyms, lens, strict=True)):
        end = funcs[i + 1][0] if i + 1 < len(funcs) else insn_count
        result.append(JitFunction(i, name, start, end, addr, length, offset))
        offset += length
    return result


def jit_ranges(info: Reply, functions: list[JitFunction]) -> dict[int, tuple[int, int, int]]:
    """Original index → (xlated index, JIT start, JIT end) from the kernel's reports."""
    recs = _records(info.blob("kline_info"), info.int("kline_info_rec_size"), LINE_REC)
    addrs = _u64s(info.blob("jited_line_info"))
    if len(recs) != len(addrs):
        raise GuestError(f"kernel line_info ({len(recs)}) and jited_line_info "
                         f"({len(addrs)}) differ in length")
    result: dict[int, tuple[int, int, int]] = {}
    for k, ((xlated, _f, _l, orig), addr) in enumerate(zip(recs, addrs, strict=True)):
        func = next((f for f in functions if f.contains(addr)), None)
        if func is None:
            raise GuestError(f"JIT address {addr:#x} of insn {orig} is outside every function")
        nxt = addrs[k + 1] if k + 1 < len(addrs) else None
        end = nxt if nxt is not None and func.contains(nxt) and nxt >= addr else (
            func.addr + func.length)
        result[orig] = (xlated, addr, end)
    return result


def parse_maps(load: Reply) -> dict[str, MapInfo]:
    maps = {}
    for vals in load.all("map"):
        name, *rest = vals
        nums = [int(n) for n in rest]
        if len(nums) != 7:
            raise GuestError(f"malformed map line from the agent: {vals!r}")
        maps[str(name)] = MapInfo(str(name), *nums)
    return maps


def build_loaded(load: Reply, info: Reply, btf: Btf) -> LoadedProgram:
    """Join the agent's ``load`` and ``info`` replies into a ``LoadedProgram``."""
    insns = bpf_insn.decode(load.blob("insns"))
    count = len(load.blob("insns")) // 8
    line_info = decode_line_info(load.blob("line_info"), load.int("line_info_rec_size"), btf)
    sources = source_locations(line_info, count)
    functions = build_functions(load, info, btf, count)
    ranges = jit_ranges(info, functions)
    sites = {}
    for ins in insns:
        func = next(f for f in functions if f.start_insn <= ins.index < f.end_insn)
        xl, start, end = ranges.get(ins.index, (None, None, None))
        sites[ins.index] = InsnSite(ins, func, sources.get(ins.index), xl, start, end)
    return LoadedProgram(
        handle=load.int("handle"), prog_id=info.int("id"), prog_type=info.int("type"),
        name=str(info.get("name")), tag=info.blob("tag").hex(), btf=btf, insns=insns,
        xlated=bpf_insn.decode(info.blob("xlated")), jited_image=info.blob("jited"),
        functions=functions, sites=sites, maps=parse_maps(load),
        map_ids=_u32s(info.blob("map_ids")))
