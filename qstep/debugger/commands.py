"""Debugger commands with gdb's names and abbreviations; each returns text and JSON data."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qstep.agent.replies import RunResult
from qstep.bpf.progtypes import retval_name
from qstep.debugger.agentmaps import AgentMaps, MapDumper
from qstep.debugger.engine import BpLocation, Breakpoint, Debugger, Event
from qstep.debugger.env import StoppedEnv
from qstep.debugger.guestmaps import GuestMaps
from qstep.debugger.locations import resolve
from qstep.debugger.map_commands import MapCommands
from qstep.debugger.regs import BPF_TO_X86
from qstep.debugger.source import SourceView
from qstep.debugger.source_commands import SourceCommands
from qstep.debugger.sourcefiles import source_lines
from qstep.errors import UsageError
from qstep.expr.evaluate import evaluate
from qstep.expr.parser import parse_expression
from qstep.listing import bpf_text, build_listing, format_listing
from qstep.loaded import InsnSite
from qstep.runkinds import duration_text, outcome_text
from qstep.verifier.check import union_at
from qstep.verifier.log import VerifierLog, parse_known


@dataclass
class Output:
    """A command's result: text for people, data for tools."""

    text: str
    data: dict[str, Any] = field(default_factory=dict)
    quit: bool = False


Handler = Callable[["CommandSet", str], Output]


