"""A booted, agent-ready guest saved once per kernel and restored instead of cold-booting.

The first session with a given kernel, guest image and QEMU boots as usual and,
once the agent is ready (nothing loaded yet), saves the whole VM with QEMU's
migration to a file in the cache. Later sessions start QEMU with ``-incoming
defer``, load that file and continue: the agent is where it was, waiting for a
request. A snapshot that cannot be restored is deleted and the session cold-boots.

The file is keyed by everything that decides the machine: QEMU's binary, the
kernel and initramfs contents and the configuration (memory, CPUs, command
line, window size), so a changed input never restores an old guest.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import shutil
import sys
import time
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from qstep.agent.client import AgentClient
from qstep.agent.protocol import PROTOCOL_VERSION
from qstep.errors import GuestError, HostError
from qstep.images.cachelock import entry_lock, locked
from qstep.paths import cache_dir
from qstep.vm.machine import Machine
from qstep.vm.qemu_cmd import DEFAULT_APPEND, VmConfig, machine_args

FORMAT = 1  # bump when what a snapshot holds changes meaning
KEEP = 8  # snapshots kept in the cache (least recently used ones go first)
MIGRATION_TIMEOUT = 120.0
HELLO_TIMEOUT = 10.0


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _qemu_identity(qemu: str) -> str:
    path = shutil.which(qemu) or qemu
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def snapshot_key(cfg: VmConfig) -> str:
    """The cache key of a guest booted from ``cfg`` (paths of the run excluded)."""
    parts = [f"format={FORMAT}", _qemu_identity(cfg.qemu), _file_digest(cfg.kernel),
             _file_digest(cfg.initrd), " ".join(machine_args(cfg)),
             " ".join([*DEFAULT_APPEND, *cfg.append_extra]),
             f"window={cfg.window_bytes if cfg.window else 0}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def snapshot_path(cfg: VmConfig) -> Path:
    return cache_dir() / "snapshots" / f"{snapshot_key(cfg)}.vmstate"


def _wait_migration(qmp: QEMUMonitorProtocol, what: str) -> None:
    deadline = time.monotonic() + MIGRATION_TIMEOUT
    while time.monotonic() < deadline:
        reply = qmp.cmd("query-migrate")
        status = reply if isinstance(reply, dict) else {}
        state = str(status.get("status", ""))
        if state == "completed":
            return
        if state in ("failed", "cancelled"):
            raise HostError(f"{what} failed: {status.get('error-desc', state)}")
        time.sleep(0.01)
    raise HostError(f"{what} did not finish in {MIGRATION_TIMEOUT:.0f} s")


def save(machine: Machine, dest: Path) -> None:
    """Save the running guest into ``dest`` (atomically) and let it run on."""
    assert machine.qmp is not None
    with locked(entry_lock(dest)):
        if dest.exists():
            return
        tmp = dest.with_name(f".{dest.name}.staging-{machine.pid}")
        machine.qmp.cmd("stop")
        try:
            machine.qmp.cmd("migrate", uri=f"exec:cat > {shlex.quote(str(tmp))}")
            _wait_migration(machine.qmp, "saving the guest")
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)
            machine.qmp.cmd("cont")
    prune(dest.parent)


def prune(directory: Path, keep: int = KEEP) -> None:
    """Delete all but the ``keep`` most recently used snapshots (a restore touches its file)."""
    files = sorted(directory.glob("*.vmstate"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()


def restore(machine: Machine, src: Path) -> AgentClient:
    """Launch ``machine`` from the saved guest ``src``; return its ready agent client."""
    machine.incoming = True
    machine.launch()
    try:
        assert machine.qmp is not None and machine.agent_sock is not None
        machine.qmp.cmd("migrate-incoming", uri=f"exec:cat {shlex.quote(str(src))}")
        _wait_migration(machine.qmp, "restoring the guest")
        machine.qmp.cmd("cont")
        agent = AgentClient(machine.agent_sock, machine.check_alive, machine.console_tail,
                            machine.window)
        hello = agent.request("hello", timeout=HELLO_TIMEOUT)
        if hello.int("version") != PROTOCOL_VERSION:
            raise GuestError(f"the saved agent speaks protocol {hello.int('version')}")
        agent.kernel_release = str(hello.get("kernel"))
        if machine.window is not None:
            machine.window.unlink()
        agent.use_window(True)
        return agent
    except BaseException:
        machine.shutdown()
        raise
    finally:
        machine.incoming = False


def try_restore(machine: Machine) -> AgentClient | None:
    """The restored guest's agent, or None (no snapshot yet, or a broken one, deleted)."""
    path = snapshot_path(machine.make_config(Path("/nonexistent")))
    if not path.exists():
        return None
    try:
        path.touch()  # most recently used: kept by prune()
        return restore(machine, path)
    except Exception:  # noqa: BLE001 - any failure: forget the snapshot, cold-boot instead
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def save_after_boot(machine: Machine) -> None:
    """Save a freshly booted, agent-ready guest once; a failure only costs the speed-up."""
    assert machine.config is not None
    try:
        save(machine, snapshot_path(machine.config))
    except Exception as err:  # noqa: BLE001 - the session goes on without a snapshot
        print(f"qstep: note: the booted guest was not saved ({err}); the next session "
              "boots again", file=sys.stderr)
