"""Programs loaded outside qstep (by a loader run in the guest), selected by id/name/tag/pin.

Independent truth: the same object loaded by qstep itself (exact per-instruction
JIT map) — the kernel JITs the same xlated code, so every line-info record of the
foreign program must sit at the same offset in its function.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qstep.bpf.elf import BpfObject
from qstep.errors import UsageError
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.probe.inspector import Inspector
from qstep.probe.spec import parse_specs
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
PIN = "/sys/fs/bpf/qstep_test_l4lb"


@pytest.fixture
def foreign(vm: Session, l4lb_obj: Path) -> Iterator[LoadedProgram]:
    vm.put_file("/tmp/l4lb.o", l4lb_obj.read_bytes())
    status, output = vm.guest_command(
        f"/bin/qstep-agent --load-pin /tmp/l4lb.o l4lb_ingress {PIN}")
    assert status == 0, output
    prog_id = int(output.split("prog_id")[1].split()[0])
    try:
        assert vm.find_program("pinned", PIN) == prog_id
        yield vm.load_foreign(prog_id)
    finally:
        vm.guest_command(f"rm -f {PIN}")


def test_selection_by_id_name_tag_and_pin_agree(vm: Session, foreign: LoadedProgram) -> None:
    assert vm.find_program("id", str(foreign.prog_id)) == foreign.prog_id
    assert vm.find_program("tag", foreign.tag) == foreign.prog_id
    assert vm.find_program("name", "l4lb_ingress") == foreign.prog_id
    with pytest.raises(UsageError, match="no program with id 999999"):
        vm.find_program("id", "999999")


def test_coarse_jit_map_matches_the_exact_one(vm: Session, foreign: LoadedProgram,
                                              l4lb_obj: Path) -> None:
    assert foreign.foreign and [f.name for f in foreign.functions] == [
        "l4lb_ingress", "process_packet"]
    ours = vm.load(BpfObject.open(l4lb_obj), "l4lb_ingress")
    try:
        by_xlated = {s.xlated_index: s for s in ours.sites.values() if s.xlated_index is not None}
        exact = [s for s in foreign.sites.values() if s.exact]
        assert 0 < len(exact) < len(foreign.sites)
        for site in exact:
            twin = by_xlated[site.index]
            assert site.source is not None and twin.source is not None
            assert (site.source.file, site.source.line) == (twin.source.file, twin.source.line)
            assert site.jit_start is not None and twin.jit_start is not None
            assert site.jit_start - site.function.addr == twin.jit_start - twin.function.addr
        # Same code, so the same size; the bytes differ in embedded map and call addresses.
        assert [f.length for f in foreign.functions] == [f.length for f in ours.functions]
    finally:
        vm.unload(ours)


def test_inspect_a_pinned_program(vm: Session, foreign: LoadedProgram) -> None:
    for entry in read_map_file(EXAMPLE / "maps.txt"):
        key, value = encode_entry(entry, foreign.maps[entry.map_name], foreign.btf)
        vm.update_map(foreign, entry.map_name, key, value)
    packets = [read_packet(str(EXAMPLE / "packets" / f"{p}.hex"))
               for p in ("ipv4_to_v4real", "ipv6_to_v6real")]
    inspector = Inspector(vm, foreign, parse_specs(["process_packet print $r3"]))
    inspector.attach()
    try:
        retvals = inspector.run(packets, 1)
    finally:
        inspector.detach()
    assert retvals == [7, 7]
    assert [h.values for h in inspector.hits] == [[0], [1]]  # is_ipv6
    inexact = next(s for s in foreign.sites.values() if not s.exact and not s.removed)
    offset = inexact.index - inexact.function.start_insn
    with pytest.raises(UsageError, match="has no exact JIT address"):
        Inspector(vm, foreign, parse_specs([f"{inexact.function.name}:{offset} print $r1"]))


def disasm_json(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "qstep.cli", "disasm", *args, "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def exact_offsets(listing: dict[str, Any], key: str) -> dict[int, tuple[str, int, int | None]]:
    """``insn[key]`` → (function, JIT offset in it, source line) of every exact instruction."""
    result = {}
    for fl in listing["functions"]:
        func = fl["function"]
        for block in fl["blocks"]:
            line = block["source"]["line"] if block["source"] else None
            for insn in block["insns"]:
                if insn["jit_start"] is not None:
                    result[insn[key]] = (func["name"], insn["jit_start"] - func["addr"], line)
    return result


def test_listing_of_a_pinned_program_agrees_with_the_object_listing(
        bpf_obj: Callable[[str], Path]) -> None:
    """`disasm pinned PATH` numbers instructions as the kernel holds them (xlated),
    `disasm OBJ` as in the object; matched through the xlated index, the JIT offsets
    and source lines agree. deadsub.bpf.c has code the verifier removes, so the two
    numberings really differ."""
    obj = str(bpf_obj("tests/progs/deadsub.bpf.c"))
    theirs = disasm_json("pinned", "/sys/fs/bpf/ds", "--guest-file", f"{obj}:/tmp/ds.o",
                         "--guest-cmd", "/bin/qstep-agent --load-pin /tmp/ds.o lb_main "
                         "/sys/fs/bpf/ds")
    ours = disasm_json(obj, "--prog", "lb_main")
    by_xlated = exact_offsets(ours, "xlated_index")
    foreign = exact_offsets(theirs, "index")
    assert len(foreign) > 20 and set(foreign) <= set(by_xlated)
    for index, place in foreign.items():
        assert place == by_xlated[index], index
    renumbered = [i for fl in ours["functions"] for b in fl["blocks"] for i in b["insns"]
                  if i["xlated_index"] is not None and i["xlated_index"] != i["index"]]
    assert renumbered  # the verifier removed code: the numberings differ
    assert [fl["function"]["name"] for fl in theirs["functions"]] == [
        fl["function"]["name"] for fl in ours["functions"] if not fl["function"]["removed"]]