@dataclass(frozen=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    handler: Handler
    help: str


def site_text(site: InsnSite | None) -> str:
    if site is None:
        return "outside the program"
    offset = site.index - site.function.start_insn
    where = f" at {site.source.short()}" if site.source else ""
    return f"{site.function.name}:{offset} (insn {site.index}){where}"


def site_data(site: InsnSite | None) -> dict[str, Any] | None:
    if site is None:
        return None
    return {"insn": site.index, "function": site.function.name,
            "offset": site.index - site.function.start_insn,
            "file": site.source.file if site.source else None,
            "line": site.source.line if site.source else None,
            "jit_addr": site.jit_start}


OUTSIDE_NOTE = ("note: a soundness violation only if this run came through no pruning point: "
                "where the verifier pruned it compared only live precise values (qstep trace "
                "--check-verifier follows the run and judges exactly that)")


class CommandSet:
    """Parses one command line and runs it against a ``Debugger``."""

    def __init__(self, dbg: Debugger, source: SourceView | None = None) -> None:
        self.dbg = dbg
        self.source = SourceCommands(source) if source is not None else None
        running = AgentMaps(dbg.prog, dbg.runner) if isinstance(dbg.runner, MapDumper) else None
        self.maps = MapCommands(GuestMaps(dbg.prog, dbg.kernel_btf, dbg.read_memory,
                                          dbg.percpu_offset), self.source, running,
                                lambda: dbg.stopped)
        if self.source is not None:
            self.source.map_element = self.maps.element
        self.commands: list[Command] = []
        self._verifier: VerifierLog | None = None  # parsed on the first 'info verifier'
        self._register()

    # -- dispatch ------------------------------------------------------
    def _register(self) -> None:
        add = self._add
        add("run", ("r",), CommandSet.cmd_run, "start the program on its packet")
        add("continue", ("c", "cont"), CommandSet.cmd_continue, "continue until a breakpoint")
        add("stepi", ("si",), CommandSet.cmd_stepi, "one BPF instruction, into calls")
        add("nexti", ("ni",), CommandSet.cmd_nexti, "one BPF instruction, over calls")
        add("step", ("s",), CommandSet.cmd_step, "to the next source line, into bpf calls")
        add("next", ("n",), CommandSet.cmd_next, "to the next source line, over calls")
        add("finish", ("fin",), CommandSet.cmd_finish, "until the current function returns")
        add("until", ("u",), CommandSet.cmd_until, "LOC: run to LOC or the frame's return")
        add("advance", (), CommandSet.cmd_advance, "LOC: run to LOC")
        add("break", ("b", "br"), CommandSet.cmd_break, "LOC: set a breakpoint")
        add("tbreak", ("tb",), CommandSet.cmd_tbreak, "LOC: set a one-time breakpoint")
        add("delete", ("d",), CommandSet.cmd_delete, "[N...]: delete breakpoints")
        add("disable", (), CommandSet.cmd_disable, "N...: disable breakpoints")
        add("enable", (), CommandSet.cmd_enable, "N...: enable breakpoints")
        add("info", ("i",), CommandSet.cmd_info, "registers|breakpoints|frame|maps")
        add("print", ("p",), CommandSet.cmd_print, "EXPR: $r0..$r10, mem(ADDR, SIZE), C ops")
        add("x", (), CommandSet.cmd_x, "/NFU ADDR: examine memory (U: b h w g; F: x d u)")
        add("backtrace", ("bt", "where"), CommandSet.cmd_backtrace, "the bpf-to-bpf call stack")
        add("frame", ("f",), CommandSet.cmd_frame, "[N]: select frame N (C variables)")
        add("up", (), CommandSet.cmd_up, "[N]: select the caller's frame")
        add("down", (), CommandSet.cmd_down, "[N]: select the callee's frame")
        add("ptype", (), CommandSet.cmd_ptype, "EXPR|TYPE: the type, structs expanded")
        add("watch", (), CommandSet.cmd_watch, "EXPR: stop when a C object is written")
        add("display", ("disp",), CommandSet.cmd_display, "[/FMT] EXPR: print after each stop")
        add("undisplay", (), CommandSet.cmd_undisplay, "[N...]: stop displaying")
        add("rwatch", (), CommandSet.cmd_rwatch, "EXPR: stop when a C object is read")
        add("awatch", (), CommandSet.cmd_awatch, "EXPR: stop when a C object is accessed")
        add("whatis", (), CommandSet.cmd_whatis, "EXPR|TYPE: the type's name")
        add("list", ("l",), CommandSet.cmd_list, "[LOC]: source around a location")
        add("disassemble", ("disas",), CommandSet.cmd_disas, "source / BPF / x86 around pc")
        add("kill", ("k",), CommandSet.cmd_kill, "let the run finish without breakpoints")
        add("help", ("h",), CommandSet.cmd_help, "list commands")
        add("quit", ("q", "exit"), CommandSet.cmd_quit, "leave the debugger")

    def _add(self, name: str, aliases: tuple[str, ...], handler: Handler, text: str) -> None:
        self.commands.append(Command(name, aliases, handler, text))

    def names(self) -> list[str]:
        return sorted(n for c in self.commands for n in (c.name, *c.aliases))

    def find(self, word: str) -> Command:
        exact = [c for c in self.commands if word == c.name or word in c.aliases]
        if exact:
            return exact[0]
        prefix = [c for c in self.commands if c.name.startswith(word)]
        if len(prefix) == 1:
            return prefix[0]
        if prefix:
            raise UsageError(f"ambiguous command '{word}': "
                             f"{', '.join(c.name for c in prefix)}")
        raise UsageError(f"unknown command '{word}'; try 'help'")

    def execute(self, line: str) -> Output:
        parsed = self._parse(line)
        if parsed is None:
            return Output("")
        command, fmt, rest = parsed
        check_argument(command.name, rest)
        return command.handler(self, (fmt or "") + (" " if fmt else "") + rest
                               if command.name in ("x", "print", "display") else rest)

    def _parse(self, line: str) -> tuple[Command, str | None, str] | None:
        line = line.strip()
        if not line or line.startswith("#"):
            return None
        match = re.match(r"([a-z]+)(/\S*)?\s*(.*)$", line)
        if not match:
            raise UsageError(f"cannot parse command {line!r}: a command starts with a word "
                             "of lowercase letters (try 'help')")
        word, fmt, rest = match.groups()
        return self.find(word), fmt, rest

    @classmethod
    def check_syntax(cls, line: str) -> tuple[str, str] | None:
        """Refuse, with no debugger at hand (before a guest boots), a line that cannot
        run in any state: an unknown command, a bad count, an argument where none goes.
        Returns the command's name and argument (None for an empty line)."""
        table = object.__new__(cls)
        table.commands = []
        table._register()
        parsed = table._parse(line)
        if parsed is None:
            return None
        check_argument(parsed[0].name, parsed[2])
        return parsed[0].name, parsed[2]

    # -- events --------------------------------------------------------
    def event_output(self, event: Event) -> Output:
        if event.kind == "exited":
            assert event.retval is not None
            name = retval_name(self.dbg.prog.prog_type, event.retval)
            label = f"{event.retval}" + (f" ({name})" if name else "")
            result = RunResult(event.retval, event.duration_ns or 0, event.data_out,
                               event.ctx_out)
            text = "\n".join([f"[program exited: retval {label}, "
                                 f"{duration_text(event.duration_ns or 0)}]",
                              *outcome_text(self.dbg.prog.prog_type,
                                            self.dbg.request.ctx or self.dbg.request.data,
                                            result),
                              *(event.output.text() if event.output else [])])
            return Output(text, {"event": "exited", "retval": event.retval,
                                 "retval_name": name, "duration_ns": event.duration_ns,
                                 "packet_out": event.data_out.hex(),
                                 **({"output": event.output.as_json()} if event.output else {})})
        lines: list[str] = []
        watched: list[dict[str, Any]] = []
        if event.watch_addr is not None and self.source is not None:
            lines, watched = self.source.watches.report(event)
        if event.breakpoint is not None:
            lines.append(f"Breakpoint {event.breakpoint.number}, {site_text(event.site)}")
        else:
            lines.append(site_text(event.site))
        lines.extend(self._here(event.site))
        data = {"event": "stopped", "reason": event.reason, "where": site_data(event.site),
                "breakpoint": event.breakpoint.number if event.breakpoint else None,
                "location": event.location,
                "regs": self.dbg.regs().as_dict(), **({"watch": watched} if watched else {})}
        if self.source is not None and self.source.displays:
            shown, shown_data = self.source.show_displays()
            lines.append(shown)
            data.update(shown_data)
        return Output("\n".join(lines), data)

    def interrupted(self) -> str:
        """After a Ctrl-C: settle at the start of a BPF instruction, say where that is."""
        self.dbg.settle()
        event = self.dbg.last_event
        if event is not None and event.kind == "exited" and not self.dbg.running_program:
            return self.event_output(event).text  # it ended before an instruction start
        return self.where()

    def where(self) -> str:
        """Where the program stands now (after an interrupt)."""
        if not self.dbg.stopped:
            return "the program is running"
        if not self.dbg.running_program:
            return "the program is not being run"
        site = self.dbg.site()
        return "\n".join([site_text(site), *self._here(site)]) if site else \
            f"at {self.dbg.pc():#x}, outside the program (continue to go on)"

    def _here(self, site: InsnSite | None) -> list[str]:
        if site is None:
            return []
        lines = []
        if site.source:
            text = source_lines(self.dbg.prog, site.source.file).get(site.source.line,
                                                                     site.source.text)
            lines.append(f"{site.source.line}\t{text}")
        lines.append(f"=> {site.index:4}: {bpf_text(self.dbg.prog, site)}")
        return lines

    # -- execution commands ------------------------------------------
    def cmd_run(self, arg: str) -> Output:
        return self.event_output(self.dbg.run())

    def cmd_continue(self, arg: str) -> Output:
        return self.event_output(self.dbg.cont())

    def _repeat(self, arg: str, fn: Callable[[], Event]) -> Output:
        count = int(arg) if arg.strip() else 1  # checked by check_argument
        event = fn()
        for _ in range(count - 1):
            if event.kind == "exited" or event.reason == "breakpoint":
                break
            event = fn()
        return self.event_output(event)

    def cmd_stepi(self, arg: str) -> Output:
        return self._repeat(arg, lambda: self.dbg.stepi(False))

    def cmd_nexti(self, arg: str) -> Output:
        return self._repeat(arg, lambda: self.dbg.stepi(True))

    def cmd_step(self, arg: str) -> Output:
        return self._repeat(arg, lambda: self.dbg.step_line(False))

    def cmd_next(self, arg: str) -> Output:
        if self.source is not None:  # also over inlined calls, as gdb does
            return self._repeat(arg, self.source.next_line)
        return self._repeat(arg, lambda: self.dbg.step_line(True))

    def cmd_finish(self, arg: str) -> Output:
        inlined = self.source.finish_inlined() if self.source is not None else None
        if inlined is not None:
            return self.event_output(inlined)
        out = self.event_output(self.dbg.finish())
        if out.data.get("event") == "stopped":
            r0 = self.dbg.regs()[0]
            out.text = f"Run till exit; value returned: r0 = {r0:#x} ({r0})\n" + out.text
        return out

    def cmd_until(self, arg: str) -> Output:
        if not arg.strip():
            return self.cmd_next("")
        return self.event_output(self.dbg.advance(arg, stop_at_return=True))

    def cmd_advance(self, arg: str) -> Output:
        return self.event_output(self.dbg.advance(arg))

    def cmd_kill(self, arg: str) -> Output:
        event = self.dbg.kill()
        return self.event_output(event) if event else Output("the program is not running")

    def cmd_quit(self, arg: str) -> Output:
        return Output("", quit=True)

    # -- breakpoints ---------------------------------------------------
    def cmd_break(self, arg: str, temporary: bool = False) -> Output:
        if not arg.strip():
            site = self.dbg.site() if self.dbg.stopped else None
            if site is None:
                raise UsageError("break needs a location: func:offset, file.c:line, func")
            arg = f"#{site.index}"
        bp = self.dbg.add_breakpoint(arg.strip(), temporary)
        kind = "Temporary breakpoint" if temporary else "Breakpoint"
        if len(bp.locations) == 1:
            text = f"{kind} {bp.number} at {bp.addr:#x}: {site_text(bp.site)}"
        else:
            text = "\n".join([f"{kind} {bp.number} at {bp.location} "
                              f"({len(bp.locations)} locations)",
                              *(f"  {bp.number}.{n}  {loc.addr:#x}: {site_text(loc.site)}"
                                for n, loc in enumerate(bp.locations, start=1))])
        text = f"{bp.note}\n{text}" if bp.note else text
        return Output(text, {"breakpoints": [self._bp_data(bp)]})

    def cmd_tbreak(self, arg: str) -> Output:
        return self.cmd_break(arg, temporary=True)

    @staticmethod
    def _bp_data(bp: Breakpoint) -> dict[str, Any]:
        return {"number": bp.number, "location": bp.location, "enabled": bp.enabled,
                "hits": bp.hits, "temporary": bp.temporary, "where": site_data(bp.site),
                "locations": [{"number": f"{bp.number}.{n}", "enabled": loc.enabled,
                               "hits": loc.hits, "where": site_data(loc.site),
                               "path": _path(loc)}
                              for n, loc in enumerate(bp.locations, start=1)],
                "note": bp.note or None}

    def _numbers(self, arg: str) -> list[int]:
        try:
            return [int(n) for n in arg.split()]
        except ValueError:
            raise UsageError(f"expected breakpoint numbers, got '{arg}'") from None

    def _locations(self, arg: str) -> list[tuple[int, int | None]]:
        """``N`` or ``N.M`` (location M of breakpoint N) for enable/disable."""
        out: list[tuple[int, int | None]] = []
        for word in arg.split():
            match = re.fullmatch(r"(\d+)(?:\.(\d+))?", word)
            if not match:
                raise UsageError(f"expected breakpoint numbers (N or N.M), got '{word}'")
            out.append((int(match.group(1)), int(match.group(2)) if match.group(2) else None))
        return out

    def cmd_delete(self, arg: str) -> Output:
        numbers = self._numbers(arg) or list(self.dbg.breakpoints)
        for n in numbers:
            self.dbg.delete_breakpoint(n)
        return Output(f"deleted {len(numbers)} breakpoint(s)", {"deleted": numbers})

    def cmd_disable(self, arg: str) -> Output:
        for n, loc in self._locations(arg):
            self.dbg.set_enabled(n, False, loc)
        return Output("")

    def cmd_enable(self, arg: str) -> Output:
        for n, loc in self._locations(arg):
            self.dbg.set_enabled(n, True, loc)
        return Output("")

    # -- inspection ----------------------------------------------------
    def cmd_info(self, arg: str) -> Output:
        what, _, rest = arg.strip().partition(" ")
        if what in ("registers", "reg", "r", "registers"):
            return self.info_registers(rest)
        if what in ("breakpoints", "break", "b"):
            return self.info_breakpoints()
        if what in ("frame", "f"):
            if self.source is not None:
                return Output(*self.source.info_frame())
            return self.cmd_backtrace("1")
        if what == "display" and self.source is not None:
            return Output(*self.source.show_displays())
        if what in ("locals", "args") and self.source is not None:
            return Output(*(self.source.info_locals() if what == "locals"
                            else self.source.info_args()))
        if what in ("verifier", "v"):
            return self.info_verifier(rest)
        if what == "maps":
            return Output(*self.maps.info_maps())
        raise UsageError("info what? registers, breakpoints, frame, locals, args, display, "
                         "verifier, maps")

    def info_verifier(self, which: str) -> Output:
        """Each register's value beside what the verifier proved before this instruction."""
        site = self.dbg.site()
        if site is None:
            raise UsageError("the program is not stopped at a BPF instruction (run, stepi or "
                             "continue to one)")
        if self.dbg.prog.foreign:
            raise UsageError("this program was loaded outside qstep: the kernel keeps no "
                             "verifier log after a load (load the object with qstep and "
                             "--verifier-log to see it)")
        if not self.dbg.prog.verifier_log:
            raise UsageError("the verifier's log was not kept: start with --verifier-log")
        if self._verifier is None:
            self._verifier = parse_known(self.dbg.prog.verifier_log)
        regs = self.dbg.regs()
        wanted = [bpf_register(w) for w in which.split()] if which else list(range(11))
        lines, data = [f"before insn {site.index}: what the verifier proved on the "
                       f"{len(self._verifier.by_insn.get(site.index, []))} path(s) it "
                       "explored here"], {}
        for n in wanted:
            states = union_at(self._verifier, site.index, n)
            claims = [s.describe() for s in states]
            inside = any(s.contains(regs[n]) for s in states) if states else None
            mark = "" if inside is not False else "   <- outside every state kept here"
            lines.append(f"r{n:<3} {regs[n]:#018x}   verifier: "
                         f"{' | '.join(claims) if claims else 'not initialized'}{mark}")
            data[f"r{n}"] = {"value": regs[n], "verifier": claims, "inside": inside}
        if any(r["inside"] is False for r in data.values()):
            lines.append(OUTSIDE_NOTE)
        return Output("\n".join(lines), {"insn": site.index, "regs": data})

    def info_registers(self, which: str) -> Output:
        regs = self.dbg.regs()
        wanted = [bpf_register(w) for w in which.split()] if which else list(range(11))
        for n in wanted:
            if not 0 <= n <= 10:
                raise UsageError(f"no register r{n}")
        lines = [f"r{n:<3} {regs[n]:#018x} {self._signed(regs[n]):>21}   ({BPF_TO_X86[n]})"
                 for n in wanted]
        return Output("\n".join(lines), {"regs": {f"r{n}": regs[n] for n in wanted}})

    @staticmethod
    def _signed(value: int) -> int:
        return value - (1 << 64) if value >> 63 else value

    def info_breakpoints(self) -> Output:
        rows = ["Num  Enb  Hits  Address             What"]
        for bp in self.dbg.breakpoints.values():
            temp = "  (temporary)" if bp.temporary else ""
            enb = "y" if bp.enabled else "n"
            if len(bp.locations) == 1:
                rows.append(f"{bp.number:<4} {enb:<4} {bp.hits:<5} {bp.addr:#018x}  "
                            f"{site_text(bp.site)}{_path_text(bp.locations[0])}{temp}")
                continue
            rows.append(f"{bp.number:<4} {enb:<4} {bp.hits:<5} {'<MULTIPLE>':<18}  "
                        f"{bp.location}{temp}")
            for n, loc in enumerate(bp.locations, start=1):
                number = f"{bp.number}.{n}"
                rows.append(f"{number:<4} {'y' if loc.enabled else 'n':<4} {loc.hits:<5} "
                            f"{loc.addr:#018x}  {site_text(loc.site)}{_path_text(loc)}")
        data = [self._bp_data(b) for b in self.dbg.breakpoints.values()]
        return Output("\n".join(rows) if data else "No breakpoints.", {"breakpoints": data})

    def cmd_print(self, arg: str) -> Output:
        fmt, arg = (arg[1:].partition(" ")[::2]) if arg.startswith("/") else ("", arg)
        if not arg.strip():
            raise UsageError("print what? e.g. print $r1 + 8, print mem($r10 - 8, 8)")
        if fmt == "v":  # the register beside what the verifier proved about it here
            register = arg.strip().removeprefix("$")
            if not re.fullmatch(r"r(10|[0-9])", register):
                raise UsageError("print/v takes a register: print/v $r3")
            return self.info_verifier(register)
        mapped = self.maps.print(arg, fmt) if self.dbg.stopped or self.maps.running else None
        if mapped is not None:
            return Output(*mapped)
        typed = self.source.print(fmt, arg) if self.source is not None else None
        if typed is not None:
            return Output(*typed)
        value = evaluate(parse_expression(arg), StoppedEnv(self.dbg))
        if isinstance(value, bytes):
            return Output(value.hex(" "), {"value": value.hex()})
        signed = self._signed(value)
        text = f"{value:#x} ({value})" + (f" [{signed}]" if signed != value else "")
        return Output(text, {"value": value})

    def cmd_x(self, arg: str) -> Output:
        fmt, _, expr = arg.partition(" ") if arg.startswith("/") else ("", "", arg)
        count, unit, style = _parse_x_format(fmt)
        typed = self.source.number(expr) if self.source is not None else None
        value = typed if typed is not None else evaluate(parse_expression(expr),
                                                         StoppedEnv(self.dbg))
        if isinstance(value, bytes):
            raise UsageError("x needs an address, not a byte string")
        data = self.dbg.read_memory(value, count * unit)
        words = [int.from_bytes(data[i:i + unit], "little") for i in range(0, len(data), unit)]
        per_line = max(1, 16 // unit)
        lines = []
        for i in range(0, len(words), per_line):
            cells = [_x_cell(w, unit, style) for w in words[i:i + per_line]]
            lines.append(f"{value + i * unit:#x}:  " + "  ".join(cells))
        return Output("\n".join(lines), {"addr": value, "unit": unit, "values": words})

    def cmd_backtrace(self, arg: str) -> Output:
        limit_arg = int(arg) if arg.strip() else None  # checked by check_argument
        if self.source is not None:
            return Output(*self.source.backtrace(limit_arg))
        frames = self.dbg.frames()
        limit = limit_arg if limit_arg is not None else len(frames)
        lines, data = [], []
        for f in frames[:limit]:
            lines.append(f"#{f.level}  {site_text(f.site)}  r10={f.r10:#x}")
            data.append({"level": f.level, "where": site_data(f.site), "r10": f.r10})
        return Output("\n".join(lines) or "no frames (not in the program)", {"frames": data})

    def _source(self) -> SourceCommands:
        if self.source is None:
            raise UsageError("no DWARF for this program (compile it with -g)")
        return self.source

    def cmd_frame(self, arg: str) -> Output:
        return Output(*self._source().frame(arg))

    def cmd_up(self, arg: str) -> Output:
        return Output(*self._source().frame(arg, relative=1))

    def cmd_down(self, arg: str) -> Output:
        return Output(*self._source().frame(arg, relative=-1))

    def cmd_display(self, arg: str) -> Output:
        fmt, arg = (arg[1:].partition(" ")[::2]) if arg.startswith("/") else ("", arg)
        return Output(*self._source().display(fmt, arg))

    def cmd_undisplay(self, arg: str) -> Output:
        return Output(*self._source().undisplay(arg))

    def cmd_watch(self, arg: str) -> Output:
        return Output(*self._source().watch("watch", arg))

    def cmd_rwatch(self, arg: str) -> Output:
        return Output(*self._source().watch("rwatch", arg))

    def cmd_awatch(self, arg: str) -> Output:
        return Output(*self._source().watch("awatch", arg))

    def cmd_ptype(self, arg: str) -> Output:
        return Output(*self._source().ptype(arg))

    def cmd_whatis(self, arg: str) -> Output:
        return Output(*self._source().whatis(arg))

    def cmd_list(self, arg: str) -> Output:
        here = self.dbg.site() if self.dbg.stopped else None
        if arg.strip():
            site = resolve(self.dbg.prog, arg.strip()).sites[0]
        elif here is not None:
            site = here
        else:
            site = self.dbg.prog.sites[self.dbg.prog.functions[0].start_insn]
        if site.source is None:
            raise UsageError("no source line for this location")
        lines = source_lines(self.dbg.prog, site.source.file)
        center = site.source.line
        shown = [(n, lines[n]) for n in range(max(1, center - 5), center + 5) if n in lines]
        text = "\n".join(f"{'=>' if n == center else '  '} {n:<5} {t}" for n, t in shown)
        return Output(text, {"file": site.source.file, "lines": dict(shown)})

    def cmd_disas(self, arg: str) -> Output:
        site = self.dbg.site() if self.dbg.stopped else None
        if arg.strip():
            site = resolve(self.dbg.prog, arg.strip()).sites[0]
        listing = build_listing(self.dbg.prog, self.source.view.annotations()
                                if self.source is not None else None)
        if site is not None:
            listing = [fl for fl in listing if fl.function == site.function]
            for fl in listing:
                fl.blocks = [b for b in fl.blocks
                             if any(abs(i.index - site.index) <= 6 for i in b.insns)]
        text = format_listing(listing, marker=site.index if site else None)
        return Output(text, {"pc_insn": site.index if site else None})

    def cmd_help(self, arg: str) -> Output:
        lines = [f"{c.name:<12} {('(' + ', '.join(c.aliases) + ')') if c.aliases else '':<14}"
                 f" {c.help}" for c in self.commands]
        lines.append("LOC: func:offset | file.c:line | line | func | *ADDR | #INSN")
        return Output("\n".join(lines))


# Arguments checked before a command runs (and, for -ex lines, before the guest boots).
COUNTED = {"stepi", "nexti", "step", "next", "backtrace"}
NO_ARGUMENT = {"run", "continue", "finish", "kill"}
def _path(loc: BpLocation) -> str | None:
    """A merged-away line's location: the path it stops on."""
    return "; ".join(e.describe() for e in loc.path.edges) if loc.path else None


def _path_text(loc: BpLocation) -> str:
    path = _path(loc)
    return f"  (on its path: {path})" if path else ""


TAKES_LOCATION = {"break", "tbreak", "until", "advance", "list", "disassemble"}


def check_argument(command: str, arg: str) -> None:
    """Raise ``UsageError`` for an argument ``command`` can never take."""
    text = arg.strip()
    if command in NO_ARGUMENT and text:
        raise UsageError(f"{command} takes no argument (got {text!r})")
    if command in COUNTED and text and not (re.fullmatch(r"[0-9]+", text) and int(text) > 0):
        what = "frame count" if command == "backtrace" else "count"
        raise UsageError(f"{command}: the {what} must be a whole number of at least 1, "
                         f"not {text!r}")


def bpf_register(word: str) -> int:
    """``r3``, ``$r3`` or ``3`` → 3; ``UsageError`` for anything else."""
    name = word.removeprefix("$").removeprefix("r")
    if not name.isdigit() or int(name) > 10:
        raise UsageError(f"no BPF register '{word}' (r0..r10)")
    return int(name)


def _parse_x_format(fmt: str) -> tuple[int, int, str]:
    match = re.fullmatch(r"/?(\d*)([bhwgxdu]*)", fmt)
    if not match:
        raise UsageError(f"bad x format '{fmt}': use /NFU, e.g. x/4gx $r10 - 32")
    count = int(match.group(1) or 1)
    letters = match.group(2)
    unit = {"b": 1, "h": 2, "w": 4, "g": 8}.get(next((c for c in letters if c in "bhwg"), "g"), 8)
    style = next((c for c in letters if c in "xdu"), "x")
    if count > 4096:
        raise UsageError("x: at most 4096 units")
    return count, unit, style


def _x_cell(word: int, unit: int, style: str) -> str:
    if style == "x":
        return f"{word:#0{unit * 2 + 2}x}"
    if style == "d" and word >> (unit * 8 - 1):
        return str(word - (1 << (unit * 8)))
    return str(word)


def split_commands(text: str) -> list[str]:
    """Lines of a command file (``#`` comments and blank lines dropped)."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


