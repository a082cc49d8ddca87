"""loadedSources, source, disassemble, readMemory: the program's code and the guest's memory."""

from __future__ import annotations

import base64
from typing import Any

from qstep.dap.state import DapState, Result
from qstep.debugger.sourcefiles import source_lines
from qstep.errors import UsageError
from qstep.listing import bpf_line
from qstep.loaded import InsnSite

MAX_READ = 1 << 20


class Code:
    """Requests about code and memory."""

    def __init__(self, state: DapState) -> None:
        self.s = state

    def req_loadedSources(self, args: dict[str, Any]) -> Result:
        prog = self.s.debugger().prog
        files = sorted({s.source.file for s in prog.sites.values() if s.source})
        return {"sources": [self.s.source(f) for f in files]}, None

    def req_source(self, args: dict[str, Any]) -> Result:
        prog = self.s.debugger().prog
        path = str(args.get("source", {}).get("path", ""))
        lines = source_lines(prog, path)
        text = "\n".join(lines.get(n, "") for n in range(1, max(lines, default=0) + 1))
        return {"content": text, "mimeType": "text/x-c"}, None

    def req_disassemble(self, args: dict[str, Any]) -> Result:
        prog = self.s.debugger().prog
        sites = [s for _, s in sorted(prog.sites.items()) if s.jit_start is not None]
        addr = int(args["memoryReference"], 0) + int(args.get("offset", 0))
        start = next((i for i, s in enumerate(sites) if s.jit_start == addr), None)
        if start is None:
            raise UsageError(f"disassemble: {addr:#x} is not the start of a BPF instruction")
        first = start + int(args.get("instructionOffset", 0))
        out = []
        for i in range(first, first + int(args["instructionCount"])):
            if not 0 <= i < len(sites):
                out.append({"address": "0x0", "instruction": "", "presentationHint": "invalid"})
                continue
            out.append(self._instruction(sites[i]))
        return {"instructions": out}, None

    def _instruction(self, site: InsnSite) -> dict[str, Any]:
        """One BPF instruction at its JIT address; after '|' the x86 code the JIT made of
        it, whose bytes are ``instructionBytes``."""
        assert site.jit_start is not None
        line = bpf_line(self.s.debugger().prog, site)
        offset = site.index - site.function.start_insn
        x86 = "; ".join(x.text for x in line.x86)
        out: dict[str, Any] = {"address": hex(site.jit_start),
                               "instruction": f"{line.text}  | {x86}" if x86 else line.text,
                               "instructionBytes": " ".join(x.hex for x in line.x86),
                               "symbol": f"{site.function.name}+{offset}"}
        if site.source is not None:
            out |= {"location": self.s.source(site.source.file), "line": site.source.line}
        return out

    def req_readMemory(self, args: dict[str, Any]) -> Result:
        addr = int(args["memoryReference"], 0) + int(args.get("offset", 0))
        count = int(args["count"])
        if count > MAX_READ:
            raise UsageError("readMemory: at most 1 MiB at a time")
        data = self.s.debugger().read_memory(addr, count)
        return {"address": hex(addr), "data": base64.b64encode(data).decode()}, None
