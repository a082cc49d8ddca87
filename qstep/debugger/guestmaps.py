"""Maps read from guest memory while the VM is stopped (the agent cannot answer then:
the guest's CPU is halted in the debugger).

A map's ``struct bpf_map *`` is the ``movabs`` immediate the JIT emitted for an
``ld_imm64`` of that map (the xlated dump carries its id). The layouts of the
kernel's ``struct bpf_array``, ``struct bpf_htab`` and its elements come from the
kernel's own BTF (/sys/kernel/btf/vmlinux, fetched before the first stop). Per-CPU
values are CPU 0's (qstep guests have one CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from qstep.agent.replies import MapInfo
from qstep.bpf.btf import KIND_STRUCT, KIND_UNION, Btf
from qstep.bpf.uapi import MapType
from qstep.dwarf.placement import movabs_imm
from qstep.errors import QstepError, UsageError
from qstep.loaded import LoadedProgram

if TYPE_CHECKING:
    from qstep.session import Session

PSEUDO_MAP_FD = 1
ARRAYS = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})
HASHES = frozenset({MapType.HASH, MapType.LRU_HASH, MapType.PERCPU_HASH,
                    MapType.LRU_PERCPU_HASH})
PERCPU = frozenset({MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH})
MASK64 = (1 << 64) - 1
LIST_LIMIT = 4096  # array slots a whole-map listing reads
KERNEL_BTF = "/sys/kernel/btf/vmlinux"
Reader = Callable[[int, int], bytes]


def has_percpu_maps(prog: LoadedProgram) -> bool:
    """Whether reading ``prog``'s maps while stopped needs ``__per_cpu_offset``."""
    return any(info.type in PERCPU for info in prog.maps.values())


def fetch_kernel_btf(session: Session) -> bytes | None:
    """The guest kernel's BTF, through the agent (None when the kernel has none)."""
    try:
        return session.get_file(KERNEL_BTF) or None
    except QstepError:
        return None


def member_offset(btf: Btf, type_id: int, name: str) -> int | None:
    """Byte offset of member ``name`` of a struct/union, looking into anonymous members."""
    for m in btf.members(type_id):
        if m.name == name:
            return m.bit_offset // 8
        if not m.name and btf.resolve(m.type_id).kind in (KIND_STRUCT, KIND_UNION):
            inner = member_offset(btf, m.type_id, name)
            if inner is not None:
                return m.bit_offset // 8 + inner
    return None


class KernelLayout:
    """Offsets and sizes of kernel structures, from the kernel's BTF."""

    def __init__(self, btf: Btf) -> None:
        self._btf = btf

    def _struct(self, name: str) -> int:
        t = self._btf.find_by_name(name, KIND_STRUCT)
        if t is None:
            raise UsageError(f"the guest kernel's BTF has no struct {name}")
        return t.id

    def offset(self, struct: str, member: str) -> int:
        found = member_offset(self._btf, self._struct(struct), member)
        if found is None:
            raise UsageError(f"the guest kernel's struct {struct} has no member {member}")
        return found

    def size(self, struct: str) -> int:
        return self._btf.size_of(self._struct(struct))


def map_addresses(prog: LoadedProgram) -> dict[int, int]:
    """Map id → its ``struct bpf_map *`` in the guest, for every map the program loads."""
    xlated = {ins.index: ins for ins in prog.xlated}
    out: dict[int, int] = {}
    for site in prog.sites.values():
        ins = xlated.get(site.xlated_index) if site.xlated_index is not None else None
        if (ins is None or not ins.is_ldimm64 or ins.src != PSEUDO_MAP_FD
                or site.jit_start is None or site.jit_end is None or ins.imm in out):
            continue
        imm = movabs_imm(prog.jit_bytes(site.jit_start, site.jit_end))
        if imm is not None:
            out[ins.imm] = imm
    return out


