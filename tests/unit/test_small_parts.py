from pathlib import Path

import pytest

from qstep.bpf.progtypes import retval_name
from qstep.errors import UsageError
from qstep.paths import REPO_ROOT
from qstep.render import packet_diff
from qstep.userinput import read_map_file, read_packet
from qstep.verifier_log import annotate, last_error_lines


def test_retval_names_per_program_type() -> None:
    assert retval_name(6, 3) == "XDP_TX"
    assert retval_name(3, 2) == "TC_ACT_SHOT"
    assert retval_name(3, 0xFFFFFFFF) == "TC_ACT_UNSPEC"
    assert retval_name(26, 0) is None


def test_packet_from_hex_text_file_with_comments(tmp_path: Path) -> None:
    f = tmp_path / "p.hex"
    f.write_text("# eth\n00 11 22\n33:44 # tail\n")
    assert read_packet(str(f)) == bytes.fromhex("0011223344")


def test_packet_from_raw_file_and_command_line(tmp_path: Path) -> None:
    f = tmp_path / "p.bin"
    f.write_bytes(b"\x00\xff\x80")
    assert read_packet(str(f)) == b"\x00\xff\x80"
    assert read_packet("0xdeadbeef") == bytes.fromhex("deadbeef")


@pytest.mark.parametrize("arg", ["nothex", "abc", "missing/file.hex"])
def test_bad_packets_are_usage_errors(arg: str) -> None:
    with pytest.raises(UsageError):
        read_packet(arg)


def test_map_file_lines_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "maps.txt"
    f.write_text("# comment\nstats 1={packets: 2}\n\nvips  {a: 1}={b: 2}  # c\n")
    entries = read_map_file(f)
    assert [(e.map_name, e.text, e.origin) for e in entries] == [
        ("stats", "1={packets: 2}", f"{f}:2"), ("vips", "{a: 1}={b: 2}", f"{f}:4")]
    f.write_text("lonely\n")
    with pytest.raises(UsageError, match=":1: expected"):
        read_map_file(f)


def test_packet_diff_names_changed_ranges() -> None:
    assert packet_diff(b"abc", b"abc") == ["unchanged (3 bytes)"]
    assert packet_diff(b"\x00\x01\x02\x03", b"\x00\x09\x08\x03") == [
        "offset 0x0001: 01 02 -> 09 08"]
    assert packet_diff(b"\x00", b"\x00\x01")[0] == "length 1 -> 2 bytes"


def test_verifier_log_gets_real_source_lines_instead_of_kernel_comments() -> None:
    log = "func#0 @0\n; bogus synthetic line\n0: (b7) r0 = 0\n1: (61) r1 = *(u32 *)(r1 +0)\n" \
          "invalid access to packet\nprocessed 2 insns\n"
    sources = {0: "int x = 0;  @ a.c:3", 1: "return *p;  @ a.c:4"}
    out = annotate(log, sources.get).splitlines()
    assert "; bogus synthetic line" not in out
    assert out[1:5] == ["; int x = 0;  @ a.c:3", "0: (b7) r0 = 0", "; return *p;  @ a.c:4",
                        "1: (61) r1 = *(u32 *)(r1 +0)"]
    assert last_error_lines(log, 1) == ["invalid access to packet"]


def test_verifier_report_of_7_3_keeps_the_complaint_first_and_real_locations() -> None:
    """A real 7.3 log: the summary is the complaint, not the ``Suggestion:`` block after it."""
    log = (REPO_ROOT / "tests/unit/data/verifier-7.3-reject.log").read_text()
    sources = {2: "void *data = (void *)(long)ctx->data;  @ reject.bpf.c:22",
               5: "if ((void *)(eth + 1) > data_end)  @ reject.bpf.c:27",
               6: "return iph->protocol;  @ reject.bpf.c:29"}
    assert last_error_lines(log, 2) == [
        "invalid access to packet, off=23 size=1, R1(id=0,off=23,r=14)",
        "R1 min value is outside of the allowed memory range"]
    out = annotate(log, sources.get).splitlines()
    at = out.index("At:")
    assert out[at + 1:at + 4] == [
        "  reject_main insn 6: return iph->protocol;  @ reject.bpf.c:29",
        "  Source context:",
        "        | ^-- error: access may be outside object bounds"]
    assert out[at + 4:at + 6] == ["  Instruction context:", "      4 | (07) r3 += 14"]
    assert "  reject_main insn 5: if ((void *)(eth + 1) > data_end)  @ reject.bpf.c:27" in out
    assert not [ln for ln in out if "reject.bpf.c:0:" in ln or ln.endswith("| ...")]
    assert out[-4:-2] == ["Suggestion:", "  Add or adjust a bounds check that proves offset + "
                          "access_size stays within the object."]
