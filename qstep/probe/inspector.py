"""``qstep inspect``: conditional print/stop probes, evaluated inside the guest.

Each spec becomes a BPF perf_event program (``qstep.probe.codegen``) that the agent
attaches at the JIT address of the spec's instruction with a hardware execute
breakpoint (a kprobe where the kernel allows one). x86 has four debug registers:
locations beyond the fourth are evaluated from a recording of the run (QEMU 10's
recorder plugin, ``qstep.probe.fromrec``) or, without one, fall back to a host-side
gdb breakpoint whose condition the host evaluates with the same semantics.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from qstep.bpf.uapi import MapType
from qstep.debugger.engine import Debugger, Event, RunRequest
from qstep.debugger.env import StoppedEnv, UnreadableMemory
from qstep.debugger.jitframe import layout_of
from qstep.debugger.locations import resolve
from qstep.debugger.mergedlines import PathCheck, on_path
from qstep.debugger.regs import BpfRegs, bpf_regs
from qstep.debugger.tailcall import is_tail_call
from qstep.dwarf.types import CType
from qstep.errors import UsageError, VerifierError
from qstep.expr.ast import Binary, Expr, Index, IPv4, IPv6, Name, Node, Str
from qstep.expr.evaluate import evaluate
from qstep.expr.lower import LowerEnv
from qstep.loaded import InsnSite, LoadedProgram
from qstep.probe.codegen import CompiledProbe, MapRef, ProbeTarget, compile_probe
from qstep.probe.cspec import item_types, lower_spec
from qstep.probe.fromrec import Located, Outcome, evaluate_recording
from qstep.probe.recmemory import RecordedMaps
from qstep.probe.records import MapValue, ProbeHit, decode_record, pad8
from qstep.probe.spec import Spec, Watch
from qstep.recorder.hits import count_executions, recorder_available
from qstep.recorder.run import record_run
from qstep.runoutput import RunOutput
from qstep.session import RunResult, Session
from qstep.target.base import REG_NAMES, X86Regs

HW_SLOTS = 4
STOP_HELPER = "bpf_perf_prog_read_value"  # the helper stop probes call (codegen)
PT_REGS_SIZE = 21 * 8
PT_REGS_ORDER = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                 "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss")
MAX_PROBES = 64
RINGBUF_BYTES = 1 << 20
RING_BUDGET = RINGBUF_BYTES // 2  # a batch's records fill at most half the ring buffer
RING_HEADER = 8  # bytes of the kernel's header before each ring buffer record
RECORD_LIMIT = 1 << 30  # bytes of recorder log per batch of runs
RECORDED_BATCH = 256  # runs per recording (the host reads and walks it whole)


@dataclass
class Counters:
    reached: int = 0
    true: int = 0
    skipped: int = 0
    printed: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"reached": self.reached, "condition_true": self.true, "skipped": self.skipped,
                "printed": self.printed, "dropped": self.dropped}


@dataclass
class ProbeSite:
    """One location of a spec: its instruction, the spec lowered there, its guest program."""

    site: InsnSite
    spec: Spec  # C names lowered to this instruction's registers and memory
    record_id: int  # tells this location's ring buffer records apart
    path: PathCheck | None = None  # a merged-away line: counts only when this path is taken
    compiled: CompiledProbe | None = None
    handle: int | None = None

    @property
    def addr(self) -> int:
        assert self.site.jit_start is not None
        return self.site.jit_start

    @property
    def at_entry(self) -> bool:
        return self.site.index == self.site.function.start_insn


@dataclass
class Probe:
    """One spec, the places it fires (every copy of a source line) and how it is evaluated.

    A spec's locations share its counters, hit numbers and ``skip``; they are all
    in-guest probes or all host breakpoints.
    """

    number: int
    spec: Spec
    locations: list[ProbeSite]
    mode: str = "guest"  # "guest" or "host"
    attached: str = ""
    note: str = ""
    counters: Counters = field(default_factory=Counters)
    written: Spec | None = None  # set when C names were lowered (``spec`` is as written)
    item_types: tuple[CType | None, ...] = ()  # C types of the print items (DWARF)
    executed: int | None = None  # the emulator's count of runs of its addresses (recorder)
    undecided: int = 0  # recording: hits whose condition needs what was not recorded
    undecided_why: str = ""
    interrupted: int | None = None  # executed after an interrupt left RF set (hits.py)

    @property
    def missed(self) -> int:
        """Hits the CPU did not report (the emulator ran the addresses more often)."""
        return max(0, (self.executed or 0) - self.counters.reached) if self.executed else 0

    @property
    def probe_id(self) -> int:
        return self.number - 1

    @property
    def site(self) -> InsnSite:
        """The first location's instruction."""
        return self.locations[0].site

    @property
    def sites(self) -> list[InsnSite]:
        return [loc.site for loc in self.locations]

    @property
    def addrs(self) -> list[int]:
        return [loc.addr for loc in self.locations]


