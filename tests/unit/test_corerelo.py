"""qstep.dwarf.corerelo: CO-RE relocation records of .BTF.ext and DWARF struct types laid
out by a kernel's BTF. The "kernel" is a second object whose task_struct has a layout
known by C's rules (tests/progs/core.bpf.c declares another)."""

from __future__ import annotations

import pytest
from conftest import clang_bpf
from elftools.elf.elffile import ELFFile

from qstep.bpf.elf import BpfObject
from qstep.dwarf.corerelo import essential_name, model_for, relocated_roots
from qstep.paths import REPO_ROOT

KERNEL = """
struct task_struct {
    long pad[3];            /* 0 */
    unsigned int __state;   /* 24 */
    unsigned int flags : 4; /* a bitfield: bits 0-3 of byte 28 */
    char comm[16];          /* 29: chars need no alignment */
    int pid;                /* 48 */
    long tgid;              /* 56: a size the program's header does not have */
    struct task_struct *real_parent; /* 64 */
};                          /* 72 bytes */
struct task_struct kernel_task;
"""


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> tuple[BpfObject, bytes]:
    d = tmp_path_factory.mktemp("core")
    prog = clang_bpf(REPO_ROOT / "tests" / "progs" / "core.bpf.c", d / "core.o")
    (d / "kernel.c").write_text(KERNEL)
    with clang_bpf(d / "kernel.c", d / "kernel.o").open("rb") as f:
        section = ELFFile(f).get_section_by_name(".BTF")
        assert section is not None
        kernel_btf = section.data()
    return BpfObject.open(prog), kernel_btf


def test_relocation_records_name_their_root_types(objects: tuple[BpfObject, bytes]) -> None:
    obj, _ = objects
    assert obj.btf_ext is not None
    kinds = {(r.access, r.kind) for r in obj.btf_ext.core_relos["raw_tp/sys_enter"]
             if obj.btf.type_by_id(r.type_id).name == "bpf_func_id"}
    assert kinds == {("0", 11), ("1", 11), ("2", 10)}  # enum value / value exists
    assert relocated_roots(obj) == {"task_struct", "task_struct___pre514",
                                    "bpf_raw_tracepoint_args", "__sk_buff"}


def test_relocated_struct_takes_the_kernels_offsets_and_size(
        objects: tuple[BpfObject, bytes]) -> None:
    obj, kernel_btf = objects
    model = model_for(obj, lambda: kernel_btf)
    task = model.find_type("struct task_struct")
    assert task is not None
    # comm, pid, real_parent and __state move; tgid (int here, long there) is dropped
    assert [(m.name, m.offset) for m in task.members] == [
        ("comm", 29), ("pid", 48), ("real_parent", 64), ("__state", 24)]
    assert task.byte_size == 72
    old = model.find_type("struct task_struct___pre514")  # 'long state': not in the kernel
    assert old is not None and old.members == []


def test_without_kernel_btf_relocated_types_show_nothing(
        objects: tuple[BpfObject, bytes]) -> None:
    obj, _ = objects
    task = model_for(obj, lambda: None).find_type("struct task_struct")
    assert task is not None and task.members == []


def test_flavors() -> None:
    assert [essential_name(n) for n in ("task_struct___pre514", "a___b___c", "___x", "s")] == [
        "task_struct", "a", "___x", "s"]
