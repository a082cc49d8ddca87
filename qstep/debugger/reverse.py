"""Live reverse debugging: a ``Debugger`` whose run is recorded as it goes.

At any stop of the live run (at a BPF instruction boundary) the recording holds
every instruction executed so far; the live point is one past its last step. The
``reverse_*`` movements go back through it; while in the past (``replaying``),
registers, memory, frames and the C variables built on them come from the
recording. Forward movements replay the recording until the live point, then go
on live through the gdbstub, while the recorder keeps recording.

Memory at a past position is what the recording saw, across the helper calls that
provably left it alone (``qstep.recorder.pastmemory``); a byte it never saw is read
from the live guest only when nothing can have changed it since: no recorded store
to it and no call that may write it from that position to the live point.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qstep.debugger.engine import Breakpoint, Debugger, Event, ProgramRunner, RunRequest
from qstep.debugger.frames import Frame
from qstep.debugger.regs import BpfRegs
from qstep.errors import UsageError
from qstep.loaded import InsnSite, LoadedProgram
from qstep.recorder.control import DEFAULT_LIMIT
from qstep.recorder.live import LiveRecorder
from qstep.recorder.log import REG_NAMES
from qstep.recorder.pastmemory import PastMemory
from qstep.recorder.recording import RecordedStep, Recording
from qstep.recorder.replay import Replay, Stop
from qstep.session import Session
from qstep.target.base import Target, X86Regs


@dataclass(frozen=True)
class RecordInfo:
    """``info record``: what the recorder holds for the current run."""

    recording: bool  # the recorder is armed for this run (or the next)
    instructions: int  # BPF instructions recorded so far
    position: int | None  # the replay position (1-based) when in the past
    limit: int  # bytes
    problem: str | None


class ReversibleDebugger(Debugger):
    """``Debugger`` with reverse execution over a live recording."""

    def __init__(self, prog: LoadedProgram, target: Target, runner: ProgramRunner,
                 request: RunRequest, recorder: LiveRecorder | None,
                 unavailable: str = "") -> None:
        super().__init__(prog, target, runner, request)
        self.recorder = recorder
        self.unavailable = unavailable  # why there is no recorder
        self.history: Replay | None = None  # the recording up to the live point
        self._history_key: tuple[int, int] | None = None
        self._bp_keys: dict[int, tuple[Breakpoint, int]] = {}
        self.last_replay_stop: Stop | None = None
        self._live_inside = False  # the live point is inside an instruction
        self._memory: PastMemory | None = None
        self._record_frames: list[Frame] | None = None  # where 'record' began mid-run

    # -- the recording ---------------------------------------------------
    @property
    def can_reverse(self) -> bool:
        """True when a reverse movement is possible now."""
        try:
            self._require_history()
        except UsageError:
            return False
        return True

    def require_reverse(self) -> None:
        """``UsageError`` saying why reverse execution is not possible now, if it is not."""
        self._require_history()

    @property
    def replaying(self) -> bool:
        """True while stopped in the past (state shown from the recording)."""
        return (self.history is not None and self._history_key == self._live_key()
                and self.history.pos < self._live_pos())

    def position(self) -> tuple[Recording, int]:
        """The recording up to the live point (its last step) and the index of the
        current step in it: the instruction about to run, in the past or live."""
        history = self._require_history()
        return history.rec, history.pos if self.replaying else self._live_pos()

    def _live_key(self) -> tuple[int, int]:
        return (self.x86_steps, self.vm_stops)

    def _live_pos(self) -> int:
        assert self.history is not None
        return len(self.history.rec.steps) - 1

    def _require_history(self) -> Replay:
        """The recording up to the live point (built once per live stop)."""
        if self.history is not None and self._history_key == self._live_key():
            return self.history
        if self.recorder is None:
            raise UsageError(f"no reverse execution: {self.unavailable or 'no recorder'}")
        if not self.running_program or not self.stopped:
            raise UsageError("reverse execution needs a run stopped in the program "
                             "('run' to a breakpoint first)")
        if self.recorder.problem is not None:
            raise UsageError(f"no reverse execution for this run: {self.recorder.problem}")
        if not self.recorder.enabled or not self.recorder.armed:
            raise UsageError("this run is not being recorded ('record' records from here on)")
        rec = self.recorder.recording()
        if rec is None:
            raise UsageError(f"no reverse execution for this run: {self.recorder.problem}")
        live = self._live_step()
        recording = Recording(rec.prog, [*rec.steps, live], 0)
        self.history = Replay(recording)
        self.history.pos = len(rec.steps)
        outer = self._record_frames
        if outer:
            self.history.depth = call_depths(recording, len(outer) - 1)
        self._memory = PastMemory(recording, outer[-1].cfa if outer else None)
        self._history_key = self._live_key()
        return self.history

    def _live_step(self) -> RecordedStep:
        """The live point as the recording's last step: at an instruction's start, or
        inside one (a watchpoint stops after the accessing x86 instruction), where the
        recording's last step is that instruction, partly executed."""
        x86 = super().x86()
        site = self.prog.site_at(x86.rip)
        if site is None:
            raise UsageError(f"reverse execution starts in the program: the CPU is outside "
                             f"it ({x86.rip:#x}; a tail call, or a helper); 'finish' or "
                             "'stepi' first")
        self._live_inside = site.jit_start != x86.rip
        regs = x86.as_dict()
        return RecordedStep(site, {name: regs[name] for name in REG_NAMES})

    def record_here(self) -> bool:
        """``record`` at a stop in a run: record from this instruction on (False: the
        recorder is armed when a run starts, so from the next run)."""
        if not (self.running_program and self.stopped) or self.recorder is None:
            if self.recorder is not None:
                self.recorder.enabled = True
            return False
        site = super().site()
        if site is None or site.jit_start != super().pc():
            raise UsageError("record starts at a BPF instruction: 'stepi' first")
        frames = super().frames()
        if not self.recorder.record_here():
            return False
        self._record_frames, self.history = frames, None
        return True

    def record_info(self) -> RecordInfo:
        """What the recorder holds for this run."""
        rec = self.recorder
        if rec is None:
            return RecordInfo(False, 0, None, 0, self.unavailable)
        count = 0
        if self.running_program and self.stopped and rec.armed:
            recording = rec.recording()
            count = len(recording.steps) if recording is not None else 0
        position = self.history.pos + 1 if self.replaying and self.history else None
        return RecordInfo(rec.enabled, count, position, rec.limit, rec.problem)

    # -- state: from the recording while in the past ------------------------
    def _past(self) -> RecordedStep | None:
        if not self.replaying:
            return None
        assert self.history is not None
        return self.history.rec.steps[self.history.pos]

    def x86(self) -> X86Regs:
        if self.replaying:
            raise UsageError("x86 registers are not all recorded; BPF registers are "
                             "('info registers')")
        return super().x86()

    def pc(self) -> int:
        step = self._past()
        if step is not None:
            assert step.site.jit_start is not None
            return step.site.jit_start
        return super().pc()

    def site(self) -> InsnSite | None:
        step = self._past()
        return step.site if step is not None else super().site()

    def regs(self) -> BpfRegs:
        step = self._past()
        return step.regs() if step is not None else super().regs()

    def read_memory(self, addr: int, size: int) -> bytes:
        if not self.replaying:
            return super().read_memory(addr, size)
        assert self.history is not None and self._memory is not None
        return self._memory.read(addr, size, self.history.pos, self._live_pos(),
                                 super().read_memory)

    def frames(self) -> list[Frame]:
        if not self.replaying:
            return super().frames()
        assert self.history is not None
        return recorded_frames(self.history, self._record_frames)

    def accessing_site(self) -> InsnSite | None:
        if self.replaying and self.last_replay_stop is not None:
            watch = self.last_replay_stop.watch
            if watch is not None:
                assert self.history is not None
                return self.history.rec.steps[watch[0]].site
        return super().accessing_site()

    # -- reverse movements -------------------------------------------------
    def reverse_stepi(self, over_calls: bool = False) -> Event:
        """Back one BPF instruction (over calls with ``over_calls``)."""
        return self._event(self._require_history().reverse_stepi(over_calls))

    def reverse_step_line(self, over_calls: bool) -> Event:
        """``reverse-step`` / ``reverse-next``: back to the start of the previous line."""
        return self._event(self._require_history().step_line(over_calls, reverse=True))

    def reverse_finish(self) -> Event:
        """Back to the call of the current function."""
        return self._event(self._require_history().finish(reverse=True))

    def reverse_continue(self) -> Event:
        """Back to the previous breakpoint hit or watched write (or the run's start)."""
        history = self._require_history()
        self._sync_stops(history)
        return self._event(history.cont(reverse=True))

    def _sync_stops(self, history: Replay) -> None:
        """The live breakpoints and write watchpoints, as the replay's."""
        history.breakpoints.clear()
        history.watches.clear()
        self._bp_keys.clear()
        key = 1
        for bp in self.breakpoints.values():
            for n, loc in enumerate(bp.locations, start=1):
                # A merged-line location (path check) is left out rather than guessed.
                if bp.enabled and loc.enabled and loc.path is None:
                    history.breakpoints[key] = loc.site
                    self._bp_keys[key] = (bp, n)
                    key += 1
        for addr, length, kind in self.watchpoints:
            if kind in ("write", "access"):
                history.watches[key] = (addr, length)
                key += 1

    def _event(self, stop: Stop) -> Event:
        assert self.history is not None
        self.last_replay_stop = stop
        site = self.history.site()
        bp, location = self._bp_keys.get(stop.breakpoint or 0, (None, None))
        reason = {"start": "history-start", "end": "history-end"}.get(stop.reason,
                                                                      stop.reason)
        event = Event("stopped", reason, site, bp, location=location,
                      watch_addr=stop.watch[1] if stop.watch else None)
        self.last_event = event
        return event

    # -- forward movements: replay to the live point, then live ------------
    def _depth(self) -> int:
        assert self.history is not None
        return self.history.depth[self.history.pos]

    def _forward(self, stop: Stop) -> Event | None:
        """The event of a forward replay movement; None when it reached the live point
        without arriving (the movement goes on live)."""
        assert self.history is not None
        live = self._live_pos()
        if stop.reason == "end" or stop.pos > live:
            self.history.pos = live
            return None
        if stop.pos == live and self._live_inside and stop.reason == "breakpoint":
            # Back inside the instruction the breakpoint is at the start of: not a hit.
            return self._event(Stop(stop.pos, "step"))
        return self._event(stop)

    def stepi(self, over_calls: bool = False) -> Event:
        if not self.replaying:
            return super().stepi(over_calls)
        assert self.history is not None
        depth = self._depth()
        event = self._forward(self.history.stepi(over_calls))
        return event if event is not None else self._live_to_depth(depth)

    def finish(self) -> Event:
        if not self.replaying:
            return super().finish()
        assert self.history is not None
        depth = self._depth()
        event = self._forward(self.history.finish())
        return event if event is not None else self._live_to_depth(depth - 1)

    def cont(self) -> Event:
        if not self.replaying:
            return super().cont()
        assert self.history is not None
        self._sync_stops(self.history)
        event = self._forward(self.history.cont())
        return event if event is not None else super().cont()

    def _live_to_depth(self, depth: int) -> Event:
        """At the live point after a replayed movement: finish live calls deeper than
        ``depth`` (a nexti/finish that began in the past and ends after the live point)."""
        event = Event("stopped", "step", super().site())
        self.last_event = event
        while len(super().frames()) - 1 > depth:
            event = super().finish()
            if event.kind == "exited" or event.reason != "finish":
                break
        return event

    def advance(self, location: str, stop_at_return: bool = False) -> Event:
        self._refuse_in_past("advance/until")
        return super().advance(location, stop_at_return)

    def run_to_address(self, addr: int) -> Event:
        self._refuse_in_past("running to an address")
        return super().run_to_address(addr)

    def _refuse_in_past(self, what: str) -> None:
        if self.replaying:
            raise UsageError(f"{what} is not replayed: 'continue' with a breakpoint, or "
                             "go forward to the live point first")

    # -- runs ----------------------------------------------------------------
    def run(self) -> Event:
        """Arm the recorder (disarming it after the previous run), then run."""
        if self.recorder is not None and not self.running_program:
            if self.stopped and self.recorder.needs_running_vcpu:  # the VM idles between runs
                self.target.resume()
                self.stopped = False
            self.recorder.start()
        self.history, self._record_frames = None, None
        return super().run()

    def detach(self) -> None:
        super().detach()
        if self.recorder is not None:
            self.recorder.close()