class GuestMaps:
    """The program's maps, read through the debugger's memory reads."""

    def __init__(self, prog: LoadedProgram, kernel_btf: bytes | None, read: Reader,
                 percpu_offset: Callable[[], int]) -> None:
        self.prog = prog
        self._kernel_btf = kernel_btf
        self._read = read
        self._percpu_offset = percpu_offset

    @cached_property
    def _layout(self) -> KernelLayout:
        if not self._kernel_btf:
            raise UsageError("reading maps while stopped needs the guest kernel's BTF "
                             "(/sys/kernel/btf/vmlinux), which this session does not have")
        return KernelLayout(Btf.parse(self._kernel_btf))

    @cached_property
    def _addresses(self) -> dict[int, int]:
        return map_addresses(self.prog)

    def info(self, name: str) -> MapInfo | None:
        return self.prog.maps.get(name)

    def _u64(self, addr: int) -> int:
        return int.from_bytes(self._read(addr, 8), "little")

    def _u32(self, addr: int) -> int:
        return int.from_bytes(self._read(addr, 4), "little")

    def _address(self, info: MapInfo) -> int:
        addr = self._addresses.get(info.id)
        if addr is None:
            raise UsageError(f"map {info.name}: its address is not known (the program's "
                             "code never loads it)")
        return addr

    def _value_at(self, info: MapInfo, addr: int) -> bytes:
        if info.type in PERCPU:
            addr = (self._u64(addr) + self._percpu_offset()) & MASK64  # as per_cpu_ptr()
        return self._read(addr, info.value_size)

    def check_supported(self, info: MapInfo) -> None:
        if info.type not in ARRAYS | HASHES:
            raise UsageError(f"map {info.name}: reading a {MapType(info.type).name} map while "
                             "stopped is not supported (array, percpu array, hash, LRU hash "
                             "and their percpu variants are)")

    # -- arrays ----------------------------------------------------------------
    def _array_layout(self, info: MapInfo) -> tuple[int, int]:
        """(address of slot 0, bytes per slot): values, or per-CPU pointers."""
        lay = self._layout
        base = self._address(info)
        values = base + lay.offset("bpf_array", "value")
        if info.type in PERCPU:
            return values, 8
        return values, self._u32(base + lay.offset("bpf_array", "elem_size"))

    def _array_get(self, info: MapInfo, index: int) -> bytes | None:
        if not 0 <= index < info.max_entries:
            return None
        values, stride = self._array_layout(info)
        return self._value_at(info, values + index * stride)

    def _array_values(self, info: MapInfo, count: int) -> list[bytes]:
        """Slots 0..count-1, the slot table in one read."""
        values, stride = self._array_layout(info)
        table = self._read(values, count * stride)
        slots = [table[i * stride:(i + 1) * stride] for i in range(count)]
        if info.type not in PERCPU:
            return [slot[:info.value_size] for slot in slots]
        offset = self._percpu_offset()
        return [self._read((int.from_bytes(p, "little") + offset) & MASK64, info.value_size)
                for p in slots]

    # -- hashes ----------------------------------------------------------------
    def _hash_elements(self, info: MapInfo) -> list[tuple[bytes, int]]:
        """(key, address of the value area) of every element, walking the buckets."""
        lay = self._layout
        base = self._address(info)
        buckets = self._u64(base + lay.offset("bpf_htab", "buckets"))
        count = self._u32(base + lay.offset("bpf_htab", "n_buckets"))
        bsize = lay.size("bucket")
        first = lay.offset("hlist_nulls_head", "first")
        node_at = lay.offset("htab_elem", "hash_node")
        key_at = lay.offset("htab_elem", "key")
        nxt = lay.offset("hlist_nulls_node", "next")
        value_at = (info.key_size + 7) // 8 * 8  # the value (or per-CPU pointer), 8-aligned
        table = self._read(buckets, count * bsize) if count else b""
        out: list[tuple[bytes, int]] = []
        for b in range(count):
            node = int.from_bytes(table[b * bsize + first:b * bsize + first + 8], "little")
            while node and not node & 1:
                if len(out) > info.max_entries + count:
                    raise UsageError(f"map {info.name}: its buckets loop (read while the "
                                     "map was being changed?)")
                key_addr = node - node_at + key_at
                out.append((self._read(key_addr, info.key_size), key_addr + value_at))
                node = self._u64(node + nxt)
        return out

    # -- what the commands use ---------------------------------------------------
    def entries(self, info: MapInfo) -> list[tuple[bytes, bytes]]:
        """Every (key, value): array slots (the first ``LIST_LIMIT``), or the hash's
        elements in bucket order."""
        self.check_supported(info)
        if info.type in ARRAYS:
            values = self._array_values(info, min(info.max_entries, LIST_LIMIT))
            return [(i.to_bytes(4, "little"), v) for i, v in enumerate(values)]
        return [(k, self._value_at(info, v)) for k, v in self._hash_elements(info)]

    def lookup(self, info: MapInfo, key: bytes) -> bytes | None:
        """The value stored under ``key`` (None: no such element)."""
        self.check_supported(info)
        if info.type in ARRAYS:
            return self._array_get(info, int.from_bytes(key[:4], "little"))
        found = next((v for k, v in self._hash_elements(info) if k == key), None)
        return self._value_at(info, found) if found is not None else None
