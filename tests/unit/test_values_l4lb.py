"""Map values of the bundled example print in the syntax they were written in."""

from collections.abc import Callable
from pathlib import Path

from qstep.bpf.elf import BpfObject
from qstep.bpf.values import format_value, parse_value, split_key_value
from qstep.paths import REPO_ROOT
from qstep.userinput import read_map_file


def test_every_demo_entry_round_trips_through_format(bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("examples/l4lb/l4lb.bpf.c"))
    for entry in read_map_file(REPO_ROOT / "examples/l4lb/maps.txt"):
        m = obj.find_map(entry.map_name)
        for text, type_id in zip(split_key_value(entry.text), (m.key_type_id, m.value_type_id),
                                 strict=True):
            data = parse_value(text, obj.btf, type_id)
            shown = format_value(data, obj.btf, type_id)
            assert parse_value(shown, obj.btf, type_id) == data, (entry, shown)


def test_addresses_numbers_and_unions_are_shown_as_what_they_are(
        bpf_obj: Callable[[str], Path]) -> None:
    obj = BpfObject.open(bpf_obj("examples/l4lb/l4lb.bpf.c"))
    vip, real = obj.find_map("vip_map"), obj.find_map("reals")
    key = parse_value("{addr: {v4: 10.0.0.20}, port: 80, proto: 6}", obj.btf, vip.key_type_id)
    assert format_value(key, obj.btf, vip.key_type_id) == \
        "{addr: {v4: 10.0.0.20}, port: 80, proto: 6, pad: 0}"
    value = parse_value("{flags: 0, vip_num: 3}", obj.btf, vip.value_type_id)
    assert format_value(value, obj.btf, vip.value_type_id) == "{flags: 0, vip_num: 3}"
    r = parse_value("{dstv6: 2001:db8:ff::2, flags: 1, ctl_pos: 1}", obj.btf, real.value_type_id)
    assert format_value(r, obj.btf, real.value_type_id) == \
        "{dst: 0.0.0.0, dstv6: 2001:db8:ff::2, flags: 1, ctl_pos: 1}"
