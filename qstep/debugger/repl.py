"""The interactive prompt: history, completion, gdb-style repeat of the last command."""

from __future__ import annotations

import contextlib
import json

from qstep import interrupts
from qstep.debugger.commands import CommandSet
from qstep.debugger.replay_commands import ReplayCommands
from qstep.debugger.reverse_commands import ReverseCommands
from qstep.errors import QstepError
from qstep.paths import cache_dir

try:
    import readline
except ImportError:  # pragma: no cover - readline is part of CPython on Linux
    readline = None  # type: ignore[assignment]

Commands = CommandSet | ReplayCommands | ReverseCommands  # what the prompt can drive
REPEATABLE = {"stepi", "nexti", "step", "next", "continue", "x", "list"}


def _setup_readline(commands: Commands) -> None:
    if readline is None:
        return
    history = cache_dir() / "debug_history"
    with contextlib.suppress(OSError):
        readline.read_history_file(history)
    readline.set_history_length(1000)
    names = commands.names()

    def complete(text: str, state: int) -> str | None:
        matches = [n + " " for n in names if n.startswith(text)]
        return matches[state] if state < len(matches) else None
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")
    import atexit
    atexit.register(lambda: _save(history))


def _save(path: object) -> None:
    if readline is not None:
        with contextlib.suppress(OSError):
            readline.write_history_file(str(path))


def interactive_loop(commands: Commands, as_json: bool) -> None:
    """Read commands until ``quit`` or end of input; errors never end the session."""
    _setup_readline(commands)
    last = ""
    while True:
        try:
            line = input("(qstep) ")
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print()
            interrupts.rearm()
            continue
        if not line.strip() and last:
            line = last
        try:
            out = commands.execute(line)
        except QstepError as err:
            print(f"error: {err}")
            continue
        except KeyboardInterrupt:  # Ctrl-C stopped a continue or a long stepi N
            print(f"\nProgram interrupted.\n{commands.interrupted()}")
            interrupts.rearm()
            continue
        word = line.split()[0] if line.split() else ""
        with contextlib.suppress(QstepError):
            last = line if commands.find(word.split("/")[0]).name in REPEATABLE else ""
        if as_json:
            print(json.dumps(out.data))
        elif out.text:
            print(out.text)
        if out.quit:
            return
