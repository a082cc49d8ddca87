"""Scenario TOML files: typed model, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from qstep.loadopts import LoadOptions
from qstep.scenario.toml_load import ScenarioError, load_scenario
from qstep.scenario.tomlpos import key_lines

GOOD = """\
# a scenario
[scenario]
object = "prog.o"
program = "xdp_main"
kernels = ["6.1", "6.12"]
maps = ["counters 0=5"]

[scenario.expect]
verifier = "accept"

[[case]]
name = "first"
packet_hex = "00 11 22"
repeat = 3
expect.retval = "XDP_PASS"
expect.maps = { counters = { "0" = "8" } }

[[case.inspect]]
spec = "xdp_main:3 print $r1"
hits = 3
printed = [["1"], ["2"], ["3"]]

[[case]]
packet = "pkt.hex"
[case.expect]
retval = 2
packet_out = "001122"
[case.expect.trace]
insns = 12
lines = [10, 11]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pkt.hex").write_text("aa bb\n")
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_a_full_scenario_reads_into_the_model(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD))
    assert (s.name, s.program, s.kernels) == ("s", "xdp_main", ("6.1", "6.12"))
    assert s.object == tmp_path / "prog.o" and s.source is None
    assert s.maps == (("counters 0=5", f"{tmp_path / 's.toml'}:6"),)
    assert s.verifier.verdict == "accept"
    first, second = s.cases
    assert (first.name, first.packet, first.repeat) == ("first", b"\x00\x11\x22", 3)
    assert first.expect.retval == "XDP_PASS"
    assert first.expect.maps == (("counters", "0", "8"),)
    assert first.expect.inspect[0].printed == (("1",), ("2",), ("3",))
    assert first.where.line == 11
    assert (second.name, second.packet, second.expect.retval) == ("case 2", b"\xaa\xbb", 2)
    assert second.expect.packet_out == b"\x00\x11\x22"
    assert second.expect.trace is not None and second.expect.trace.lines == (10, 11)


@pytest.mark.parametrize(("replace", "by", "message"), [
    ('repeat = 3', 'repat = 3', ":14: unknown key 'case[0].repat'"),
    ('hits = 3', 'hits = "3"', ":20: 'case[0].inspect[0].hits' must be an integer"),
    ('insns = 12', 'insns = 12\nlength = 3', ":30: unknown key 'case[1].expect.trace.length'"),
    ('verifier = "accept"', 'verifier = "maybe"', ':9: \'verifier\' must be "accept"'),
    ('packet = "pkt.hex"', 'packet = "nope.hex"', ":24: packet file"),
    ('packet_hex = "00 11 22"', 'packet_hex = "0g"', ":13: packet_hex: not a file and not hex"),
    ('repeat = 3', 'repeat = 0', ":14: 'repeat' must be 1..1000000"),
    ('object = "prog.o"', 'source = "p.c"\nobject = "prog.o"', ":2: give exactly one of"),
])
def test_errors_name_the_line(tmp_path: Path, replace: str, by: str, message: str) -> None:
    assert replace in GOOD
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, GOOD.replace(replace, by, 1)))
    assert str(err.value).startswith(str(tmp_path / "s.toml"))
    assert message in str(err.value)


def test_malformed_toml_and_missing_table(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"s\.toml: not valid TOML: .*line 2"):
        load_scenario(write(tmp_path, "[scenario]\nobject = \n"))
    with pytest.raises(ScenarioError, match=r"s\.toml:1: missing the \[scenario\] table"):
        load_scenario(write(tmp_path, "[[case]]\npacket_hex = '00'\n"))
    with pytest.raises(ScenarioError, match=r"cannot read"):
        load_scenario(tmp_path / "absent.toml")


def test_key_lines_follow_arrays_of_tables_and_multiline_values() -> None:
    text = ('[a]\nx = [\n  1,\n  2,\n]\ny = """\nz = 1\n"""\n[[b]]\nk = 1\n[[b]]\nk = 2\n'
            '[b.c]\nm = 1\n')
    lines = key_lines(text)
    assert lines[("a", "x")] == 2 and lines[("a", "y")] == 6
    assert ("a", "z") not in lines
    assert lines[("b", 0, "k")] == 10 and lines[("b", 1, "k")] == 12
    assert lines[("b", 1, "c", "m")] == 14


def test_load_options_as_on_the_command_line(tmp_path: Path) -> None:
    text = GOOD.replace('maps = ["counters 0=5"]\n', 'maps = ["counters 0=5"]\nprog_type = "tc"\n'
                        'attach_type = "xdp"\nset = ["verbose=true"]\nmodules = ["nf_conntrack"]\n')
    load = load_scenario(write(tmp_path, text)).load
    assert (load.prog_type, load.attach_type, load.sets, load.modules) == (
        3, 37, ("verbose=true",), ("nf_conntrack",))
    assert load_scenario(write(tmp_path, GOOD)).load == LoadOptions()
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text.replace('"tc"', '"tcx"')))
    assert str(err.value).startswith(f"{tmp_path / 's.toml'}:7: unknown program type 'tcx'")
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text.replace('"verbose=true"', '"verbose"')))
    assert str(err.value) == f"{tmp_path / 's.toml'}:9: expected KEY=VALUE, got 'verbose'"


def test_a_case_takes_a_frame_of_a_pcap(tmp_path: Path) -> None:
    from test_pcap import FRAMES, write_pcap
    write_pcap(tmp_path / "cap.pcap", FRAMES)
    path = tmp_path / "p.toml"
    path.write_text('[scenario]\nobject = "x.o"\n[[case]]\npacket = "cap.pcap#2"\n')
    assert load_scenario(path).cases[0].packet == FRAMES[1]


def test_verifier_check_for_every_case_or_one(tmp_path: Path) -> None:
    text = GOOD.replace('verifier = "accept"', 'verifier = "accept"\nverifier_check = true')
    text = text.replace("retval = 2\n", "retval = 2\nverifier_check = false\n")
    first, second = load_scenario(write(tmp_path, text)).cases
    assert (first.expect.verifier_check, second.expect.verifier_check) == (True, False)
    assert not any(c.expect.verifier_check for c in load_scenario(write(tmp_path, GOOD)).cases)
    with pytest.raises(ScenarioError, match=r"s.toml:28: 'case\[1\].expect.verifier_check' "
                       "must be true or false"):
        load_scenario(write(tmp_path, text.replace("verifier_check = false",
                                                   'verifier_check = "yes"')))