@dataclass
class Hit:
    """One printed hit: the probe, its hit number and the values of its print items."""

    probe: Probe
    hit: int
    values: list[int | bytes | MapValue]
    run: int
    site: InsnSite  # the location that fired
    failed: frozenset[int] = frozenset()
    access: InsnSite | None = None  # watch: the instruction that accessed the data
    old: bytes = b""  # watch: the watched bytes before and after the access
    new: bytes = b""
    unrecorded: frozenset[int] = frozenset()  # items the recording does not determine


def location_text(spec: Spec) -> str:
    return spec.loc.to_text()


def resolve_probe(prog: LoadedProgram, number: int, spec: Spec, first_record: int) -> Probe:
    """The instructions a spec names (every place a source line starts); errors name the
    spec. Its locations get record ids from ``first_record`` on."""
    try:
        resolved = resolve(prog, location_text(spec))
    except UsageError as err:
        raise UsageError(f"inspect: spec {number}: {err}") from None
    return Probe(number, spec, [ProbeSite(site, spec, first_record + k,
                                          resolved.paths.get(site.index))
                                for k, site in enumerate(resolved.sites)], note=resolved.note)


def resolve_probes(prog: LoadedProgram, specs: list[Spec]) -> list[Probe]:
    """One probe per spec, numbered from 1; record ids unique across all locations."""
    probes: list[Probe] = []
    for number, spec in enumerate(specs, start=1):
        first = sum(len(p.locations) for p in probes)
        probes.append(resolve_probe(prog, number, spec, first))
    return probes


def assign_modes(probes: list[Probe], recording: str = "off") -> None:
    """In-guest probes while the distinct addresses fit the debug registers. Past them,
    with ``recording`` "auto", every spec is evaluated from a recording of the runs
    (one method for all: in-guest probes would make the recorded runs go in small
    batches, measured 3x slower than host breakpoints, bench/inspect_recorded.py);
    "all" does so always; "mixed" only the specs that do not fit; else those go to
    host breakpoints.

    A spec whose locations do not all fit goes elsewhere as a whole, so its
    hit numbers and ``skip`` count over all its locations in one place. Watches and
    stops need the live VM: with one of them, nothing is evaluated from a recording.
    """
    live = [p.number for p in probes if isinstance(p.spec.condition, Watch)
            or p.spec.action.stop]
    if live and recording == "all":
        raise UsageError(f"inspect --from-recording: spec {live[0]} stops or watches, which "
                         "needs the live VM; leave --from-recording out")
    overflow = len({a for p in probes for a in p.addrs}) > HW_SLOTS
    if not live and (recording == "all" or (recording == "auto" and overflow)):
        for probe in probes:
            probe.mode, probe.attached = "recording", "recording"
            if recording == "auto":
                probe.note = (f"more locations than hardware breakpoints (x86 has "
                              f"{HW_SLOTS}): every spec is evaluated from a recording of "
                              "each run (same results)")
        return
    guest_addrs: set[int] = set()
    for probe in probes:
        if isinstance(probe.spec.condition, Watch):
            probe.mode, probe.attached = "host", "host watchpoint"
            probe.note = ("watch: the host debugger arms a data watchpoint when the location "
                          "is reached (its address can depend on registers there)")
            continue
        wanted = guest_addrs | set(probe.addrs)
        if len(wanted) <= HW_SLOTS:
            guest_addrs = wanted
            continue
        if recording == "mixed" and not live:  # bench/inspect_recorded.py compares it
            probe.mode, probe.attached = "recording", "recording"
            continue
        probe.mode = "host"
        probe.attached = "host breakpoint"
        many = (f"its {len(probe.locations)} locations need more" if len(probe.locations) > 1
                else "no")
        probe.note = (f"{many} free hardware breakpoints (x86 has {HW_SLOTS}); evaluated on "
                      "the host at gdb breakpoints (same results, slower)")