def recorded_frames(history: Replay, outer: list[Frame] | None = None) -> list[Frame]:
    """The call stack at the replay position, from the recording's calls.

    A caller's frame is at its call instruction, with the r10 it had then and the
    return address its ``call`` pushed (a recorded store). ``outer``: the live frames
    where a recording made mid-run ('record' at a stop) began, for the callers that
    were already there (innermost first; frame k has depth len(outer) - 1 - k).
    """
    steps, pos = history.rec.steps, history.pos
    here = steps[pos]
    calls = []
    depth = history.depth[pos]
    for q in range(pos - 1, -1, -1):
        if history.depth[q] < depth:
            calls.append(q)
            depth = history.depth[q]
    frames: list[Frame] = []
    site, r10, pc = here.site, here.regs()[10], here.site.jit_start
    for q in calls:
        push = next((a for a in steps[q].frame_accesses if a.store and a.size == 8
                     and any(f.contains(a.value) for f in history.rec.prog.functions)), None)
        ret = push.value if push is not None else None
        cfa = push.addr + 8 if push is not None else 0
        assert pc is not None
        frames.append(Frame(len(frames), site.function, site, r10, pc, ret, cfa))
        site, r10, pc = steps[q].site, steps[q].regs()[10], steps[q].site.jit_start
    assert pc is not None
    if not outer:
        entry_rsp = steps[0].x86["rsp"]
        frames.append(Frame(len(frames), site.function, site, r10, pc, None, entry_rsp + 8))
        return frames
    same = outer[len(outer) - 1 - depth]  # the activation the outermost recorded frame is
    frames.append(Frame(len(frames), site.function, site, r10, pc, same.return_addr, same.cfa))
    return frames + [replace(f, level=len(frames) + n)
                     for n, f in enumerate(outer[len(outer) - depth:])]


def call_depths(rec: Recording, base: int) -> list[int]:
    """bpf-to-bpf call depth before each step (and after the last), from ``base``."""
    depths = [base]
    for step in rec.steps:
        ins, d = step.site.insn, depths[-1]
        depths.append(d + 1 if ins.is_pseudo_call else d - 1 if ins.is_exit and d > 0 else d)
    return depths


def reversible_debugger(session: Session, prog: LoadedProgram, target: Target,
                        request: RunRequest, limit: int | None = None) -> ReversibleDebugger:
    """A ``ReversibleDebugger`` recording with ``session``'s recorder plugin, or one that
    says why it cannot (no plugin in this QEMU, a program loaded outside qstep)."""
    machine = session.machine
    reason = ""
    if machine is None or machine.config is None or machine.config.plugin is None:
        reason = (machine.recorder_error if machine is not None and machine.recorder_error
                  else "this QEMU runs without the recorder plugin")
    elif prog.foreign:
        reason = "recording needs a program loaded by qstep (exact JIT map)"
    recorder = None if reason else LiveRecorder(session, prog, limit or DEFAULT_LIMIT)
    return ReversibleDebugger(prog, target, session, request, recorder, reason)
