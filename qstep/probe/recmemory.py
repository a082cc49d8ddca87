"""Memory and maps as they were at a point of a recorded run (for ``inspect`` specs).

A byte's value at step ``pos`` is the nearest recorded access to it (the last one
before ``pos``, or the first one at or after it: a load's value or the bytes a store
replaced) when nothing unrecorded could have changed it in between: a helper or
kfunc that may write memory, or the kernel between two runs of a multi-run
recording. Helpers in ``PURE_HELPERS`` write nothing the program can read. The
packet is known at the start of the first run (it is the input), map values from
the agent's dump before the runs, followed through the program's stores, its
``bpf_map_update_elem``/``bpf_map_delete_elem`` calls and its lookups (which tell
where a key's value lives). Anything else is ``NotRecorded``: never a guess.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from qstep.bpf.uapi import Helper, MapType
from qstep.debugger.provenance import PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, Provenance
from qstep.debugger.tailcall import is_tail_call
from qstep.errors import QstepError
from qstep.loaded import LoadedProgram
from qstep.recorder.log import MemAccess
from qstep.recorder.recording import RecordedStep, Recording

PURE_HELPERS = frozenset({
    Helper.MAP_LOOKUP_ELEM, Helper.KTIME_GET_NS, Helper.TRACE_PRINTK, Helper.GET_PRANDOM_U32,
    Helper.GET_SMP_PROCESSOR_ID, Helper.GET_CURRENT_PID_TGID, Helper.GET_CURRENT_UID_GID,
    Helper.REDIRECT, Helper.PERF_EVENT_OUTPUT, Helper.CSUM_DIFF, Helper.REDIRECT_MAP,
    Helper.JIFFIES64, Helper.KTIME_GET_BOOT_NS, Helper.RINGBUF_OUTPUT,
    Helper.KTIME_GET_COARSE_NS, Helper.TRACE_VPRINTK})
# Helpers that write through none of their pointer arguments (they may write the packet;
# bpf_loop's callback is program code: what it writes is recorded).
READS_ITS_POINTERS = PURE_HELPERS | {
    Helper.SKB_STORE_BYTES, Helper.L3_CSUM_REPLACE, Helper.L4_CSUM_REPLACE,
    Helper.SKB_SET_TUNNEL_KEY, Helper.SKB_SET_TUNNEL_OPT, Helper.LOOP}
STACK_MAX = 512 * 8  # below the lowest frame pointer: the deepest frames' stacks
MODELLED_MAPS = frozenset({MapType.HASH, MapType.ARRAY, MapType.LRU_HASH})
MAP_HELPERS = frozenset({Helper.MAP_LOOKUP_ELEM, Helper.MAP_UPDATE_ELEM, Helper.MAP_DELETE_ELEM})
MAX_ARRAY_LEARNED = 4096  # larger arrays: only the values of the keys looked up
MAX_ACCESS = 16  # bytes of the widest recorded access


class NotRecorded(QstepError):
    """A value the recording does not determine (the spec is not evaluated there)."""


@dataclass
class _Map:
    """One map's entries through the run."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    entries: dict[bytes, bytearray]
    broken: str = ""  # why its contents are no longer known

    @property
    def stride(self) -> int:
        return (self.value_size + 7) & ~7


