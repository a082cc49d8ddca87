"""What the pointers in a run point into: the context, the packet, the stack, map values.

Kernel addresses change from boot to boot, so a trace that prints them raw differs
between otherwise identical runs. `Provenance` follows every register through the
executed instructions, concretely, the way the verifier tracks pointer types
symbolically:

- at the entry r1 is the context (``ctx``) and r10 the frame pointer (``fp``);
- a load of the context's ``data``/``data_end``/``data_meta`` field is the packet
  (``pkt``, ``pkt_end``, ``pkt_meta``);
- ``ld_imm64`` of a map is that map (``map:NAME``), of a global's address a pointer
  into the map that holds it (``map:.bss+8``);
- ``bpf_map_lookup_elem`` returns a pointer into the value of its key
  (``map:stats[5]``), or 0;
- moves, additions and subtractions of a constant keep the base; spills to the stack
  and fills from it keep it; anything else makes a plain number.

`describe` writes a value as ``BASE`` or ``BASE+N``/``BASE-N`` (``fp`` offsets in hex,
as the rest of qstep shows stack slots). Values without provenance stay numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from qstep.bpf import insn as bi
from qstep.bpf.uapi import Helper, ProgType
from qstep.debugger.defined import written
from qstep.loaded import InsnSite, LoadedProgram

PSEUDO_MAP_FD, PSEUDO_MAP_VALUE = 1, 2  # ld_imm64 src (xlated dumps carry the map id)
BPF_ADD, BPF_SUB, BPF_MOV = 0x00, 0x10, 0xB0
# UAPI context structs: offsets of the packet pointer fields (stable ABI).
_XDP_MD = {0: "pkt", 4: "pkt_end", 8: "pkt_meta"}
_SK_BUFF = {76: "pkt", 80: "pkt_end", 140: "pkt_meta"}
CTX_POINTER_FIELDS: dict[int, dict[int, str]] = {
    ProgType.XDP: _XDP_MD,
    **{t: _SK_BUFF for t in (ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT,
                             ProgType.CGROUP_SKB, ProgType.LWT_IN, ProgType.LWT_OUT,
                             ProgType.LWT_XMIT, ProgType.SK_SKB)},
}
MAX_INLINE_KEY = 8  # keys up to this size are shown as numbers, larger ones in hex

MemoryReader = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Base:
    """A named region and the address its offset 0 stands for."""

    name: str
    addr: int

    def describe(self, value: int) -> str:
        delta = value - self.addr
        if delta == 0:
            return self.name
        if self.name == "fp":
            return f"fp-{-delta:#x}" if delta < 0 else f"fp+{delta:#x}"
        return f"{self.name}-{-delta}" if delta < 0 else f"{self.name}+{delta}"


@dataclass
class _Frame:
    """Register bases of one bpf-to-bpf frame."""

    regs: dict[int, Base] = field(default_factory=dict)


class Provenance:
    """Tracks the base of every register across one run, instruction by instruction."""

    def __init__(self, prog: LoadedProgram, entry_regs: Sequence[int],
                 read_memory: MemoryReader) -> None:
        self._prog = prog
        self._read = read_memory
        self._ctx_fields = CTX_POINTER_FIELDS.get(prog.prog_type, {})
        self._xlated = {ins.index: ins for ins in prog.xlated}  # by slot index
        self._fp = Base("fp", entry_regs[10])
        self._frame = _Frame({1: Base("ctx", entry_regs[1]), 10: self._fp})
        self._callers: list[tuple[_Frame, bool]] = []  # (frame, is a helper's callback)
        self._spills: dict[int, Base] = {}

    def base_of(self, reg: int) -> Base | None:
        """The base register ``reg`` points into, if known."""
        return self._frame.regs.get(reg)

    def describe(self, reg: int, value: int) -> int | str:
        """``value`` of register ``reg`` relative to its base, or the number itself."""
        base = self._frame.regs.get(reg)
        return base.describe(value) if base is not None else value

    def step(self, site: InsnSite, before: Sequence[int], after: Sequence[int],
             callback: bool = False) -> None:
        """Account for one executed instruction (registers before and after it);
        ``callback``: a helper calls back into the program next (see DefinedRegs)."""
        ins = site.insn
        regs = self._frame.regs
        if callback:
            self._enter_callback(ins, before, after)
        elif ins.is_pseudo_call:
            self._callers.append((self._frame, False))
            self._frame = _Frame({r: b for r, b in regs.items() if 1 <= r <= 5 or r == 10})
            self._frame.regs[10] = Base("fp", self._fp.addr)
        elif ins.is_exit:
            caller, was_callback = self._callers.pop() if self._callers else (_Frame(), False)
            self._frame = caller if was_callback else _Frame(
                {r: b for r, b in caller.regs.items() if r >= 6})
        elif ins.is_call:
            self._after_call(ins, before, after)
        elif ins.is_ldimm64:
            self._after_ldimm64(site, after)
        elif ins.cls == bi.ALU64:
            self._after_alu64(ins)
        elif ins.cls == bi.LDX:
            self._after_load(ins, before, after)
        elif ins.cls in (bi.ST, bi.STX):
            self._after_store(ins, before)
        elif ins.cls == bi.ALU or ins.cls == bi.LD:
            regs.pop(ins.dst if ins.cls == bi.ALU else 0, None)

    def _enter_callback(self, ins: bi.Insn, before: Sequence[int],
                        after: Sequence[int]) -> None:
        """A helper calls a callback (again, after the callback's own exit)."""
        again = ins.is_exit and bool(self._callers) and self._callers[-1][1]
        if not again:
            if ins.is_call:
                self._after_call(ins, before, after)
            self._callers.append((self._frame, True))
        self._frame = _Frame({10: Base("fp", self._fp.addr)})

    # -- instruction kinds ------------------------------------------------

    def _after_call(self, ins: bi.Insn, before: Sequence[int], after: Sequence[int]) -> None:
        regs = self._frame.regs
        map_base = regs.get(1)
        for r in range(0, 6):
            regs.pop(r, None)
        if (ins.is_helper_call and ins.imm == Helper.MAP_LOOKUP_ELEM and after[0]
                and map_base is not None and map_base.name.startswith("map:")):
            key = self._key_text(map_base.name[4:], before[2])
            regs[0] = Base(f"{map_base.name}[{key}]", after[0])

    def _key_text(self, map_name: str, key_addr: int) -> str:
        info = self._prog.maps.get(map_name)
        if info is None or info.key_size == 0:
            return "?"
        try:
            key = self._read(key_addr, info.key_size)
        except Exception:  # noqa: BLE001 - an unreadable key must not end the trace
            return "?"
        if info.key_size <= MAX_INLINE_KEY:
            return str(int.from_bytes(key, "little"))
        return "x:" + key.hex()

    def _after_ldimm64(self, site: InsnSite, after: Sequence[int]) -> None:
        regs = self._frame.regs
        dst = site.insn.dst
        regs.pop(dst, None)
        xlated = self._xlated.get(site.xlated_index) if site.xlated_index is not None else None
        if xlated is None or not xlated.is_ldimm64:
            return
        name = self._map_name(xlated.imm)
        if name is None:
            return
        if xlated.src == PSEUDO_MAP_FD:
            regs[dst] = Base(f"map:{name}", after[dst])
        elif xlated.src == PSEUDO_MAP_VALUE:
            offset = (xlated.imm64 or 0) >> 32
            regs[dst] = Base(f"map:{name}", after[dst] - offset)

    def _map_name(self, map_id: int) -> str | None:
        return next((m.name for m in self._prog.maps.values() if m.id == map_id), None)

    def _after_alu64(self, ins: bi.Insn) -> None:
        regs = self._frame.regs
        if ins.op == BPF_MOV and ins.uses_reg_src and ins.off == 0:
            if ins.src in regs:
                regs[ins.dst] = regs[ins.src]
            else:
                regs.pop(ins.dst, None)
        elif ins.op in (BPF_ADD, BPF_SUB) and ins.dst in regs and (
                not ins.uses_reg_src or ins.src not in regs):
            pass  # pointer ± scalar: same base
        elif (ins.op == BPF_ADD and ins.uses_reg_src and ins.src in regs
              and ins.dst not in regs):
            regs[ins.dst] = regs[ins.src]  # scalar + pointer
        else:
            regs.pop(ins.dst, None)

    def _after_load(self, ins: bi.Insn, before: Sequence[int], after: Sequence[int]) -> None:
        regs = self._frame.regs
        src_base = regs.get(ins.src)
        addr = before[ins.src] + ins.off
        regs.pop(ins.dst, None)
        if src_base is None:
            return
        if src_base.name == "ctx" and ins.mode == bi.MODE_MEM:
            name = self._ctx_fields.get(addr - src_base.addr)
            if name is not None:
                regs[ins.dst] = Base(name, after[ins.dst])
        elif ins.mem_size == 8 and addr in self._spills:
            regs[ins.dst] = self._spills[addr]

    def _after_store(self, ins: bi.Insn, before: Sequence[int]) -> None:
        size = ins.mem_size or 8
        addr = before[ins.dst] + ins.off
        for slot in [a for a in self._spills if a < addr + size and addr < a + 8]:
            del self._spills[slot]
        if ins.cls == bi.STX and ins.mode == bi.MODE_MEM and size == 8:
            base = self._frame.regs.get(ins.src)
            if base is not None:
                self._spills[addr] = base
        elif ins.cls == bi.STX and ins.mode == bi.MODE_ATOMIC:
            for reg in written(ins):  # the fetched old value: a plain number
                self._frame.regs.pop(reg, None)
