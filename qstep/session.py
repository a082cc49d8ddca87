"""A debugging session: one booted guest with its agent, and programs loaded into it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from qstep.agent.client import AgentClient, AgentError
from qstep.bpf.btf import decode_line_info
from qstep.bpf.elf import BpfObject
from qstep.errors import GuestError, HostError, UsageError, VerifierError
from qstep.images.guest import build_initramfs
from qstep.images.kernels import Kernel, resolve_kernel
from qstep.loaded import LoadedProgram, build_loaded
from qstep.verifier_log import annotate, last_error_lines
from qstep.vm.machine import Machine

BOOT_TIMEOUT = 180.0


@dataclass(frozen=True)
class RunResult:
    """The outcome of one BPF_PROG_TEST_RUN."""

    retval: int
    duration_ns: int
    data_out: bytes
    ctx_out: bytes


class Session:
    """Boots the guest on enter, shuts it down on exit; loads and runs programs."""

    def __init__(self, kernel: str | None = None, accel: str = "tcg",
                 memory_mb: int = 512, boot_timeout: float = BOOT_TIMEOUT) -> None:
        self.kernel_name = kernel
        self.boot_timeout = boot_timeout
        self.accel = accel
        self.memory_mb = memory_mb
        self.kernel: Kernel | None = None
        self.machine: Machine | None = None
        self.agent: AgentClient | None = None

    def prepare(self) -> Machine:
        """Resolve the kernel and guest image; return an unstarted machine."""
        self.kernel = resolve_kernel(self.kernel_name)
        initrd = build_initramfs()
        self.machine = Machine(self.kernel.bzimage, initrd, accel=self.accel,
                               memory_mb=self.memory_mb)
        return self.machine

    def __enter__(self) -> Session:
        machine = self.machine or self.prepare()
        machine.launch()
        try:
            assert machine.agent_sock is not None
            self.agent = AgentClient(machine.agent_sock, machine.check_alive,
                                     machine.console_tail, machine.window)
            self.agent.wait_ready(self.boot_timeout)
        except BaseException:
            machine.shutdown()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.machine is not None:
            self.machine.shutdown()

    @property
    def release(self) -> str:
        return self.agent.kernel_release if self.agent else ""

    def _agent(self) -> AgentClient:
        if self.agent is None:
            raise HostError("the session is not started")
        return self.agent

    # -- programs ------------------------------------------------------
    def load(self, obj: BpfObject, prog_name: str) -> LoadedProgram:
        """Load one program of ``obj``; raise ``VerifierError`` with an annotated log."""
        agent = self._agent()
        try:
            load = agent.request("load", obj.data, prog_name, timeout=300)
        except AgentError as err:
            raise self._load_error(obj, prog_name, err) from None
        info = agent.request("info", load.int("handle"))
        return build_loaded(load, info, obj.btf)

    def _load_error(self, obj: BpfObject, prog_name: str, err: AgentError) -> Exception:
        log = err.reply.blob("log").decode(errors="replace") if err.reply.has("log") else ""
        if not log.strip():
            return GuestError(f"loading {prog_name} failed: {err}")
        source_of = self._source_lookup(obj, err)
        annotated = annotate(log, source_of)
        summary = " / ".join(last_error_lines(annotated, 2))
        return VerifierError(f"the verifier rejected {prog_name}: {summary}\n"
                             f"--- verifier log (source lines from the object) ---\n"
                             f"{annotated}", annotated)

    @staticmethod
    def _source_lookup(obj: BpfObject, err: AgentError) -> Callable[[int], str | None]:
        """Instruction index → 'source text  @ file:line' from the rejected load."""
        reply = err.reply
        if not reply.has("line_info"):
            return lambda _index: None
        records = decode_line_info(reply.blob("line_info"),
                                           reply.int("line_info_rec_size"), obj.btf)
        records.sort(key=lambda r: r.insn_off)

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
        if not prog.foreign:
            self._agent().request("unload", prog.handle)

    # -- programs loaded outside qstep -----------------------------------
    def put_file(self, guest_path: str, data: bytes) -> None:
        """Copy a file into the guest."""
        try:
            self._agent().request("put", guest_path, data)
        except AgentError as err:
            raise UsageError(f"copying a file to {guest_path} in the guest: {err}") from None

    def get_file(self, guest_path: str) -> bytes:
        """Copy a file out of the guest."""
        try:
            return self._agent().request("get", guest_path).blob("data")
        except AgentError as err:
            raise UsageError(f"copying {guest_path} out of the guest: {err}") from None

    def guest_command(self, command: str) -> tuple[int, str]:
        """Run ``/bin/sh -c command`` in the guest; (status, output)."""
        reply = self._agent().request("exec", command.encode(), timeout=90)
        return reply.int("status"), reply.blob("output").decode(errors="replace")

    def find_program(self, kind: str, value: str) -> int:
        """The id of a program in the guest by ``id``, ``name``, ``tag`` or ``pinned`` path."""
        if kind not in ("id", "name", "tag", "pinned"):
            raise UsageError(f"select a program by id, name, tag or pinned, not '{kind}'")
        try:
            return self._agent().request("find_prog", kind, value).int("prog_id")
        except AgentError as err:
            raise UsageError(str(err)) from None

    def load_foreign(self, prog_id: int) -> LoadedProgram:
        """Describe a program qstep did not load (coarse JIT map: its own line info)."""
        from qstep.foreign import build_foreign
        return build_foreign(self._agent().request("info_id", prog_id))

    # -- maps and runs -------------------------------------------------
    def update_map(self, prog: LoadedProgram, map_name: str, key: bytes, value: bytes) -> None:
        if map_name not in prog.maps:
            raise UsageError(f"unknown map '{map_name}'; maps: {', '.join(sorted(prog.maps))}")
        try:
            if prog.foreign:
                self._agent().request("update_id", prog.maps[map_name].id, key, value)
            else:
                self._agent().request("update", prog.handle, map_name, key, value)
        except AgentError as err:
            raise UsageError(f"map {map_name}: update failed: {err}") from None

    def dump_map(self, prog: LoadedProgram, map_name: str) -> list[tuple[bytes, bytes]]:
        reply = (self._agent().request("dump_id", prog.maps[map_name].id) if prog.foreign
                 else self._agent().request("dump", prog.handle, map_name))
        return [(v[0], v[1]) for v in reply.all("entry")
                if isinstance(v[0], bytes) and isinstance(v[1], bytes)]

    def test_run(self, prog: LoadedProgram, data: bytes, ctx: bytes = b"",
                 repeat: int = 1, out_size: int | None = None) -> RunResult:
        size = out_size if out_size is not None else len(data) + 4096
        try:
            verb, target = ("run_id", prog.prog_id) if prog.foreign else ("run", prog.handle)
            reply = self._agent().request(verb, target, repeat, data, ctx, size,
                                          timeout=60 + repeat / 1000)
        except AgentError as err:
            raise UsageError(f"BPF_PROG_TEST_RUN of {prog.name} failed: {err}") from None
        return RunResult(reply.int("retval"), reply.int("duration"),
                         reply.blob("data_out"), reply.blob("ctx_out"))

    def kallsyms(self, symbol: str) -> int:
        reply = self._agent().request("kallsyms", symbol)
        return int(str(reply.get("addr")), 16)

