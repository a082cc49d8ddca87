"""gdb's reverse command names in a live session (qstep.debugger.reverse_commands)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from qstep.debugger.commands import CommandSet
from qstep.debugger.reverse import ReversibleDebugger
from qstep.debugger.reverse_commands import REVERSE_WORDS, ReverseCommands
from qstep.errors import UsageError


class _Live:
    """The live command table's lookup only (no debugger behind it)."""

    def find(self, word: str) -> Any:
        raise UsageError(f"unknown command '{word}'; try 'help'")

    def names(self) -> list[str]:
        return ["continue", "stepi"]


def _commands() -> ReverseCommands:
    return ReverseCommands(cast(CommandSet, _Live()), cast(ReversibleDebugger, None))


def test_every_reverse_name_is_known_before_the_guest_boots() -> None:
    table = _commands()
    assert {n for c in table.own for n in (c.name, *c.aliases)} == REVERSE_WORDS
    assert set(table.names()) == REVERSE_WORDS | {"continue", "stepi"}


@pytest.mark.parametrize("word, name", [
    ("rsi", "reverse-stepi"), ("rni", "reverse-nexti"), ("rs", "reverse-step"),
    ("rn", "reverse-next"), ("rc", "reverse-continue"), ("reverse-fin", "reverse-finish"),
    ("reverse-cont", "reverse-continue"), ("rec", "record"), ("record", "record")])
def test_gdb_names_and_abbreviations(word: str, name: str) -> None:
    assert _commands().find(word).name == name


def test_an_ambiguous_prefix_names_the_candidates() -> None:
    with pytest.raises(UsageError, match="ambiguous command 'reverse-s': reverse-stepi, "
                       "reverse-step$"):
        _commands().find("reverse-s")


@pytest.mark.parametrize("line", ["rsi 0", "reverse-next x", "rn -1"])
def test_a_bad_count_is_refused_before_moving(line: str) -> None:
    with pytest.raises(UsageError, match="the count must be a whole number of at least 1"):
        _commands().execute(line)


def test_record_takes_full_or_stop_only() -> None:
    with pytest.raises(UsageError):
        _commands().execute("record bogus")