def check_host_probe(probe: Probe) -> None:
    """Host fallback evaluates expressions, registers and memory, not map lookups."""
    for item in (item for loc in probe.locations for item in loc.spec.action.prints):
        if _uses_maps(item):
            raise UsageError(f"inspect: spec {probe.number}: {item.to_text()} reads a map, "
                             "which only an in-guest probe can do, and this location fell "
                             f"back to the host ({probe.note}); use at most {HW_SLOTS} "
                             "locations")


def _uses_maps(node: object) -> bool:
    if isinstance(node, Name | Index):
        return True
    if isinstance(node, Node):
        return any(_uses_maps(getattr(node, f)) for f in node.__dataclass_fields__
                   if f != "pos")
    if isinstance(node, tuple):
        return any(_uses_maps(n) for n in node)
    return False


class Inspector:
    """Attaches the probes, runs the packets, collects hits and counters."""

    def __init__(self, session: Session, prog: LoadedProgram, specs: list[Spec],
                 scope: Callable[[InsnSite], LowerEnv] | None = None,
                 recording: str = "auto") -> None:
        """``scope`` gives the C names at an instruction (DWARF); with it, conditions and
        print items may use C variables, compiled to registers and memory there.
        ``recording``: "auto" (past the debug registers, every spec from a recording
        when QEMU runs the recorder), "all" (always), "mixed" (only the specs past the
        debug registers), "off" (host breakpoints past them)."""
        if len(specs) > MAX_PROBES:
            raise UsageError(f"inspect: at most {MAX_PROBES} specs")
        self.session = session
        self.prog = prog
        self.probes = resolve_probes(prog, specs)
        for loc, probe in self._locations() if scope is not None else []:
            assert scope is not None
            env = scope(loc.site)
            loc.spec = lower_spec(probe.spec, env, probe.number)
            if loc.spec != probe.spec and probe.written is None:
                probe.item_types = item_types(probe.spec, env)
                probe.written = probe.spec
        for loc, _ in self._locations():
            loc.spec = on_path(loc.spec, loc.path)
        assign_modes(self.probes, recording_mode(session, prog, recording))
        for probe in self.probes:
            if probe.mode == "host":
                check_host_probe(probe)
        self.on_stop: StopHandler | None = None
        # The emulator counts each guest probe's address too (QEMU 10 with the recorder).
        self.count_in_emulator = recorder_available(session)
        self.hits: list[Hit] = []
        self.outputs: list[RunOutput] = []  # what the program printed, per run
        self.lost = 0
        self._armed: dict[tuple[int, int, str], tuple[Probe, ProbeSite, bytes]] = {}
        self._events: MapRef | None = None
        self._counters: MapRef | None = None
        self._run_number = 1

    def _locations(self, mode: str | None = None) -> list[tuple[ProbeSite, Probe]]:
        return [(loc, p) for p in self.probes if mode is None or p.mode == mode
                for loc in p.locations]

    # -- guest probes --------------------------------------------------
    def attach(self) -> None:
        channel = self.session.probe_setup(RINGBUF_BYTES)
        self._events = MapRef("qstep_events", channel.events_map_id, MapType.RINGBUF,
                              0, 0, RINGBUF_BYTES)
        self._counters = MapRef("qstep_counters", channel.counters_map_id, MapType.ARRAY,
                                4, 8, 512)
        self._reset_counters()
        maps = program_maps(self.prog)
        for loc, probe in self._locations("guest"):
            self._attach_one(probe, loc, maps)
        for loc, probe in self._locations("recording"):
            loc.compiled = self._compile(probe, loc, maps)  # its record layout; not attached

    def _reset_counters(self) -> None:
        assert self._counters is not None
        for probe in self.probes:
            for k in range(8):
                self.session.update_map_id(self._counters.map_id,
                                           struct.pack("<I", 8 * probe.probe_id + k), bytes(8))

    def _attach_one(self, probe: Probe, loc: ProbeSite, maps: dict[str, MapRef]) -> None:
        assert self._events is not None and self._counters is not None
        if layout_of(self.prog, loc.site.function).private_stack is not None:
            raise UsageError(f"inspect: spec {probe.number}: {loc.site.function.name} runs on "
                             "a private stack (BPF r10 in x86 r9), which in-guest probes do not "
                             "read yet")
        loc.compiled = self._compile(probe, loc, maps)
        refs = b"".join(struct.pack("<I", i) for i in loc.compiled.map_refs)
        try:
            attached = self.session.probe_attach(probe.probe_id, loc.addr,
                                                 loc.compiled.insns, refs)
        except VerifierError as err:
            raise VerifierError(f"inspect: spec {probe.number}: the verifier rejected the "
                                f"probe program: {err}\n{err.log}\n{loc.compiled.text}",
                                err.log) from None
        except UsageError as err:
            raise UsageError(f"inspect: spec {probe.number}: {err}") from None
        loc.handle = attached.handle
        probe.attached = attached.attached

    def _compile(self, probe: Probe, loc: ProbeSite, maps: dict[str, MapRef]) -> CompiledProbe:
        assert self._events is not None and self._counters is not None
        target = ProbeTarget(probe.probe_id, loc.at_entry, self._events, self._counters, maps,
                             record_id=loc.record_id)
        try:
            return compile_probe(loc.spec, target)
        except UsageError as err:
            hint = f"; maps: {', '.join(sorted(maps))}" if "unknown name" in str(err) else ""
            raise UsageError(f"inspect: spec {probe.number}: {err}{hint}") from None

    def detach(self) -> None:
        for loc, _ in self._locations():
            if loc.handle is not None:
                self.session.probe_detach(loc.handle)
                loc.handle = None

    # -- runs ----------------------------------------------------------
    def _test_run(self, packet: bytes, repeat: int) -> RunResult:
        """One BPF_PROG_TEST_RUN; with the recorder, the emulator counts the probes' hits."""
        attached = [(loc, p) for loc, p in self._locations("guest") if loc.handle is not None]
        addrs = sorted({loc.addr for loc, _ in attached})
        if self._locations("recording"):
            return self._recorded_run(packet, repeat, attached)
        if not (self.count_in_emulator and addrs):
            return self.session.test_run(self.prog, packet, repeat=repeat)
        result, counts = count_executions(
            self.session, addrs, lambda: self.session.test_run(self.prog, packet, repeat=repeat))
        for loc, probe in attached:
            probe.executed = (probe.executed or 0) + counts[loc.addr]
            if counts.classified:
                probe.interrupted = (probe.interrupted or 0) + counts.after_interrupt[loc.addr]
        return result

    def run(self, packets: list[bytes], repeat: int, sample: bool = False) -> list[int]:
        """Run each packet ``repeat`` times; return the retvals (of each packet's last run).

        Hits accumulate in ``self.hits``. Nothing is dropped: the runs go in batches
        the ring buffer can hold, drained between batches. With ``sample`` all runs go
        at once and records that do not fit are dropped (and counted).
        """
        host = [p for p in self.probes if p.mode == "host"]
        stops = any(p.spec.action.stop for p in self.probes)
        retvals = []
        for run, packet in enumerate(packets, start=1):
            self._run_number = run
            if host or stops:
                retvals.append(self._run_with_host_probes(host, packet, repeat, run))
                self._drain(run)
            elif sample:
                result = self._test_run(packet, repeat)
                retvals.append(result.retval)
                self.outputs.append(result.output)
                self._drain(run)
            else:
                retval, output = self._run_batched(packet, repeat, run)
                retvals.append(retval)
                self.outputs.append(output)
        self._read_counters()
        return retvals

    def _run_batched(self, packet: bytes, repeat: int, run: int) -> tuple[int, RunOutput]:
        """``repeat`` runs in batches the ring buffer holds; the last run's retval and what
        all of them printed.

        A batch is sized from the record bytes per run the last batch made; until a
        record was seen, from the largest record each guest probe can write (one hit per
        run); it at most doubles from one batch to the next, and halves after a batch
        whose records the ring could not all hold.
        """
        done, batch, retval, outputs = 0, 1, 0, []
        if not self._locations("guest"):  # nothing in the ring: as many as a recording takes
            batch = self._recorded_batch()
        worst = sum(RING_HEADER + pad8(loc.compiled.layout.size)
                    for loc, _ in self._locations("guest") if loc.compiled is not None) or 1
        per_run = 0.0
        dropped = self._dropped_so_far()
        while done < repeat:
            count = min(batch, repeat - done)
            dropped_before = dropped
            result = self._test_run(packet, count)
            retval = result.retval
            outputs.append(result.output)
            per_run = max(per_run, self._drain(run) / count)
            done += count
            fits = int(RING_BUDGET // (per_run or worst))
            if self._locations("recording"):
                fits = min(fits, self._recorded_batch())
            batch = max(1, min(2 * count, fits))
            dropped = self._dropped_so_far()  # one counters read per batch
            if dropped > dropped_before:
                batch = max(1, count // 2)
        return retval, joined(outputs)

    def _dropped_so_far(self) -> int:
        """Records the guest probes could not write so far (their counters)."""
        self._read_counters()
        return sum(p.counters.dropped for p in self.probes)

    def _drain(self, run: int) -> int:
        """Collect the records written since the last drain; return their ring bytes."""
        drained = self.session.probe_drain()
        self.lost += drained.lost
        by_id = {loc.record_id: (loc, p) for loc, p in self._locations("guest")
                 if loc.compiled is not None}
        ring_bytes = 0
        for blob in drained.records:
            ring_bytes += RING_HEADER + pad8(len(blob))
            found = by_id.get(int.from_bytes(blob[:4], "little"))
            if found is None or found[0].compiled is None:
                self.lost += 1
                continue
            loc, probe = found
            assert loc.compiled is not None
            hit: ProbeHit = decode_record(blob, loc.compiled.layout)
            failed = frozenset(i for i in range(len(hit.values)) if hit.failed(i))
            self.hits.append(Hit(probe, hit.hit, hit.values, run, loc.site, failed))
        return ring_bytes

    def _read_counters(self) -> None:
        if self._counters is None or not self._locations("guest"):
            return
        table = {int.from_bytes(k, "little"): int.from_bytes(v, "little")
                 for k, v in self.session.dump_map_id(self._counters.map_id).entries}
        for probe in self.probes:
            if probe.mode != "guest":
                continue
            base = 8 * probe.probe_id
            c = probe.counters
            c.reached, c.true, c.skipped, c.printed, c.dropped = (
                table.get(base + k, 0) for k in range(5))

    # -- from recordings ------------------------------------------------
    def _recorded_run(self, packet: bytes, repeat: int,
                      attached: list[tuple[ProbeSite, Probe]]) -> RunResult:
        """``repeat`` runs under the recorder; the recording-mode specs are evaluated
        from it, and it counts the executions of the guest probes' addresses."""
        maps = self._map_states()
        result, rec = record_run(self.session, self.prog, packet, repeat=repeat,
                                 limit=RECORD_LIMIT)
        where: dict[int, list[Located]] = {}
        for loc, probe in self._locations("recording"):
            assert loc.compiled is not None
            where.setdefault(loc.addr, []).append(((loc, probe), loc.spec, loc.compiled.layout))
        evaluate_recording(rec, packet, maps, where, self._recorded_hit)
        counts = Counter(s.site.jit_start for s in rec.steps)
        for loc, probe in attached:
            probe.executed = (probe.executed or 0) + counts[loc.addr]
        return result

    def _recorded_batch(self) -> int:
        """Runs per recording: one where a tail call leaves the recorded code (what the
        tail-called program writes to maps is known again from the next dump)."""
        return 1 if any(is_tail_call(s) for s in self.prog.sites.values()) else RECORDED_BATCH

    def _map_states(self) -> RecordedMaps:
        """The maps the recording-mode specs name, as the agent dumps them now."""
        names = {n for loc, _ in self._locations("recording") for n in map_names(loc.spec)}
        dumps: dict[str, list[tuple[bytes, bytes]] | None] = {}
        for name in sorted(names & set(self.prog.maps)):
            dump = self.session.dump_map_id(self.prog.maps[name].id)
            dumps[name] = None if dump.truncated or dump.unlisted else dump.entries
        return RecordedMaps(self.prog, dumps)

    def _recorded_hit(self, handle: object, out: Outcome) -> None:
        assert isinstance(handle, tuple)
        loc: ProbeSite = handle[0]
        probe: Probe = handle[1]
        c = probe.counters
        c.reached += 1
        if not out.decided:
            probe.undecided += 1
            probe.undecided_why = probe.undecided_why or out.why
            return
        if not out.true:
            return
        c.true += 1
        if c.true <= probe.spec.action.skip:
            c.skipped += 1
            return
        c.printed += 1
        self.hits.append(Hit(probe, c.true, out.values, self._run_number, loc.site,
                             frozenset(out.failed), unrecorded=frozenset(out.unrecorded)))

    # -- host fallback ---------------------------------------------------
    def _run_with_host_probes(self, host: list[Probe], packet: bytes, repeat: int,
                              run: int) -> int:
        session = self.session
        stop_helper = (session.kallsyms(STOP_HELPER)  # while the agent can still answer
                       if any(p.spec.action.stop for p in self.probes) else None)
        with session.debugger(self.prog, RunRequest(packet, repeat=repeat)) as dbg:
            by_addr: dict[int, list[tuple[ProbeSite, Probe]]] = {}
            for probe in host:
                for loc in probe.locations:
                    by_addr.setdefault(loc.addr, []).append((loc, probe))
                    if len(by_addr[loc.addr]) == 1:
                        dbg.add_breakpoint(f"*{loc.addr:#x}")
            if stop_helper is not None:
                dbg.kernel_breakpoints.add(stop_helper)
            self._armed.clear()
            event = dbg.run()
            while event.kind == "stopped":
                if event.reason == "kernel":
                    event = self._hand_over(dbg)
                    continue
                if event.reason == "watchpoint":
                    self._watch_hit(dbg, event.watch_addr, run)
                else:
                    stops = [probe for loc, probe in by_addr.get(dbg.pc(), [])
                             if self._host_hit(dbg, probe, loc, run) and probe.spec.action.stop]
                    if stops and self.on_stop is not None:
                        resumed = self.on_stop(dbg, stops[0], dbg.regs())
                        if resumed is not None:
                            event = resumed
                            continue
                event = dbg.cont()
            assert event.retval is not None
            self.outputs.append(event.output or RunOutput())
            return event.retval

    def _hand_over(self, dbg: Debugger) -> Event:
        """A probe asked for a stop (the VM is in its helper call): stop in the program.

        The probe's context holds the interrupted program's pt_regs, i.e. the exact
        state before the probed instruction, which the debugger shows as its stop
        (``Debugger.stop_before``); the next command leaves the exception handler.
        """
        regs = probe_regs(dbg)
        found = next(((loc, p) for loc, p in self._locations() if p.spec.action.stop
                      and loc.addr == regs.rip), None)
        if found is None:
            return dbg.cont()  # not one of ours
        loc, probe = found
        r10 = layout_of(self.prog, loc.site.function).frame_pointer(regs, dbg.percpu_offset)
        before = bpf_regs(regs, r10)
        event = dbg.stop_before(regs)
        if self.on_stop is not None and event.kind == "stopped":
            resumed = self.on_stop(dbg, probe, before)
            if resumed is not None:
                return resumed
        return dbg.cont() if event.kind == "stopped" else event

    def _arm_watch(self, dbg: Debugger, probe: Probe, loc: ProbeSite, watch: Watch) -> None:
        """At the watch spec's location: evaluate its address, set the watchpoint."""
        probe.counters.reached += 1
        try:
            addr = evaluate(watch.addr, StoppedEnv(dbg))
            if not isinstance(addr, int):
                raise UsageError(f"inspect: spec {probe.number}: watch needs an address")
            old = dbg.read_memory(addr, watch.size)
        except UnreadableMemory:
            return
        kind = {"w": "write", "r": "read", "rw": "access"}[watch.type]
        dbg.set_watchpoint(addr, watch.size, kind)
        self._armed[(addr, watch.size, kind)] = (probe, loc, old)

    def _watch_hit(self, dbg: Debugger, addr: int | None, run: int) -> None:
        for (start, size, kind), (probe, loc, old) in list(self._armed.items()):
            if addr is not None and not start <= addr < start + size:
                continue
            new = dbg.read_memory(start, size)
            self._armed[(start, size, kind)] = (probe, loc, new)
            self._record(dbg, probe, run, loc, access=dbg.accessing_site(), old=old, new=new)

    def _host_hit(self, dbg: Debugger, probe: Probe, loc: ProbeSite, run: int) -> bool:
        """Evaluate a host probe where the CPU stopped; True when it printed (not skipped)."""
        if isinstance(loc.spec.condition, Watch):
            self._arm_watch(dbg, probe, loc, loc.spec.condition)
            return False
        env = StoppedEnv(dbg)
        c = probe.counters
        c.reached += 1
        cond = loc.spec.condition
        try:
            if isinstance(cond, Expr) and not _truth(evaluate(cond, env)):
                return False
        except UnreadableMemory:
            return False
        return self._record(dbg, probe, run, loc)

    def _record(self, dbg: Debugger, probe: Probe, run: int, loc: ProbeSite,
                access: InsnSite | None = None, old: bytes = b"", new: bytes = b"") -> bool:
        """The condition held: count it, honour ``skip`` (False), evaluate the print items."""
        env = StoppedEnv(dbg)
        c = probe.counters
        c.true += 1
        if c.true <= probe.spec.action.skip:
            c.skipped += 1
            return False
        values: list[int | bytes | MapValue] = []
        failed = set()
        for i, item in enumerate(loc.spec.action.prints):
            if isinstance(item, Str):
                values.append(b"")
                continue
            try:
                values.append(evaluate(item, env))
            except UnreadableMemory:
                values.append(0)
                failed.add(i)
        c.printed += 1
        self.hits.append(Hit(probe, c.true, values, run, loc.site, frozenset(failed), access,
                             old, new))
        return True


StopHandler = Callable[[Debugger, Probe, BpfRegs], "Event | None"]


def recording_mode(session: Session, prog: LoadedProgram, wanted: str) -> str:
    """``wanted`` where the recorder can record ``prog``; "off" (or, for "all", an
    error) where it cannot."""
    if wanted == "off":
        return "off"
    why = ("" if recorder_available(session) else "QEMU does not run the recorder plugin "
           "(QEMU 10)") or ("a program loaded by someone else has no exact JIT map"
                            if prog.foreign else "")
    if why and wanted == "all":
        raise UsageError(f"inspect --from-recording: {why}")
    return "off" if why else wanted


def map_names(spec: Spec) -> set[str]:
    """The maps a spec's condition and print items name."""
    return {n.name if isinstance(n, Name) else n.base.name
            for n in _walk((spec.condition, spec.action.prints)) if isinstance(n, Name | Index)}


def joined(outputs: list[RunOutput]) -> RunOutput:
    """What several batches of runs printed, as one run's output."""
    if len(outputs) == 1:
        return outputs[0]

    def streams(name: str) -> str | None:
        texts = [getattr(o, name) for o in outputs if getattr(o, name) is not None]
        return "".join(texts) if texts else None
    return RunOutput(printk=[m for o in outputs for m in o.printk],
                     trace_lines=[t for o in outputs for t in o.trace_lines],
                     printk_lost_bytes=sum(o.printk_lost_bytes for o in outputs),
                     stdout=streams("stdout"), stderr=streams("stderr"))


def program_maps(prog: LoadedProgram) -> dict[str, MapRef]:
    """The program's maps as probes refer to them (by name)."""
    return {m.name: MapRef(m.name, m.id, m.type, m.key_size, m.value_size, m.max_entries)
            for m in prog.maps.values()}


def probe_regs(dbg: Debugger) -> X86Regs:
    """Stopped in the stop helper a probe called: the probed program's registers before
    the probed instruction (the ``pt_regs`` its perf event context points to)."""
    ctx = dbg.x86().rdi  # bpf_perf_event_data_kern *: its first member is regs
    pt_regs = int.from_bytes(dbg.read_memory(ctx, 8), "little")
    return pt_regs_to_bpf(dbg.read_memory(pt_regs, PT_REGS_SIZE))


def pt_regs_to_bpf(data: bytes) -> X86Regs:
    """x86 registers from a kernel ``struct pt_regs`` (x86-64 layout)."""
    fields = dict(zip(PT_REGS_ORDER, struct.unpack(f"<{len(PT_REGS_ORDER)}Q", data),
                      strict=True))
    return X86Regs(**{name: fields[name] for name in REG_NAMES})


def _truth(value: int | bytes) -> bool:
    return bool(value) if isinstance(value, int) else any(value)


def literal_hint(spec: Spec, item: Expr) -> object:
    """The literal an item is compared with in the condition (for IP display)."""
    for node in _walk(spec.condition):
        if isinstance(node, Binary) and node.op in ("==", "!="):
            for a, b in ((node.left, node.right), (node.right, node.left)):
                if a == item and isinstance(b, IPv4 | IPv6 | Str):
                    return b
    return None


def _walk(node: object) -> Iterable[Node]:
    if isinstance(node, Node):
        yield node
        for name in node.__dataclass_fields__:
            if name != "pos":
                yield from _walk(getattr(node, name))
    elif isinstance(node, tuple):
        for n in node:
            yield from _walk(n)
