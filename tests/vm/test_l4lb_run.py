"""The bundled example on every kernel of the matrix: retvals and maps after each path."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import matrix_kernels

from qstep.bpf.elf import BpfObject
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file, read_packet

pytestmark = pytest.mark.vm

EXAMPLE = REPO_ROOT / "examples" / "l4lb"
EXPECTED = json.loads((EXAMPLE / "expected.json").read_text())


@pytest.fixture(params=matrix_kernels())
def guest(request: pytest.FixtureRequest, guests: Callable[[str], Session]) -> Session:
    """The example runs on every kernel of the matrix."""
    return guests(request.param)


@pytest.fixture
def l4lb(guest: Session, l4lb_obj: Path) -> Iterator[LoadedProgram]:
    """A freshly loaded l4lb (fresh maps) filled from maps.txt."""
    obj = BpfObject.open(l4lb_obj)
    prog = guest.load(obj, EXPECTED["program"])
    for entry in read_map_file(EXAMPLE / "maps.txt"):
        key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
        guest.update_map(prog, entry.map_name, key, value)
    yield prog
    guest.unload(prog)


def stats_of(guest: Session, prog: LoadedProgram) -> dict[int, tuple[int, int]]:
    return {struct.unpack("<I", k)[0]: struct.unpack("<QQ", v)
            for k, v in guest.dump_map(prog, "stats")}


@pytest.mark.parametrize("name", sorted(EXPECTED["packets"]))
def test_each_packet_takes_its_path(guest: Session, l4lb: LoadedProgram, name: str) -> None:
    case = EXPECTED["packets"][name]
    packet = read_packet(str(EXAMPLE / case["file"]))
    assert len(packet) == case["length"]
    result = guest.test_run(l4lb, packet)
    assert result.retval == case["retval"]
    stats = stats_of(guest, l4lb)
    expected_stats = {i: (0, 0) for i in stats}
    if case.get("stats"):
        s = case["stats"]
        expected_stats[s["index"]] = (s["packets"], s["bytes"])
    assert stats == expected_stats
    drops = {int.from_bytes(k, "little"): int.from_bytes(v, "little")
             for k, v in guest.dump_map(l4lb, "drops") if any(v)}
    assert drops == {int(k): v for k, v in case.get("drops", {}).items()}
    if case.get("data_out_dst_mac"):
        assert result.data_out[:6] == bytes.fromhex(case["data_out_dst_mac"].replace(":", ""))


def test_stats_accumulate_over_repeated_runs(guest: Session, l4lb: LoadedProgram) -> None:
    case = EXPECTED["packets"]["ipv4_to_v4real"]
    packet = read_packet(str(EXAMPLE / case["file"]))
    result = guest.test_run(l4lb, packet, repeat=25)
    assert result.retval == case["retval"]
    assert stats_of(guest, l4lb)[case["stats"]["index"]] == (25, 25 * case["length"])
