"""One object owns one QEMU process: launch, channels, crash detection, shutdown.

``Machine`` is a context manager. Whatever happens (an exception, Ctrl-C, the
parent dying: QEMU gets a parent-death SIGKILL), QEMU does not outlive it.
Shutdown asks QMP to ``quit``, waits briefly, then kills.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from qemu.qmp.legacy import QEMUMonitorProtocol

from qstep import interrupts
from qstep.agent.window import HostWindow
from qstep.errors import GuestError, HostError
from qstep.images.qemu import Emulator, resolve_emulator
from qstep.recorder.plugin import find_plugin
from qstep.vm.console import ConsoleMonitor
from qstep.vm.lifetime import die_with_parent
from qstep.vm.qemu_cmd import VmConfig, qemu_argv
from qstep.vm.tempdirs import make_private_dir, socket_dir_parent

CONNECT_TIMEOUT = 30.0
WINDOW_BYTES = 64 << 20
SHM_DIR = Path("/dev/shm")  # tmpfs: the window's pages are never written back to a disk


class Machine:
    """A running QEMU guest with console, agent channel, QMP and gdbstub."""

    def __init__(self, kernel: Path, initrd: Path, *, accel: str = "tcg",
                 memory_mb: int = 512, emulator: Emulator | None = None,
                 append_extra: tuple[str, ...] = (), window_bytes: int = WINDOW_BYTES,
                 recorder: bool = True) -> None:
        self._kernel, self._initrd, self._accel = kernel, initrd, accel
        self._memory_mb, self._append_extra = memory_mb, append_extra
        self.emulator = emulator or resolve_emulator()
        self.plugin, self.recorder_error = find_plugin(self.emulator) if recorder else (None, "")
        self._window_bytes = window_bytes
        self.window: HostWindow | None = None  # the agent's shared-memory window
        self._window_dir: Path | None = None
        self.workdir: Path | None = None
        self.config: VmConfig | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.console: ConsoleMonitor | None = None
        self.agent_sock: socket.socket | None = None
        self.qmp: QEMUMonitorProtocol | None = None
        self.incoming = False  # launch waiting for a saved guest (qstep.vm.snapshot)

    # -- configuration -------------------------------------------------
    def make_config(self, workdir: Path) -> VmConfig:
        return VmConfig(kernel=Path(self._kernel), initrd=Path(self._initrd), workdir=workdir,
                        qemu=self.emulator.binary, data_dirs=self.emulator.data_dirs,
                        tcg_cpu=self.emulator.tcg_cpu, plugin=self.plugin,
                        accel=self._accel, memory_mb=self._memory_mb,
                        append_extra=tuple(self._append_extra),
                        window=self._window_path(workdir),
                        window_bytes=self._window_bytes, incoming=self.incoming)

    def _window_path(self, workdir: Path) -> Path | None:
        if self.window is not None:
            return self.window.path
        return workdir / "window" if self._window_bytes else None  # --print-cmd

    @property
    def argv(self) -> list[str]:
        assert self.config is not None
        return qemu_argv(self.config)

    # -- lifecycle -----------------------------------------------------
    def __enter__(self) -> Machine:
        self.launch()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    def launch(self) -> None:
        """Start QEMU and connect the agent and QMP channels; clean up on failure."""
        qemu = self.emulator.binary
        if shutil.which(qemu) is None:
            raise HostError(f"{qemu} not found; install it: apt-get install qemu-system-x86 "
                            "(or run: make deps)")
        try:
            with interrupts.deferred():  # a signal lands with the directory recorded
                self.workdir = make_private_dir("qstep-vm-", socket_dir_parent(
                    "qstep-vm-", "recorder.sock"))
            self._create_window()
            self.config = self.make_config(self.workdir)
            self._spawn()
            self.agent_sock = self._connect_unix(self.config.agent_socket)
            self.qmp = self._connect_qmp()
        except BaseException:
            self.shutdown()
            raise

    @interrupts.deferred()
    def _create_window(self) -> None:
        if not self._window_bytes:
            return
        shm = SHM_DIR if SHM_DIR.is_dir() and os.access(SHM_DIR, os.W_OK) else None
        self._window_dir = make_private_dir("qstep-window-", shm)
        self.window = HostWindow(self._window_dir / "window", self._window_bytes)

    @interrupts.deferred()  # the process is recorded before a signal is taken
    def _spawn(self) -> None:
        assert self.workdir is not None
        stderr = open(self.workdir / "qemu.stderr", "wb")  # noqa: SIM115 - closed below
        try:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                env={**os.environ, **self.emulator.env},
                preexec_fn=die_with_parent, start_new_session=True)
        finally:
            stderr.close()
        assert self.process.stdout is not None
        self.console = ConsoleMonitor(self.process.stdout, self.workdir / "console.log")
        self.console.start()

    def _connect_unix(self, path: Path) -> socket.socket:
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            self._check_process_running()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise self._launch_error(f"QEMU did not create {path.name}") from None
                time.sleep(0.02)

    def _connect_qmp(self) -> QEMUMonitorProtocol:
        assert self.config is not None
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while not self.config.qmp_socket.exists():
            self._check_process_running()
            if time.monotonic() > deadline:
                raise self._launch_error("QEMU did not create its QMP socket")
            time.sleep(0.02)
        with interrupts.deferred():  # an interrupted asyncio handshake leaves tasks behind
            qmp = QEMUMonitorProtocol(str(self.config.qmp_socket))
            try:
                qmp.connect(negotiate=True)
            except Exception as err:  # qemu.qmp's ConnectError, EOF, ...: QEMU went away
                with contextlib.suppress(Exception):
                    qmp.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(1.0) if self.process else None
                self._check_process_running()
                raise self._launch_error(f"cannot connect to QEMU's monitor: {err}") from None
        return qmp

    def _check_process_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise self._launch_error(f"QEMU exited with status {self.process.returncode}")

    def _launch_error(self, what: str) -> HostError:
        """QEMU did not start: its first stderr line in the message, the rest (command,
        stderr, console) in ``console_tail``."""
        stderr = self.stderr_text().strip()
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        first = next((ln for ln in lines if ": info: " not in ln), lines[0] if lines else "")
        if self.config is not None and self.config.accel == "kvm":
            first += " (with --accel kvm; --accel tcg needs no KVM)"
        detail = f"command: {' '.join(self.argv)}\nstderr: {stderr}\n{self.console_tail()}"
        return HostError(f"{what}: {first}" if first else what, detail)

    # -- state ---------------------------------------------------------
    def stderr_text(self) -> str:
        if self.workdir is None:
            return ""
        path = self.workdir / "qemu.stderr"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def console_tail(self) -> str:
        return self.console.tail() if self.console else ""

    def check_alive(self) -> None:
        """Raise ``GuestError`` if the guest crashed or QEMU is gone."""
        if self.console is not None and self.console.crash_line is not None:
            time.sleep(0.2)  # let the rest of the report reach the console
            raise GuestError(f"guest crashed: {self.console.crash_line}", self.console_tail())
        if self.process is None or self.process.poll() is not None:
            code = self.process.returncode if self.process else None
            raise GuestError(f"QEMU exited (status {code}); {self.stderr_text().strip()}",
                             self.console_tail())

    # -- shutdown ------------------------------------------------------
    @interrupts.deferred()  # a signal during cleanup is taken once everything is released
    def shutdown(self, timeout: float = 3.0) -> None:
        """Quit QEMU via QMP, kill it if it lingers, release every resource."""
        try:
            self._quit_qmp()
            self._stop_process(timeout)
        finally:
            self._close_channels()
            if self.console is not None:
                self.console.join(1.0)
            if self.window is not None:
                self.window.close()
                self.window = None
            for tmp in (self.workdir, self._window_dir):
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
            self.workdir = self._window_dir = None

    def _quit_qmp(self) -> None:
        if self.qmp is None or self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(Exception):  # QEMU may close the socket before replying
            self.qmp.cmd("quit")

    def _stop_process(self, timeout: float) -> None:
        proc = self.process
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise

    def _close_channels(self) -> None:
        for closer in (self.qmp, self.agent_sock):
            if closer is None:
                continue
            with contextlib.suppress(Exception):  # best effort on teardown
                closer.close()
        self.qmp = None
        self.agent_sock = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


def process_exists(pid: int) -> bool:
    """True if a process with this pid exists (and is not a zombie we reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