class RecordedMaps:
    """The maps of a program along a recording, and where the values of known keys live
    (every byte of a known value: its map, key and offset)."""

    def __init__(self, prog: LoadedProgram, dumps: dict[str, list[tuple[bytes, bytes]] | None]):
        self.maps: dict[str, _Map] = {}
        self._where: dict[int, tuple[_Map, bytes, int]] = {}
        self._learned_arrays: set[tuple[int, str]] = set()
        for name, entries in dumps.items():
            info = prog.maps[name]
            m = _Map(name, info.type, info.key_size, info.value_size, info.max_entries,
                     {k: bytearray(v) for k, v in entries or []})
            if info.type not in MODELLED_MAPS:
                m.broken = ("recordings follow hash, LRU hash and array maps only (per-CPU "
                            "values and other kinds are not followed)")
            elif entries is None:
                m.broken = "its contents could not be dumped before the run"
            self.maps[name] = m

    def learn(self, m: _Map, key: bytes, addr: int) -> None:
        """The value under ``key`` lives at ``addr`` (for an array: every index, from it)."""
        if m.type == MapType.ARRAY and m.max_entries <= MAX_ARRAY_LEARNED:
            base = addr - int.from_bytes(key[:4], "little") * m.stride
            if (base, m.name) in self._learned_arrays:
                return
            self._learned_arrays.add((base, m.name))
            for i in range(m.max_entries):
                self._place(m, i.to_bytes(4, "little"), base + i * m.stride)
        else:
            self._place(m, key, addr)

    def _place(self, m: _Map, key: bytes, addr: int) -> None:
        for off in range(m.value_size):
            self._where[addr + off] = (m, key, off)

    def lookup(self, name: str, key: bytes) -> bytes | None:
        """The value under ``key`` now (None: absent); ``NotRecorded`` when unknown."""
        m = self.maps.get(name)
        if m is None:
            raise NotRecorded(f"map {name} is not followed through the recording")
        if m.broken:
            raise NotRecorded(f"map {name}: {m.broken}")
        if m.type == MapType.ARRAY:
            if int.from_bytes(key[:4], "little") >= m.max_entries:
                return None
            return bytes(m.entries.get(key[:4], bytearray(m.value_size)))
        value = m.entries.get(key)
        return bytes(value) if value is not None else None

    def byte(self, addr: int) -> int | None:
        found = self._where.get(addr)
        if found is None:
            return None
        m, key, off = found
        if m.broken:
            raise NotRecorded(f"a value of map {m.name} at {addr:#x}: {m.broken}")
        value = m.entries.get(key)
        if value is None:
            raise NotRecorded(f"a value of map {m.name} at {addr:#x} whose entry was deleted")
        return value[off]

    def store(self, addr: int, size: int, value: int) -> None:
        for i in range(size):
            found = self._where.get(addr + i)
            if found is not None:
                m, key, off = found
                entry = m.entries.setdefault(key, bytearray(m.value_size))
                entry[off] = (value >> (8 * i)) & 0xFF

    def check_load(self, addr: int, size: int, value: int) -> None:
        """A recorded load from a followed value must agree; else the map is broken."""
        for i in range(size):
            found = self._where.get(addr + i)
            if found is None or found[0].broken:
                continue
            m, key, off = found
            entry = m.entries.get(key)
            if entry is None or entry[off] != (value >> (8 * i)) & 0xFF:
                m.broken = f"the program read {addr + i:#x} other than followed"

    def forget(self, m: _Map, key: bytes) -> None:
        """A hash entry was replaced or deleted: its old value's place is no longer it."""
        if m.type != MapType.ARRAY:
            self._where = {a: w for a, w in self._where.items()
                           if not (w[0] is m and w[1] == key)}

    def poison(self, m: _Map, why: str) -> None:
        m.broken = m.broken or why

    def poison_pointed(self, regs: Sequence[int], why: str) -> None:
        """A helper got a pointer into a followed value: it may have written it."""
        for reg in regs:
            found = self._where.get(reg)
            if found is not None:
                self.poison(found[0], why)


