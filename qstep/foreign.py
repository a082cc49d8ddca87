"""Programs loaded outside qstep (selected by id, name, tag or pin).

The kernel reports JIT addresses only for the program's own line-info records,
so instructions inside a record share one address range and have no exact
address of their own. Instructions are the kernel's xlated code.
"""

from __future__ import annotations

from qstep.agent.protocol import Reply
from qstep.bpf import insn as bpf_insn
from qstep.bpf.btf import Btf, decode_func_info, decode_line_info
from qstep.errors import GuestError
from qstep.loaded import (
    LINE_REC,
    InsnSite,
    JitFunction,
    LoadedProgram,
    SourceLoc,
    _records,
    _u32s,
    _u64s,
    parse_maps,
    source_locations,
)


def kernel_functions(info: Reply, btf: Btf, count: int) -> list[JitFunction]:
    """Functions from the kernel's func_info (xlated offsets) with ksyms and lengths."""
    funcs = sorted((f.insn_off, f.name or "main") for f in decode_func_info(
        info.blob("func_info"), info.int("func_info_rec_size"), btf)) if info.has(
        "func_info") and info.blob("func_info") else [(0, str(info.get("name")))]
    ksyms, lens = _u64s(info.blob("jited_ksyms")), _u32s(info.blob("jited_func_lens"))
    if not (len(funcs) == len(ksyms) == len(lens)):
        raise GuestError(f"kernel reports {len(ksyms)} JIT functions for {len(funcs)} "
                         "func_info records")
    result, offset = [], 0
    for i, ((start, name), addr, length) in enumerate(zip(funcs, ksyms, lens, strict=True)):
        end = funcs[i + 1][0] if i + 1 < len(funcs) else count
        result.append(JitFunction(i, name, start, end, addr, length, offset))
        offset += length
    return result


def record_ranges(info: Reply, functions: list[JitFunction]) -> dict[int, tuple[int, int]]:
    """First instruction of each line-info record → its JIT range."""
    recs = _records(info.blob("kline_info"), info.int("kline_info_rec_size"), LINE_REC)
    addrs = _u64s(info.blob("jited_line_info"))
    ranges = {}
    for k, ((insn_off, _f, _l, _c), addr) in enumerate(zip(recs, addrs, strict=True)):
        func = next((f for f in functions if f.contains(addr)), None)
        if func is None:
            raise GuestError(f"JIT address {addr:#x} is outside every function")
        nxt = addrs[k + 1] if k + 1 < len(addrs) else None
        end = nxt if nxt is not None and func.contains(nxt) and nxt >= addr else (
            func.addr + func.length)
        ranges[insn_off] = (addr, end)
    return ranges


def build_foreign(info: Reply) -> LoadedProgram:
    """A ``LoadedProgram`` from the kernel's own report of a program qstep did not load."""
    btf = Btf.parse(info.blob("btf")) if info.has("btf") else Btf([], b"\0")
    xlated = bpf_insn.decode(info.blob("xlated"))
    count = len(info.blob("xlated")) // 8
    lines = (decode_line_info(info.blob("kline_info"), info.int("kline_info_rec_size"), btf)
             if info.has("btf") else [])
    sources: dict[int, SourceLoc] = source_locations(lines, count)
    functions = kernel_functions(info, btf, count)
    ranges = record_ranges(info, functions)
    for func in functions:  # without line info, a function's entry is still known
        ranges.setdefault(func.start_insn, (func.addr, func.addr + func.length))
    sites, group = {}, None
    for ins in xlated:
        func = next(f for f in functions if f.start_insn <= ins.index < f.end_insn)
        if ins.index in ranges:
            group = ins.index
            start, end = ranges[ins.index]
            sites[ins.index] = InsnSite(ins, func, sources.get(ins.index), ins.index, start, end)
        else:
            sites[ins.index] = InsnSite(ins, func, sources.get(ins.index), ins.index, None, None,
                                        jit_group=group)
    return LoadedProgram(
        handle=-1, prog_id=info.int("id"), prog_type=info.int("type"),
        name=str(info.get("name")), tag=info.blob("tag").hex(), btf=btf, insns=xlated,
        xlated=xlated, jited_image=info.blob("jited"), functions=functions, sites=sites,
        maps=parse_maps(info), map_ids=_u32s(info.blob("map_ids")), foreign=True)
