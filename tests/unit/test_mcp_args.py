"""The MCP tools' options: built as the command line's and parsed by its own parser,
errors raised as one-line ``UsageError``s; the output sink the trace tool keeps."""

from __future__ import annotations

import pytest

from qstep.commands.lines import Lines
from qstep.errors import UsageError
from qstep.mcptools.server import input_args, parse, program_args


def test_run_options_parse_as_the_command_line() -> None:
    args = parse(["run", *program_args("x.o", "main", "6.12"),
                  *input_args(["a.hex", "b.hex"], "maps.txt",
                              ["stats 1={packets: 2}", "vals  -1=7"]), "--repeat=3"])
    assert (args.command, str(args.object), args.prog, args.kernel) == ("run", "x.o", "main",
                                                                        "6.12")
    assert (args.packet, str(args.maps), args.repeat, args.json) == (["a.hex", "b.hex"],
                                                                     "maps.txt", 3, True)
    # The value keeps its text; a leading space keeps '-1=7' from reading as an option.
    assert [(n, v.strip()) for n, v in args.map] == [("stats", "1={packets: 2}"),
                                                      ("vals", "-1=7")]


def test_a_packet_that_looks_like_an_option_is_a_packet() -> None:
    assert parse(["trace", "x.o", *input_args(["--raw"], None, None)]).packet == "--raw"


def test_bad_options_are_one_line_usage_errors() -> None:
    with pytest.raises(UsageError, match="argument --repeat: must be a whole number of at "
                       "least 1, not '0'"):
        parse(["run", "x.o", "--packet=a", "--repeat=0"])
    with pytest.raises(UsageError, match="the following arguments are required: --packet"):
        parse(["run", "x.o"])


def test_kept_lines_hold_the_json_objects_only() -> None:
    lines = Lines(keep=True)
    lines.data({"step": 1})
    lines.text("not kept")
    lines.data({"output": {}})
    assert lines.kept == [{"step": 1}, {"output": {}}]


def test_printed_lines_go_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    lines = Lines()
    lines.data({"step": 1})
    lines.text("text")
    assert capsys.readouterr().out == '{"step": 1}\ntext\n'
    assert lines.kept == []
