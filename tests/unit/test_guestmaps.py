"""Kernel-structure offsets for reading maps while stopped (qstep.debugger.guestmaps)."""

from __future__ import annotations

import pytest

from qstep.bpf.btf import KIND_INT, KIND_PTR, KIND_STRUCT, KIND_UNION, Btf, BtfMember, BtfType
from qstep.debugger.guestmaps import KernelLayout, member_offset
from qstep.errors import UsageError


def kernel_like_btf() -> Btf:
    """struct bpf_array { u32 elem_size @0; u32 index_mask @4; union { char value[];
    void *ptrs[]; void *pptrs[]; } @ byte 64 }: ``value`` sits inside an anonymous union."""
    u32 = BtfType(1, KIND_INT, "u32", 0, False, 4, int_bits=32)
    ptr = BtfType(2, KIND_PTR, "", 0, False, 0)
    anon = BtfType(3, KIND_UNION, "", 2, False, 8,
                   members=[BtfMember("value", 1, 0), BtfMember("pptrs", 2, 0)])
    array = BtfType(4, KIND_STRUCT, "bpf_array", 3, False, 72,
                    members=[BtfMember("elem_size", 1, 0), BtfMember("index_mask", 1, 32),
                             BtfMember("", 3, 64 * 8)])
    return Btf([BtfType(0, 0, "", 0, False, 0), u32, ptr, anon, array], b"\0")


def test_offsets_look_into_anonymous_members() -> None:
    btf = kernel_like_btf()
    assert member_offset(btf, 4, "index_mask") == 4
    assert member_offset(btf, 4, "value") == 64
    assert member_offset(btf, 4, "pptrs") == 64
    assert member_offset(btf, 4, "nope") is None
    layout = KernelLayout(btf)
    assert (layout.offset("bpf_array", "value"), layout.size("bpf_array")) == (64, 72)


def test_missing_kernel_structures_are_one_line_errors() -> None:
    layout = KernelLayout(kernel_like_btf())
    with pytest.raises(UsageError, match="^the guest kernel's BTF has no struct bpf_htab$"):
        layout.offset("bpf_htab", "buckets")
    with pytest.raises(UsageError, match="struct bpf_array has no member buckets"):
        layout.offset("bpf_array", "buckets")
