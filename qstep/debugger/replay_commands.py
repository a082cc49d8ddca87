"""Debugger commands over a recorded run: forward and backward, with gdb's names.

``qstep debug --record`` records the run first, then debugs it from the recording:
``stepi``/``nexti``/``step``/``next``/``finish``/``continue`` and their
``reverse-*`` forms (``rsi``, ``rni``, ``rs``, ``rn``, ``rc``), ``break``,
``watch``, ``delete``, ``info registers|breakpoints``, ``print``, ``bt``.
Registers are exactly as recorded; memory is what the recording saw (see
``qstep.recorder.replay``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from qstep.debugger.commands import Output, site_data, site_text
from qstep.debugger.regs import BPF_TO_X86
from qstep.debugger.sourcefiles import source_lines
from qstep.errors import UsageError
from qstep.expr import evaluate, parse_expression
from qstep.listing import bpf_text
from qstep.recorder.replay import Replay, Stop
from qstep.recorder.why import ReplayEnv, address_and_size

Action = Callable[["ReplayCommands", str], Output]


@dataclass(frozen=True)
class _Command:
    name: str
    aliases: tuple[str, ...]
    action: Action
    help: str


class ReplayCommands:
    """Parses one command line and runs it against a ``Replay``."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        r = ReplayCommands
        self.commands = [
            _Command("stepi", ("si",), r.cmd_stepi, "one BPF instruction, into calls"),
            _Command("nexti", ("ni",), r.cmd_nexti, "one BPF instruction, over calls"),
            _Command("step", ("s",), r.cmd_step, "to the next source line, into calls"),
            _Command("next", ("n",), r.cmd_next, "to the next source line, over calls"),
            _Command("finish", ("fin",), r.cmd_finish, "until the function returns"),
            _Command("continue", ("c", "cont"), r.cmd_continue, "to a breakpoint/watchpoint"),
            _Command("reverse-stepi", ("rsi",), r.cmd_rstepi, "back one BPF instruction"),
            _Command("reverse-nexti", ("rni",), r.cmd_rnexti, "back one, over calls"),
            _Command("reverse-step", ("rs",), r.cmd_rstep, "back to the previous line"),
            _Command("reverse-next", ("rn",), r.cmd_rnext, "back a line, over calls"),
            _Command("reverse-finish", (), r.cmd_rfinish, "back to the call of this function"),
            _Command("reverse-continue", ("rc",), r.cmd_rcontinue,
                     "back to the previous breakpoint or watched write"),
            _Command("break", ("b", "br"), r.cmd_break, "LOC: set a breakpoint"),
            _Command("watch", (), r.cmd_watch, "mem(ADDR, N) | ADDR: stop at writes to it"),
            _Command("delete", ("d",), r.cmd_delete, "N...: delete breakpoints/watchpoints"),
            _Command("info", ("i",), r.cmd_info, "registers|breakpoints"),
            _Command("print", ("p",), r.cmd_print, "EXPR: $r0..$r10, mem(ADDR, SIZE)"),
            _Command("backtrace", ("bt", "where"), r.cmd_backtrace, "the bpf-to-bpf calls"),
            _Command("help", ("h",), r.cmd_help, "list commands"),
            _Command("quit", ("q", "exit"), r.cmd_quit, "leave the debugger"),
        ]

    def names(self) -> list[str]:
        return sorted(n for c in self.commands for n in (c.name, *c.aliases))

    def find(self, word: str) -> _Command:
        exact = [c for c in self.commands if word == c.name or word in c.aliases]
        prefix = [c for c in self.commands if c.name.startswith(word)]
        if exact or len(prefix) == 1:
            return (exact or prefix)[0]
        if prefix:
            raise UsageError(f"ambiguous command '{word}': {', '.join(c.name for c in prefix)}")
        raise UsageError(f"unknown command '{word}' in a replay; try 'help'")

    def execute(self, line: str) -> Output:
        line = line.strip()
        if not line or line.startswith("#"):
            return Output("")
        match = re.match(r"([a-z-]+)\s*(.*)$", line)
        if not match:
            raise UsageError(f"cannot parse command: {line}")
        return self.find(match.group(1)).action(self, match.group(2))

    # -- where we are ------------------------------------------------------
    def interrupted(self) -> str:
        """After a Ctrl-C (a replay stops between two instructions anyway): where it is."""
        return self.where()

    def where(self) -> str:
        """Where the replay stands now."""
        site = self.replay.site()
        return site_text(site) if site is not None else "at the end of the recording"

    def start(self) -> Output:
        """Where a replay begins: the program's first instruction."""
        return self.stop_output(Stop(0, "start"))

    def stop_output(self, stop: Stop) -> Output:
        r = self.replay
        step = f"step {stop.pos + 1} of {len(r.rec.steps)}"
        if r.exited:
            return Output(f"[end of the recording: the program returned {r.rec.retval}]",
                          {"event": "exited", "retval": r.rec.retval, "step": stop.pos + 1})
        site = r.site()
        lines = []
        if stop.reason == "breakpoint":
            lines.append(f"Breakpoint {stop.breakpoint}, {site_text(site)}  [{step}]")
        else:
            if stop.reason == "start":
                lines.append("[start of the recording: the program's entry]")
            lines.append(f"{site_text(site)}  [{step}]")
        if stop.watch is not None:
            _, addr, old, new = stop.watch
            old_text = old.hex() if old is not None else "unknown"
            lines.insert(0, f"Watchpoint: {len(new)} bytes at {addr:#x}: {old_text} -> "
                         f"{new.hex()}")
        assert site is not None
        if site.source:
            text = source_lines(r.rec.prog, site.source.file).get(site.source.line,
                                                                  site.source.text)
            lines.append(f"{site.source.line}\t{text}")
        lines.append(f"=> {site.index:4}: {bpf_text(r.rec.prog, site)}")
        data = {"event": "stopped", "reason": stop.reason, "step": stop.pos + 1,
                "where": site_data(site), "regs": r.regs().as_dict()}
        if stop.watch is not None:
            _, addr, old, new = stop.watch
            data["watch"] = {"addr": addr, "old": old.hex() if old is not None else None,
                             "new": new.hex()}
        return Output("\n".join(lines), data)

    def _moves(self, arg: str, move: Callable[[], Stop]) -> Output:
        count = int(arg) if arg.strip() else 1
        stop = move()
        for _ in range(count - 1):
            if stop.reason != "step":
                break
            stop = move()
        return self.stop_output(stop)

    # -- movement ----------------------------------------------------------
    def cmd_stepi(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.replay.stepi())

    def cmd_nexti(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.replay.stepi(over_calls=True))

    def cmd_step(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.replay.step_line(over_calls=False))

    def cmd_next(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.replay.step_line(over_calls=True))

    def cmd_finish(self, arg: str) -> Output:
        return self.stop_output(self.replay.finish())

    def cmd_continue(self, arg: str) -> Output:
        return self.stop_output(self.replay.cont())

    def cmd_rstepi(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.replay.reverse_stepi())

    def cmd_rnexti(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.replay.reverse_stepi(over_calls=True))

    def cmd_rstep(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.replay.step_line(False, reverse=True))

    def cmd_rnext(self, arg: str) -> Output:
        return self._moves(arg, lambda: self.replay.step_line(True, reverse=True))

    def cmd_rfinish(self, arg: str) -> Output:
        return self.stop_output(self.replay.finish(reverse=True))

    def cmd_rcontinue(self, arg: str) -> Output:
        return self.stop_output(self.replay.cont(reverse=True))

    # -- breakpoints -------------------------------------------------------
    def cmd_break(self, arg: str) -> Output:
        added = self.replay.add_breakpoint(arg)
        return Output("\n".join(f"Breakpoint {n} at {site_text(s)}" for n, s in added),
                      {"breakpoints": [{"number": n, "where": site_data(s)} for n, s in added]})

    def cmd_watch(self, arg: str) -> Output:
        expr, size = address_and_size(arg)
        value = evaluate(expr, ReplayEnv(self.replay))
        addr = int.from_bytes(value, "little") if isinstance(value, bytes) else value
        number = self.replay.add_watch(addr, size)
        return Output(f"Watchpoint {number}: {size} bytes at {addr:#x}",
                      {"watchpoint": number, "addr": addr, "size": size})

    def cmd_delete(self, arg: str) -> Output:
        for word in arg.split():
            self.replay.delete(int(word))
        return Output("")

    # -- state -------------------------------------------------------------
    def cmd_info(self, arg: str) -> Output:
        what = arg.strip().split(" ")[0]
        if what in ("registers", "reg", "r"):
            regs = self.replay.regs()
            lines = [f"r{n:<3} {regs[n]:#018x}   ({BPF_TO_X86[n]})" for n in range(11)]
            return Output("\n".join(lines), {"regs": regs.as_dict()})
        if what in ("breakpoints", "break", "b"):
            lines = [f"{n:<4} breakpoint  {site_text(s)}"
                     for n, s in self.replay.breakpoints.items()]
            lines += [f"{n:<4} watchpoint  {size} bytes at {addr:#x}"
                      for n, (addr, size) in self.replay.watches.items()]
            return Output("\n".join(lines) or "No breakpoints or watchpoints.")
        raise UsageError("info what? registers, breakpoints")

    def cmd_print(self, arg: str) -> Output:
        if not arg.strip():
            raise UsageError("print what? e.g. print $r1, print mem($r10 - 8, 8)")
        value = evaluate(parse_expression(arg), ReplayEnv(self.replay))
        if isinstance(value, bytes):
            return Output(value.hex(" "), {"value": value.hex()})
        return Output(f"{value:#x} ({value})", {"value": value})

    def cmd_backtrace(self, arg: str) -> Output:
        r = self.replay
        pos = min(r.pos, len(r.rec.steps) - 1)
        frames = [r.rec.steps[pos].site]
        depth = r.depth[pos]
        for q in range(pos - 1, -1, -1):  # the call instruction of each enclosing frame
            if r.depth[q] < depth:
                frames.append(r.rec.steps[q].site)
                depth = r.depth[q]
        lines = [f"#{i}  {site_text(s)}" for i, s in enumerate(frames)]
        return Output("\n".join(lines), {"frames": [site_data(s) for s in frames]})

    def cmd_help(self, arg: str) -> Output:
        return Output("\n".join(f"{c.name:<17} {', '.join(c.aliases):<10} {c.help}"
                                for c in self.commands))

    def cmd_quit(self, arg: str) -> Output:
        return Output("", quit=True)
