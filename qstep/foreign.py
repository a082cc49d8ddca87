"""Programs loaded outside qstep (selected by id, name, tag or pin).

The kernel reports JIT addresses only for the program's own line-info records,
so instructions inside a record share one address range and have no exact
address of their own. Instructions are the kernel's xlated code.
"""

from __future__ import annotations

from qstep.agent.replies import ProgInfo
from qstep.bpf import insn as bpf_insn
from qstep.bpf.btf import Btf
from qstep.loaded import (
    InsnSite,
    JitFunction,
    LoadedProgram,
    full_name,
    function_of,
    jit_functions,
    record_ranges,
    source_locations,
)


def kernel_functions(info: ProgInfo, btf: Btf, count: int) -> list[JitFunction]:
    """Functions from the kernel's func_info (xlated offsets) with ksyms and lengths."""
    records = info.func_info.funcs(btf) if info.func_info is not None else []
    funcs = sorted((f.insn_off, f.name or "main") for f in records) or [(0, info.name)]
    return jit_functions([(start, funcs[i + 1][0] if i + 1 < len(funcs) else count, name)
                          for i, (start, name) in enumerate(funcs)], info)


def build_foreign(info: ProgInfo) -> LoadedProgram:
    """A ``LoadedProgram`` from the kernel's own report of a program qstep did not load."""
    btf = Btf.parse(info.btf) if info.btf is not None else Btf([], b"\0")
    xlated = bpf_insn.decode(info.xlated)
    count = len(info.xlated) // 8
    lines = info.kline_info.lines(btf) if info.btf is not None else []
    sources = source_locations(lines, count)
    functions = kernel_functions(info, btf, count)
    ranges = record_ranges([line.insn_off for line in info.kernel_lines()], info, functions)
    for func in functions:  # without line info, a function's entry is still known
        ranges.setdefault(func.start_insn, (func.addr, func.addr + func.length))
    sites, group = {}, None
    for ins in xlated:
        func = function_of(functions, ins.index)
        if ins.index in ranges:
            group = ins.index
            start, end = ranges[ins.index]
            sites[ins.index] = InsnSite(ins, func, sources.get(ins.index), ins.index, start, end)
        else:
            sites[ins.index] = InsnSite(ins, func, sources.get(ins.index), ins.index, None, None,
                                        jit_group=group)
    return LoadedProgram(
        handle=-1, prog_id=info.prog_id, prog_type=info.prog_type,
        name=full_name(functions, info.name), kernel_name=info.name,
        tag=info.tag, btf=btf, insns=xlated, xlated=xlated, jited_image=info.jited,
        functions=functions, sites=sites, maps=info.maps, map_ids=info.map_ids, foreign=True)