class RecordedMemory:
    """Bytes at any step of a recording (see the module docstring); maps follow ``advance``."""

    def __init__(self, rec: Recording, maps: RecordedMaps, packet: bytes) -> None:
        self.rec = rec
        self.maps = maps
        self.pos = 0
        self.regs = [s.regs().values for s in rec.steps]
        self._accesses: dict[int, list[tuple[int, int, MemAccess]]] = {}  # start -> (k, seq, a)
        self._histories: dict[int, list[tuple[int, int | None, int]]] = {}
        seq = 0
        for k, step in enumerate(rec.steps):
            for a in step.frame_accesses + step.accesses:
                self._accesses.setdefault(a.addr, []).append((k, seq, a))
                seq += 1
        self.run_starts = run_starts(rec)
        fps = [r[10] for r in self.regs]
        self._stack = (min(fps, default=0) - STACK_MAX, max(fps, default=0))
        self._barriers = sorted({*self.run_starts[1:], *(k + 1 for k, s in enumerate(rec.steps)
                                                         if writes_memory(rec.prog, s))})
        self._stack_barriers = sorted({*self.run_starts[1:], *(
            k + 1 for k, s in enumerate(rec.steps) if self._may_write_stack(k, s))})
        self._packet: dict[int, int] = {}
        self._packet_until = min([*self._barriers, len(rec.steps)])
        self._packet_input = packet
        self._xlated = {ins.index: ins for ins in rec.prog.xlated}
        self._map_at: dict[int, _Map] = {}  # a map's kernel address -> the map
        self._by_id = {info.id: self.maps.maps[name] for name, info in rec.prog.maps.items()
                       if name in self.maps.maps}
        self._provenance: Provenance | None = Provenance(rec.prog, self.regs[0], self.read) \
            if rec.steps and packet else None

    def read(self, addr: int, size: int) -> bytes:
        """``size`` bytes at ``addr`` before step ``pos``; ``NotRecorded`` if unknown."""
        out = bytearray()
        for b in range(addr, addr + size):
            value = self._byte(b)
            if value is None:
                raise NotRecorded(f"the byte at {b:#x} is not in the recording at this point")
            out.append(value)
        return bytes(out)

    def _history(self, b: int) -> list[tuple[int, int | None, int]]:
        """(step, byte before, byte after) of every recorded access to ``b``, in order."""
        cached = self._histories.get(b)
        if cached is not None:
            return cached
        hits = sorted((k, seq, a) for start in range(b - MAX_ACCESS + 1, b + 1)
                      for k, seq, a in self._accesses.get(start, ()) if b < a.addr + a.size)
        out = []
        for k, _, a in hits:
            shift = 8 * (b - a.addr)
            new = (a.value >> shift) & 0xFF
            old = ((a.old >> shift) & 0xFF if a.old is not None else None) if a.store else new
            out.append((k, old, new))
        self._histories[b] = out
        return out

    def _byte(self, b: int) -> int | None:
        mapped = self.maps.byte(b)
        if mapped is not None:
            return mapped
        history = self._history(b)
        if history:
            i = bisect_left(history, (self.pos, -1, -1))
            if i > 0 and not self._barrier_between(b, history[i - 1][0], self.pos):
                return history[i - 1][2]
            if i < len(history) and not self._barrier_between(b, self.pos, history[i][0]):
                return history[i][1]
        if self.pos < self._packet_until:
            return self._packet.get(b)
        return None

    def _may_write_stack(self, k: int, step: RecordedStep) -> bool:
        """A kfunc, or a helper given a pointer into the stack that it may write through."""
        ins = step.site.insn
        if ins.is_kfunc_call:
            return True
        regs = self.regs[k]
        return ins.is_helper_call and ins.imm not in READS_ITS_POINTERS and any(
            self._stack[0] <= regs[r] < self._stack[1] for r in range(1, 6))

    def _barrier_between(self, b: int, start: int, end: int) -> bool:
        """Something unrecorded may have written byte ``b`` between steps start and end
        (the stack only through a pointer a helper was given)."""
        barriers = self._stack_barriers if self._stack[0] <= b < self._stack[1] \
            else self._barriers
        i = bisect_left(barriers, start + 1) if start < end else len(barriers)
        return i < len(barriers) and barriers[i] <= end

    def advance(self, k: int) -> None:
        """Account for step ``k`` (maps, the packet); ``pos`` becomes ``k + 1``."""
        step = self.rec.steps[k]
        self.pos = k
        ins = step.site.insn
        if is_tail_call(step.site):
            for m in self.maps.maps.values():  # the tail-called program's writes: unrecorded
                self.maps.poison(m, f"the program tail-called another program at insn "
                                 f"{step.site.index}, which is not recorded")
        if k + 1 < len(self.rec.steps):
            after = self.regs[k + 1]
            if ins.is_helper_call or ins.is_kfunc_call:
                self._call_effects(step, self.regs[k], after)
            elif ins.is_ldimm64:
                self._ldimm64(step, after)
            if self._provenance is not None:
                self._follow_packet(k, after)
        for a in step.accesses:
            if a.store:
                self.maps.store(a.addr, a.size, a.value)
            else:
                self.maps.check_load(a.addr, a.size, a.value)
        self.pos = k + 1

    def _call_effects(self, step: RecordedStep, before: Sequence[int],
                      after: Sequence[int]) -> None:
        helper = step.site.insn.imm if step.site.insn.is_helper_call else -1
        m = self._map_at.get(before[1])
        if m is None or helper not in MAP_HELPERS:
            if helper not in PURE_HELPERS:
                if m is not None:
                    self.maps.poison(m, f"a call at insn {step.site.index} may change it")
                if helper not in READS_ITS_POINTERS:
                    self.maps.poison_pointed(before[1:6], f"a call at insn {step.site.index} "
                                             "got a pointer into it")
            return
        try:
            key = self.read(before[2], m.key_size)
        except NotRecorded:
            if helper != Helper.MAP_LOOKUP_ELEM:
                self.maps.poison(m, f"the key of the call at insn {step.site.index} is not "
                                 "in the recording")
            return
        if helper == Helper.MAP_LOOKUP_ELEM:
            if after[0]:
                self.maps.learn(m, key, after[0])
        elif after[0] & 0xFFFFFFFF == 0:
            self._update(step, m, key, before, helper)

    def _update(self, step: RecordedStep, m: _Map, key: bytes, before: Sequence[int],
                helper: int) -> None:
        self.maps.forget(m, key)
        if helper == Helper.MAP_DELETE_ELEM:
            if m.type == MapType.ARRAY:
                self.maps.poison(m, "a delete on an array")
            m.entries.pop(key, None)
            return
        if m.type == MapType.LRU_HASH and key not in m.entries and \
                len(m.entries) >= m.max_entries:
            self.maps.poison(m, "an update of a full LRU map may have evicted an entry")
        try:
            m.entries[key] = bytearray(self.read(before[3], m.value_size))
        except NotRecorded:
            self.maps.poison(m, f"the value stored at insn {step.site.index} is not in the "
                             "recording")

    def _ldimm64(self, step: RecordedStep, after: Sequence[int]) -> None:
        """A map's address (for the helper calls given it), or a global's (key 0)."""
        xlated = self._xlated.get(step.site.xlated_index if step.site.xlated_index is not None
                                  else -1)
        m = self._by_id.get(xlated.imm) if xlated is not None else None
        if xlated is None or m is None:
            return
        value = after[step.site.insn.dst]
        if xlated.src == PSEUDO_MAP_FD:
            self._map_at[value] = m
        elif xlated.src == PSEUDO_MAP_VALUE:
            self.maps.learn(m, bytes(4), value - ((xlated.imm64 or 0) >> 32))

    def _follow_packet(self, k: int, after: Sequence[int]) -> None:
        """Until the program has loaded the packet's start and end: then the input's bytes
        are known there (at the start of the first run)."""
        assert self._provenance is not None
        if k >= self._packet_until:
            self._provenance = None
            return
        self._provenance.step(self.rec.steps[k].site, self.regs[k], after)
        bases = {b.name: b.addr for b in (self._provenance.base_of(r) for r in range(11))
                 if b is not None}
        start, end = bases.get("pkt"), bases.get("pkt_end")
        if start is not None and end is not None:
            if end - start == len(self._packet_input):
                self._packet = {start + i: v for i, v in enumerate(self._packet_input)}
            self._provenance = None


def writes_memory(prog: LoadedProgram, step: RecordedStep) -> bool:
    """The step calls a helper or kfunc that may write memory the recording misses."""
    ins = step.site.insn
    return ins.is_kfunc_call or (ins.is_helper_call and ins.imm not in PURE_HELPERS)


def run_starts(rec: Recording) -> list[int]:
    """The steps at which each run of a (multi-run) recording starts."""
    entry = rec.prog.functions[0].start_insn
    starts, depth = [0], 0
    for k, step in enumerate(rec.steps[:-1]):
        ins = step.site.insn
        if ins.is_pseudo_call:
            depth += 1
        elif is_tail_call(step.site) and rec.steps[k + 1].site.index == entry:
            starts.append(k + 1)  # the run went on in another program, not recorded
            depth = 0
        elif ins.is_exit:
            if depth == 0 and rec.steps[k + 1].site.index == entry:
                starts.append(k + 1)
            depth = max(0, depth - 1)
    return starts
