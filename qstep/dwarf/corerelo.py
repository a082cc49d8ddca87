"""CO-RE: struct types whose field accesses libbpf relocated at load, laid out as the
guest kernel has them.

A program built against a vmlinux.h-style header (``preserve_access_index``) has its
own idea of ``struct task_struct``: a few fields, at offsets of some other kernel. The
object's DWARF describes that local layout; the bytes in guest memory follow the
guest kernel's. For every struct or union that is the root of a field relocation in
``.BTF.ext`` (and, recursively, the aggregates such a struct embeds by value), the
relocator gives each member the guest kernel's offset, found by name in the kernel's
BTF (the ``___flavor`` suffix dropped, as libbpf does). Members the kernel does not
have, bitfields, and members whose size differs are dropped: they are not shown rather
than shown wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from qstep.bpf.btf import KIND_STRUCT, KIND_UNION, Btf
from qstep.bpf.elf import BpfObject
from qstep.dwarf.model import DwarfModel
from qstep.dwarf.types import STRUCT, UNION, CType, Member

FIELD_RELO_KINDS = frozenset(range(6))  # BPF_CORE_FIELD_BYTE_OFFSET .. FIELD_RSHIFT_U64


def essential_name(name: str) -> str:
    """``task_struct___pre514`` → ``task_struct`` (libbpf's flavor convention)."""
    head, sep, _ = name.partition("___")
    return head if sep and head else name


def relocated_roots(obj: BpfObject) -> frozenset[str]:
    """Names of the structs/unions the object's field relocations start from."""
    if obj.btf_ext is None:
        return frozenset()
    names = set()
    for relos in obj.btf_ext.core_relos.values():
        for relo in relos:
            t = obj.btf.resolve(relo.type_id)
            if relo.kind in FIELD_RELO_KINDS and t.kind in (KIND_STRUCT, KIND_UNION) and t.name:
                names.add(t.name)
    return frozenset(names)


class CoreRelocator:
    """Re-lays out relocated DWARF struct types with the guest kernel's offsets."""

    def __init__(self, roots: frozenset[str], kernel: Btf) -> None:
        self.roots = roots
        self.kernel = kernel
        self._done: set[int] = set()

    def __call__(self, t: CType) -> None:
        """Hook for each struct/union type built from DWARF."""
        if t.kind in (STRUCT, UNION) and t.name in self.roots:
            self.relocate(t)

    def relocate(self, t: CType) -> None:
        """Give ``t`` (in place) the kernel's size and member offsets."""
        if id(t) in self._done:
            return
        self._done.add(id(t))
        kind = KIND_STRUCT if t.kind == STRUCT else KIND_UNION
        found = self.kernel.find_by_name(essential_name(t.name), kind)
        if found is None:  # the kernel has no such type: nothing of it can be shown
            t.members = []
            return
        kernel_members = {m.name: m for m in self.kernel.members(found.id) if m.name}
        members = []
        for m in t.members:
            km = kernel_members.get(m.name)
            if km is None or km.bitfield_size or m.bit_size or km.bit_offset % 8:
                continue
            inner = m.type.strip()
            if inner.kind in (STRUCT, UNION):
                self.relocate(inner)  # embedded in kernel memory: the kernel's layout too
            if self.kernel.size_of(km.type_id) != m.type.byte_size:
                continue
            members.append(Member(m.name, m.type, km.bit_offset // 8))
        t.members = members
        t.size = found.size


def model_for(obj: BpfObject, kernel_btf: Callable[[], bytes | None]) -> DwarfModel:
    """The object's DWARF model, its CO-RE-relocated types laid out by the guest
    kernel's BTF (fetched only for an object with field relocations; without it, those
    types keep no members rather than the object's own offsets)."""
    model = DwarfModel.from_bytes(obj.data)
    roots = relocated_roots(obj)
    if roots:
        data = kernel_btf()
        model.types.on_built = CoreRelocator(roots, parsed_btf(data) if data else Btf([], b"\0"))
    return model


@lru_cache(maxsize=2)
def parsed_btf(data: bytes) -> Btf:
    """The kernel's BTF parsed once per session (4 MB: about a second)."""
    return Btf.parse(data)
