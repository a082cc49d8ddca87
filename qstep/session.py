"""A qstep session: one booted guest, its agent, and the programs in it.

``Session`` is the hub every front end uses: it boots the guest, speaks every
agent verb, loads or selects programs, runs them, sets up probes, reads maps and
hands out debuggers::

    from qstep import BpfObject, RunRequest, Session

    with Session(kernel="6.1") as session:
        prog = session.load(BpfObject.open("prog.bpf.o"), "xdp_main")
        print(session.test_run(prog, packet).retval)
        with session.debugger(prog, RunRequest(packet)) as dbg:
            dbg.add_breakpoint("prog.bpf.c:42")
            event = dbg.run()
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType

from qstep import interrupts
from qstep.agent import replies
from qstep.agent.client import AgentClient, AgentError
from qstep.agent.protocol import Reply, Token
from qstep.agent.replies import (
    AttachedProbe,
    FoundProgram,
    MapDump,
    ProbeChannel,
    ProbeRecords,
    RunResult,
)
from qstep.bpf.elf import BpfObject
from qstep.bpf.insn import is_percpu_mov
from qstep.bpf.progtypes import CTX_PROG_TYPES, packet_size_problem, run_refusal
from qstep.debugger.engine import Debugger, RunRequest
from qstep.debugger.guestmaps import fetch_kernel_btf, has_percpu_maps
from qstep.debugger.jitframe import needs_percpu_offset
from qstep.errors import GuestError, HostError, LoadError, UsageError, VerifierError
from qstep.foreign import build_foreign
from qstep.images.guest import build_initramfs
from qstep.images.kernels import Kernel, resolve_kernel
from qstep.images.modules import ModuleTree, module_root
from qstep.loaded import LoadedProgram, build_loaded
from qstep.loadfail import explain, libbpf_messages, missing_ksyms
from qstep.loadopts import LoadOptions
from qstep.mapdump import with_declared_types
from qstep.runkinds import xdp_md_in
from qstep.target import Target, open_target
from qstep.verifier.explain import failing_path
from qstep.verifier_log import annotate, last_error_lines
from qstep.vm import snapshot
from qstep.vm.machine import Machine

BOOT_TIMEOUT = 180.0
SELECTORS = ("id", "name", "tag", "pinned")
KERNEL_NAME_MAX = 15  # BPF_OBJ_NAME_LEN - 1: the kernel keeps this much of a name

__all__ = ["SELECTORS", "FromObject", "InGuest", "ProgramSource", "RunResult", "Session"]


@dataclass(frozen=True)
class FromObject:
    """A program of a BPF ELF object, for qstep to load (exact JIT map)."""

    obj: BpfObject
    name: str
    options: LoadOptions | None = None  # program type, --set globals, kernel modules


@dataclass(frozen=True)
class InGuest:
    """A program already in the guest, by ``id``, ``name``, ``tag`` or ``pinned`` path."""

    kind: str
    value: str


ProgramSource = FromObject | InGuest


class Session:
    """Boots the guest on enter and shuts it down on exit; every guest action goes here.

    ``kernel`` is "6.1" (default), "6.12", a package name or a bzImage path;
    ``accel`` is "tcg" or "kvm".
    """

    def __init__(self, kernel: str | None = None, accel: str = "tcg",
                 memory_mb: int = 512, boot_timeout: float = BOOT_TIMEOUT,
                 snapshot: bool | None = None) -> None:
        self.kernel_name = kernel
        # Restore a saved agent-ready guest instead of booting (QSTEP_SNAPSHOT=0: never).
        self.snapshot = os.environ.get("QSTEP_SNAPSHOT") != "0" if snapshot is None else snapshot
        self.restored = False  # whether the guest came from a snapshot
        self.boot_timeout = boot_timeout
        self.accel = accel
        self.memory_mb = memory_mb
        self.kernel: Kernel | None = None
        self.machine: Machine | None = None
        self.agent: AgentClient | None = None
        self.modules_loaded: list[str] = []  # kernel modules loaded into the guest, in order

    def prepare(self) -> Machine:
        """Resolve the kernel and guest image; return an unstarted machine."""
        self.kernel = resolve_kernel(self.kernel_name)
        initrd = build_initramfs()
        self.machine = Machine(self.kernel.bzimage, initrd, accel=self.accel,
                               memory_mb=self.memory_mb)
        return self.machine

    def __enter__(self) -> Session:
        machine = self.machine or self.prepare()
        if self.snapshot:
            self.agent = snapshot.try_restore(machine)
            self.restored = self.agent is not None
            if self.restored:
                return self
        machine.launch()
        try:
            assert machine.agent_sock is not None
            self.agent = AgentClient(machine.agent_sock, machine.check_alive,
                                     machine.console_tail, machine.window)
            self.agent.wait_ready(self.boot_timeout)
        except BaseException:
            machine.shutdown()
            raise
        if self.snapshot:
            snapshot.save_after_boot(machine)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.machine is not None:
            self.machine.shutdown()

    @property
    def release(self) -> str:
        """The guest kernel's release string (``uname -r``)."""
        return self.agent.kernel_release if self.agent else ""

    def _request(self, verb: str, *args: Token, timeout: float = 60.0) -> Reply:
        if self.agent is None:
            raise HostError("the session is not started (use 'with Session() as s:')")
        return self.agent.request(verb, *args, timeout=timeout)

    def hello(self) -> int:
        """A round trip to the agent; returns its protocol version."""
        return self._request("hello").int("version")

    # -- programs ------------------------------------------------------
    def open_program(self, source: ProgramSource) -> LoadedProgram:
        """Load a program from an object, or describe one already in the guest."""
        if isinstance(source, FromObject):
            return self.load(source.obj, source.name, source.options)
        return self.load_foreign(self.find_program(source.kind, source.value))

    def load(self, obj: BpfObject, prog_name: str,
             options: LoadOptions | None = None) -> LoadedProgram:
        """Load one program of ``obj``; raise ``VerifierError`` with an annotated log.

        ``options``: program/attach type, globals set before load, kernel modules.
        A kfunc that only a kernel module provides loads that module and retries.
        """
        options = options or LoadOptions()
        self.load_modules(list(options.modules))
        tokens = options.agent_tokens(obj)
        tried: dict[str, list[str]] = {}
        while True:
            try:
                load = self._request("load", obj.data, prog_name, *tokens, timeout=300)
                break
            except AgentError as err:
                if options.verifier_log_size is not None and "(verifier log truncated)" in str(
                        err):
                    raise UsageError(
                        f"loading {prog_name} with the verifier's detailed log: the log is "
                        f"over {options.verifier_log_size} bytes, so the kernel refused "
                        "the load; load it without --verifier-log") from None
                if not self._load_missing_modules(err, tried):
                    raise self._load_error(obj, prog_name, err, tried) from None
        info = replies.decode_load(load)
        prog = build_loaded(info, replies.decode_prog_info(self._request("info", info.handle)),
                            obj.btf)
        prog.maps = with_declared_types(obj, prog.maps)
        prog.verifier_log = info.verbose_log
        prog.kfunc_names = {f.start_insn + off: name for f in prog.functions
                            for off, name in obj.kfunc_calls(f.name).items()}
        return self._kernel_facts(prog)

    def _kernel_facts(self, prog: LoadedProgram) -> LoadedProgram:
        """Add what the debugger must know about the kernel before any run stops the VM."""
        if (needs_percpu_offset(prog) or has_percpu_maps(prog)
                or any(is_percpu_mov(insn) for insn in prog.xlated)):
            prog.percpu_offset_addr = self.kallsyms("__per_cpu_offset")
        return prog

    def load_modules(self, names: list[str]) -> None:
        """Load kernel modules of the guest's kernel (and their dependencies)."""
        if not names:
            return
        if self.kernel is None:
            raise HostError("the session is not started")
        for module in ModuleTree(module_root(self.kernel)).load_order(names):
            if module.name in self.modules_loaded:
                continue
            try:
                self._request("module_load", module.name, module.image, timeout=120)
            except AgentError as err:
                raise LoadError(str(err)) from None
            self.modules_loaded.append(module.name)

    def _load_missing_modules(self, err: AgentError, tried: dict[str, list[str]]) -> bool:
        """Load the modules that define the kernel symbols libbpf missed; False if none."""
        missing = [s for s in missing_ksyms(replies.error_log(err.reply, "libbpf_log"))
                   if s not in tried]
        if not missing or self.kernel is None:
            return False
        try:
            tree = ModuleTree(module_root(self.kernel))
        except UsageError:
            return False  # a kernel without modules: the hint says --modules
        for symbol in missing:
            tried[symbol] = tree.providers(symbol)
        wanted = [m for s in missing for m in tried[s] if m not in self.modules_loaded]
        self.load_modules(wanted)
        return bool(wanted)

    def _load_error(self, obj: BpfObject, prog_name: str, err: AgentError,
                    tried: dict[str, list[str]]) -> Exception:
        rejected = replies.decode_rejected(err.reply)
        if not rejected.log.strip():
            return LoadError(explain(prog_name, str(err),
                                     replies.error_log(err.reply, "libbpf_log"), tried))
        source_of = self._source_lookup(obj, rejected)
        annotated = annotate(rejected.log, source_of)
        summary = " / ".join(last_error_lines(annotated, 2))
        libbpf = libbpf_messages(replies.error_log(err.reply, "libbpf_log"))
        walk = failing_path(rejected.log, source_of)
        return VerifierError(f"the verifier rejected {prog_name}: {summary}\n"
                             + "".join(f"  {line}\n" for line in libbpf)
                             + ("--- the path to the error (the verifier's branch decisions) "
                                "---\n" + "\n".join(walk) + "\n" if walk else "")
                             + f"--- verifier log (source lines from the object) ---\n"
                             f"{annotated}", annotated)

    @staticmethod
    def _source_lookup(obj: BpfObject,
                       rejected: replies.RejectedLoad) -> Callable[[int], str | None]:
        """Instruction index → 'source text  @ file:line' from the rejected load."""
        records = sorted(rejected.line_info.lines(obj.btf), key=lambda r: r.insn_off)

        def source_of(index: int) -> str | None:
            best = None
            for rec in records:
                if rec.insn_off > index:
                    break
                best = rec
            if best is None:
                return None
            return f"{best.line_text.strip()}  @ {best.file_name.rsplit('/', 1)[-1]}:{best.line}"
        return source_of

    def unload(self, prog: LoadedProgram) -> None:
        """Unload a program qstep loaded (programs loaded by others are left alone)."""
        if not prog.foreign:
            self._request("unload", prog.handle)

    @contextmanager
    def loaded(self, obj: BpfObject, prog_name: str,
               options: LoadOptions | None = None) -> Iterator[LoadedProgram]:
        """``load``, unloaded again when the block ends (a fresh program, fresh maps)."""
        prog = self.load(obj, prog_name, options)
        try:
            yield prog
        finally:
            self.unload(prog)

    def find_program(self, kind: str, value: str) -> int:
        """The id of a program in the guest by ``id``, ``name``, ``tag`` or ``pinned`` path."""
        return self.find(kind, value).prog_id

    def find(self, kind: str, value: str) -> FoundProgram:
        """A program in the guest by ``id``, ``name``, ``tag`` or ``pinned`` path.

        A ``name`` is the kernel's (at most 15 characters) or the full name of the
        program's function (its BTF), which is the object's program name.
        """
        if kind not in SELECTORS:
            raise UsageError(f"select a program by id, name, tag or pinned, not '{kind}'")
        try:
            return replies.decode_found(self._request("find_prog", kind, value))
        except AgentError as err:
            if kind != "name" or len(value) <= KERNEL_NAME_MAX:
                raise UsageError(str(err)) from None
            return self._find_full_name(value, str(err))

    def _find_full_name(self, name: str, miss: str) -> FoundProgram:
        """The program whose kernel name is ``name`` cut to 15 characters and whose
        entry function (BTF func_info) is called ``name``."""
        short = name[:KERNEL_NAME_MAX]
        try:
            ids = [replies.decode_found(self._request("find_prog", "name", short)).prog_id]
        except AgentError as err:
            ids = replies.several_ids(str(err))
        matches = [i for i in ids if self.entry_name(i) == name]
        if len(matches) == 1:
            return replies.decode_found(self._request("find_prog", "id", str(matches[0])))
        if matches:
            raise UsageError(f"several programs named {name}: ids "
                             f"{', '.join(map(str, matches))}")
        raise UsageError(f"{miss} (no program's function is called {name} either)")

    def entry_name(self, prog_id: int) -> str:
        """A program's full name (its entry function's, from its BTF), or the kernel's."""
        return self.load_foreign(prog_id).name

    def load_foreign(self, prog_id: int) -> LoadedProgram:
        """Describe a program qstep did not load (coarse JIT map: its own line info)."""
        return self._kernel_facts(
            build_foreign(replies.decode_prog_info(self._request("info_id", prog_id))))

    # -- guest files and commands ----------------------------------------
    def put_file(self, guest_path: str, data: bytes) -> None:
        """Copy a file into the guest."""
        try:
            self._request("put", guest_path, data)
        except AgentError as err:
            raise UsageError(f"copying a file to {guest_path} in the guest: {err}") from None

    def get_file(self, guest_path: str) -> bytes:
        """Copy a file out of the guest."""
        try:
            return replies.decode_file(self._request("get", guest_path))
        except AgentError as err:
            raise UsageError(f"copying {guest_path} out of the guest: {err}") from None

    def guest_command(self, command: str) -> tuple[int, str]:
        """Run ``/bin/sh -c command`` in the guest; (status, output)."""
        result = replies.decode_command(self._request("exec", command.encode(), timeout=90))
        return result.status, result.output

    @cached_property
    def kernel_btf(self) -> bytes | None:
        """The guest kernel's BTF (maps read while stopped), fetched once."""
        return fetch_kernel_btf(self)

    def kallsyms(self, symbol: str) -> int:
        """The address of a kernel symbol in the guest."""
        return replies.decode_address(self._request("kallsyms", symbol))

    # -- maps ------------------------------------------------------------
    def _map_id(self, prog: LoadedProgram, map_name: str) -> int:
        if map_name not in prog.maps:
            raise UsageError(f"unknown map '{map_name}'; maps: {', '.join(sorted(prog.maps))}")
        return prog.maps[map_name].id

    def update_map(self, prog: LoadedProgram, map_name: str, key: bytes, value: bytes) -> None:
        """Write one entry of a map of ``prog`` (raw key and value bytes)."""
        map_id = self._map_id(prog, map_name)
        try:
            self.update_map_id(map_id, key, value)
        except AgentError as err:
            raise UsageError(f"map {map_name}: update failed: {err}") from None

    def dump_map(self, prog: LoadedProgram, map_name: str) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of a map of ``prog``."""
        return self.dump_map_id(self._map_id(prog, map_name)).entries

    def update_map_id(self, map_id: int, key: bytes, value: bytes) -> None:
        """Write one entry of any map in the guest, by map id."""
        self._request("update_id", map_id, key, value)

    def dump_map_id(self, map_id: int) -> MapDump:
        """The entries of any map in the guest, by map id."""
        return replies.decode_dump(self._request("dump_id", map_id))

    # -- runs ------------------------------------------------------------
    def test_run(self, prog: LoadedProgram, data: bytes, ctx: bytes = b"",
                 repeat: int = 1, out_size: int | None = None) -> RunResult:
        """Run ``prog`` once on ``data`` (BPF_PROG_TEST_RUN, ``repeat`` times)."""
        size = out_size if out_size is not None else len(data) + 4096
        try:
            reply = self._request(*self._run_args(prog, RunRequest(data, ctx, repeat), size),
                                  timeout=60 + repeat / 1000)
        except AgentError as err:
            why = packet_size_problem(prog.prog_type, len(data)) or ""
            raise UsageError(f"BPF_PROG_TEST_RUN of {prog.name} failed: {err}"
                             + (f" ({why})" if why else "")) from None
        return replies.decode_run(reply)

    @staticmethod
    def _run_args(prog: LoadedProgram, request: RunRequest,
                  out_size: int) -> tuple[str, int, int, bytes, bytes, int]:
        verb, target = ("run_id", prog.prog_id) if prog.foreign else ("run", prog.handle)
        refusal = run_refusal(prog.name, prog.prog_type)
        if refusal is not None:
            raise UsageError(refusal)
        if prog.prog_type in CTX_PROG_TYPES:  # the input is the context; no repeat
            return verb, target, 0, b"", request.ctx or request.data, 0
        ctx = request.ctx or xdp_md_in(prog.prog_type, request.data)
        return verb, target, request.repeat, request.data, ctx, out_size

    def start_run(self, prog: LoadedProgram, request: RunRequest) -> int:
        """Start a test run without waiting (the CPU may stop in it); returns a run id."""
        if self.agent is None:
            raise HostError("the session is not started")
        return self.agent.send(*self._run_args(prog, request, len(request.data) + 4096))

    def poll_run(self, run: int, timeout: float) -> RunResult | None:
        """The result of a started run if it ends within ``timeout`` seconds."""
        assert self.agent is not None
        try:
            reply = self.agent.poll_reply(run, timeout, "run")
        except AgentError as err:
            raise GuestError(f"BPF_PROG_TEST_RUN failed: {err}") from None
        return None if reply is None else replies.decode_run(reply)

    # -- debugging -------------------------------------------------------
    @contextmanager
    def target(self, backend: str | None = None) -> Iterator[Target]:
        """The guest CPU through QEMU's gdbstub ("rsp", default, or "gdb"); one at a time."""
        if self.machine is None or self.machine.config is None:
            raise HostError("the session is not started")
        with open_target(backend, self.machine.config.gdb_socket) as target:
            yield target

    @contextmanager
    def debugger(self, prog: LoadedProgram, request: RunRequest,
                 backend: str | None = None, reverse: bool = False,
                 record_limit: int | None = None, detach: bool = True) -> Iterator[Debugger]:
        """A debugger for ``prog`` that runs it on ``request``; detached on exit.

        ``reverse``: a ``ReversibleDebugger`` that records each run as it goes (when
        this QEMU has the recorder; ``can_reverse`` says whether it can go back).
        ``detach=False`` when the session ends right after: a run in progress is not
        first let finish (``quit`` in a long run leaves at once)."""
        kernel_btf = self.kernel_btf  # read before any stop: the agent cannot answer then
        with self.target(backend) as target:
            dbg: Debugger
            if reverse:  # imported here: the recorder's modules import this one
                from qstep.debugger.reverse import reversible_debugger
                dbg = reversible_debugger(self, prog, target, request, record_limit)
            else:
                dbg = Debugger(prog, target, self, request)
            dbg.kernel_btf = kernel_btf
            try:
                yield dbg
            except (KeyboardInterrupt, interrupts.Terminated):
                # The session goes down next: letting the run finish first (detach)
                # would keep a Ctrl-C waiting for the whole program.
                raise
            except BaseException:
                dbg.detach()
                raise
            if detach:
                dbg.detach()

    # -- probes ----------------------------------------------------------
    def probe_setup(self, ringbuf_bytes: int) -> ProbeChannel:
        """Create (or reset) the probe event ring buffer and counters."""
        return replies.decode_probe_channel(self._request("probe_setup", ringbuf_bytes))

    def probe_attach(self, probe_id: int, addr: int, insns: bytes, map_refs: bytes,
                     bp_type: int = 4, bp_len: int = 8, mode: str = "auto") -> AttachedProbe:
        """Load a probe program and attach it at a kernel address.

        Raises ``VerifierError`` (with the log) when the verifier rejects it,
        ``UsageError`` for any other refusal.
        """
        try:
            return replies.decode_attached(self._request(
                "probe_attach", probe_id, addr, bp_type, bp_len, insns, map_refs, mode))
        except AgentError as err:
            log = replies.error_log(err.reply)
            if log:
                raise VerifierError(str(err), log) from None
            raise UsageError(str(err)) from None

    def probe_detach(self, handle: int) -> None:
        """Detach and unload one probe."""
        self._request("probe_detach", handle)

    def probe_drain(self) -> ProbeRecords:
        """Every probe record written since the last drain."""
        return replies.decode_drain(self._request("probe_drain"))
