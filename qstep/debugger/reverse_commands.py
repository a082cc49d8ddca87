"""gdb's reverse commands over a live, recorded run (``qstep debug --reverse``).

``reverse-stepi`` (rsi), ``reverse-nexti`` (rni), ``reverse-step`` (rs),
``reverse-next`` (rn), ``reverse-finish``, ``reverse-continue`` (rc), ``record``
(``record full``: record the next runs; ``record stop``) and ``info record``; every
other command is the live ``CommandSet``'s. While in the past each stop says so, as
gdb's replay mode does; forward commands replay to the live point, then go on live.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from qstep.debugger.commands import Command, CommandSet, Output, site_text
from qstep.debugger.engine import Event
from qstep.debugger.reverse import ReversibleDebugger
from qstep.debugger.reverse_why import why_here
from qstep.errors import UsageError
from qstep.recorder.why_report import answer_json, answer_text

MOVES = {"run", "continue", "stepi", "nexti", "step", "next", "finish", "until", "advance",
         "kill"}
REVERSE_WORDS = frozenset({"reverse-stepi", "rsi", "reverse-nexti", "rni", "reverse-step",
                           "rs", "reverse-next", "rn", "reverse-finish", "reverse-continue",
                           "rc", "record", "rec", "why"})
NO_HISTORY = "No more reverse-execution history."
READS_NOT_REPLAYED = ("(read watchpoints are not replayed: going back stops at writes and "
                      "breakpoints)")
Action = Callable[["ReverseCommands", str], Output]


@dataclass(frozen=True)
class _Reverse:
    name: str
    aliases: tuple[str, ...]
    action: Action
    help: str


class ReverseCommands:
    """The live commands plus gdb's reverse ones (same interface as ``CommandSet``)."""

    def __init__(self, commands: CommandSet, dbg: ReversibleDebugger) -> None:
        self.live = commands
        self.dbg = dbg
        r = ReverseCommands
        self.own = [
            _Reverse("reverse-stepi", ("rsi",), r.cmd_rstepi, "back one BPF instruction"),
            _Reverse("reverse-nexti", ("rni",), r.cmd_rnexti, "back one, over calls"),
            _Reverse("reverse-step", ("rs",), r.cmd_rstep, "back to the previous line"),
            _Reverse("reverse-next", ("rn",), r.cmd_rnext, "back a line, over calls"),
            _Reverse("reverse-finish", (), r.cmd_rfinish, "back to the call of this function"),
            _Reverse("reverse-continue", ("rc",), r.cmd_rcontinue,
                     "back to the previous breakpoint or watched write"),
            _Reverse("why", (), r.cmd_why,
                     "EXPR: every recorded write to EXPR's bytes before this point"),
            _Reverse("record", ("rec",), r.cmd_record,
                     "[full|stop]: record the next runs (reverse-*), or stop recording"),
        ]

    # -- the CommandSet interface ------------------------------------------
    def names(self) -> list[str]:
        mine = [n for c in self.own for n in (c.name, *c.aliases)]
        return sorted(mine + self.live.names())

    def _own(self, word: str) -> _Reverse | None:
        exact = [c for c in self.own if word == c.name or word in c.aliases]
        prefix = [c for c in self.own if c.name.startswith(word)]
        if exact:
            return exact[0]
        if len(prefix) > 1 and word.startswith("rev"):
            raise UsageError(f"ambiguous command '{word}': {', '.join(c.name for c in prefix)}")
        return prefix[0] if len(prefix) == 1 and word.startswith("re") and len(word) > 3 \
            else None

    def find(self, word: str) -> Command | _Reverse:
        return self._own(word) or self.live.find(word)

    def where(self) -> str:
        return self.live.where() + self._marker_text()

    def interrupted(self) -> str:
        """After a Ctrl-C: the live debugger settles at an instruction start."""
        return self.live.interrupted() + self._marker_text()

    def execute(self, line: str) -> Output:
        match = re.match(r"\s*([a-z-]+)\s*(.*)$", line)
        if match is None or line.strip().startswith("#"):
            return self.live.execute(line)
        word, rest = match.groups()
        own = self._own(word)
        if own is not None:
            return own.action(self, rest)
        command = self.live.find(word) if "-" not in word else None
        if command is None:
            raise UsageError(f"unknown command '{word}'; try 'help'")
        if command.name == "info" and rest.split()[:1] in (["record"], ["rec"]):
            return self.info_record()
        if command.name == "help":
            out = self.live.execute(line)
            return Output(out.text + "\n" + "\n".join(
                f"{c.name:<17} {('(' + ', '.join(c.aliases) + ')') if c.aliases else '':<9}"
                f" {c.help}" for c in self.own))
        reads_skipped = self.dbg.replaying and command.name == "continue" and any(
            kind == "read" for _, _, kind in self.dbg.watchpoints)
        out = self.live.execute(line)
        if reads_skipped:
            out.text = f"{READS_NOT_REPLAYED}\n{out.text}"
        return self._marked(out) if command.name in MOVES else out

    def cmd_why(self, arg: str) -> Output:
        """``why EXPR``: who wrote EXPR's bytes before this point (the recording)."""
        answer = why_here(self.dbg, self.live.source, arg)
        return Output("\n".join(answer_text(answer)), answer_json(answer))

    # -- reverse movements ---------------------------------------------------
    def _moves(self, arg: str, move: Callable[[], Event]) -> Output:
        text = arg.strip()
        if text and not (text.isdigit() and int(text) > 0):
            raise UsageError(f"the count must be a whole number of at least 1, not {text!r}")
        event = move()
        for _ in range(int(text or 1) - 1):
            if event.reason != "step":
                break
            event = move()
        return self._stop_output(event)

    def _stop_output(self, event: Event) -> Output:
        out = self.live.event_output(event)
        stop = self.dbg.last_replay_stop
        if stop is not None and stop.watch is not None and event.watch_addr is not None:
            step, addr, old, new = stop.watch
            assert self.dbg.history is not None
            site = self.dbg.history.rec.steps[step].site
            old_hex = old.hex() if old is not None else "unknown"
            out.text = (f"Going back: {site_text(site)} wrote {new.hex()} over {old_hex} "
                        f"({len(new)} bytes at {addr:#x})\n{out.text}")
            out.data["written"] = {"insn": site.index, "addr": addr, "old": old_hex,
                                   "new": new.hex()}
        if event.reason == "history-start":
            out.text = f"{NO_HISTORY}\n{out.text}"
        return self._marked(out)

    def _marked(self, out: Output) -> Output:
        if out.data.get("event") != "stopped":
            return out
        out.text += self._marker_text()
        out.data["replaying"] = self.dbg.replaying
        if self.dbg.replaying and self.dbg.history is not None:
            out.data["replay_position"] = self.dbg.history.pos + 1
            out.data["recorded"] = len(self.dbg.history.rec.steps) - 1
        return out

    def _marker_text(self) -> str:
        history = self.dbg.history
        if not self.dbg.replaying or history is None:
            return ""
        return (f"\n[replaying: instruction {history.pos + 1} of "
                f"{len(history.rec.steps) - 1} recorded; forward commands replay to the "
                "live point, then go on live]")

    def cmd_rstepi(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.dbg.reverse_stepi())

    def cmd_rnexti(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.dbg.reverse_stepi(over_calls=True))

    def cmd_rstep(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.dbg.reverse_step_line(False))

    def cmd_rnext(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.dbg.reverse_step_line(True))

    def cmd_rfinish(self, arg: str) -> Output:
        return self._stop_output(self.dbg.reverse_finish())

    def cmd_rcontinue(self, arg: str) -> Output:
        out = self._stop_output(self.dbg.reverse_continue())
        if any(kind == "read" for _, _, kind in self.dbg.watchpoints):
            out.text = f"{READS_NOT_REPLAYED}\n{out.text}"
        return out

    # -- the recorder --------------------------------------------------------
    def cmd_record(self, arg: str) -> Output:
        what = arg.strip()
        if what not in ("", "full", "stop"):
            raise UsageError("record [full|stop]")
        recorder = self.dbg.recorder
        if recorder is None:
            raise UsageError(f"no recorder: {self.dbg.unavailable}")
        if what == "stop":
            recorder.discard()
            self.dbg.history = None
            return Output("Process record is stopped and the recording of this run is "
                          "deleted.", {"recording": False})
        if self.dbg.record_here():
            return Output("recording from here on", {"recording": True, "from_here": True})
        if self.dbg.running_program:
            return Output("recording starts with the next 'run' (the recorder is armed "
                          "when a run starts)", {"recording": True, "from_here": False})
        return Output("recording every run from its start", {"recording": True,
                                                            "from_here": False})

    def info_record(self) -> Output:
        info = self.dbg.record_info()
        if self.dbg.recorder is None:
            return Output(f"No recording: {info.problem}", {"recording": False,
                                                           "problem": info.problem})
        if not info.recording and info.problem is None:
            return Output("No recording is currently active.", {"recording": False})
        lines = [f"Recording: {'on' if info.recording else 'off'} (the recorder plugin, size "
                 f"limit {info.limit} bytes)"]
        if info.problem:
            lines.append(f"No reverse execution for this run: {info.problem}")
        elif self.dbg.running_program:
            lines.append(f"Recorded {info.instructions} BPF instructions in this run")
        else:
            lines.append("No run now: the next 'run' is recorded from its start")
        if info.position is not None:
            lines.append(f"Replay mode: at instruction {info.position}")
        return Output("\n".join(lines), {"recording": info.recording,
                                         "instructions": info.instructions,
                                         "position": info.position, "limit": info.limit,
                                         "problem": info.problem})
