"""``qstep why`` questions: which ones need the object's DWARF, how they split."""

from __future__ import annotations

import pytest

from qstep.commands.why import names_c_objects
from qstep.errors import UsageError
from qstep.recorder.why import split_question


@pytest.mark.parametrize(("target", "c"), [
    ("tkey.remote_ipv6", True), ("real->dstv6", True), ("vip_num", True),
    ("(struct real_def *)$r7", True), ("mem($r0 + 4, 16)", False), ("$r10 - 48", False),
    ("0xffffc90000001000", False)])
def test_c_objects_are_told_from_addresses(target: str, c: bool) -> None:
    assert names_c_objects(target) is c


def test_the_location_is_after_the_last_at() -> None:
    assert split_question("mem($r0, 4) at tunnel.bpf.c:54") == ("mem($r0, 4)", "tunnel.bpf.c:54")
    with pytest.raises(UsageError, match="ask 'EXPR at LOC'"):
        split_question("tkey.remote_ipv6")
