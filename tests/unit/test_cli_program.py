"""How every program command reads PROG: an object, or a selector and its value."""

from __future__ import annotations

import pytest

from qstep.cli import build_parser
from qstep.commands.common import program_source
from qstep.errors import ObjectError, UsageError
from qstep.session import InGuest


@pytest.mark.parametrize("argv", [
    ["disasm", "id", "7"], ["run", "id", "7", "--packet", "00"],
    ["debug", "id", "7", "--packet", "00"], ["trace", "id", "7", "--packet", "00"],
])
def test_a_selector_takes_the_next_positional(argv: list[str]) -> None:
    assert program_source(build_parser().parse_args(argv)) == InGuest("id", "7")


def test_inspect_takes_the_value_from_the_front_of_the_specs() -> None:
    args = build_parser().parse_args(["inspect", "pinned", "/sys/fs/bpf/x", "f print $r1",
                                      "--packet", "00"])
    assert program_source(args, args.specs) == InGuest("pinned", "/sys/fs/bpf/x")
    assert args.specs == ["f print $r1"]


@pytest.mark.parametrize("argv", [["disasm", "tag"], ["run", "name", "--packet", "00"]])
def test_a_selector_without_a_value_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(UsageError, match="needs a value"):
        program_source(build_parser().parse_args(argv))


def test_a_missing_object_is_an_error_not_a_selector() -> None:
    with pytest.raises(ObjectError, match="^nope.o: no such file$"):
        program_source(build_parser().parse_args(["disasm", "nope.o"]))
