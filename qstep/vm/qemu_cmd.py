"""The QEMU command line, built by small pure functions that each return ``list[str]``."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

# nowatchdog, rcu_cpu_stall_suppress: a program that runs for more than ~20 s of guest
# time (a long bpf_loop under TCG) holds the CPU and an RCU read lock throughout; the
# soft-lockup and RCU-stall reports it would trigger are emulation artefacts, not crashes.
DEFAULT_APPEND = ["console=ttyS0", "nokaslr", "panic=-1", "oops=panic", "quiet",
                  "loglevel=4", "rdinit=/init", "mitigations=off", "tsc=reliable",
                  "nowatchdog", "rcupdate.rcu_cpu_stall_suppress=1"]

# The TCG guest CPU. On QEMU 7.2 cmpxchg16b crashed 6.12 guests (double fault at
# cmpxchg16b in SLUB, NULL dereferences) in 4 of 10 sessions that used gdbstub
# breakpoints, and in none of 14 without it, so 7.2 gets a CPU without it (the JIT
# does not use it). On QEMU 10 the same 10 sessions (6.12, the example traced through
# breakpoints) and the whole suite passed with it: no workaround there.
TCG_CPU = "qemu64"
TCG_CPU_QEMU7 = "qemu64,-cx16"


@dataclass(frozen=True)
class VmConfig:
    """Everything that decides the QEMU command line."""

    kernel: Path
    initrd: Path
    workdir: Path
    qemu: str = "qemu-system-x86_64"
    data_dirs: tuple[Path, ...] = ()
    tcg_cpu: str = TCG_CPU
    plugin: Path | None = None
    accel: str = "tcg"
    memory_mb: int = 512
    cpus: int = 1
    append_extra: tuple[str, ...] = field(default_factory=tuple)
    window: Path | None = None  # file backing the agent's shared-memory window
    window_bytes: int = 64 << 20
    incoming: bool = False  # start paused, waiting for a saved guest (qstep.vm.snapshot)

    @property
    def qmp_socket(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        return self.workdir / "agent.sock"

    @property
    def gdb_socket(self) -> Path:
        return self.workdir / "gdb.sock"

    @property
    def recorder_socket(self) -> Path:
        return self.workdir / "recorder.sock"

    @property
    def recorder_log(self) -> Path:
        return self.workdir / "recorder.log"


def machine_args(cfg: VmConfig) -> list[str]:
    accel = (["-accel", "kvm", "-cpu", "host"] if cfg.accel == "kvm"
             else ["-accel", "tcg", "-cpu", cfg.tcg_cpu])
    return ["-machine", "q35", *accel, "-m", str(cfg.memory_mb), "-smp", str(cfg.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]


def firmware_args(cfg: VmConfig) -> list[str]:
    """``-L`` for a QEMU unpacked outside /usr (its own data and seabios directories)."""
    return [arg for d in cfg.data_dirs for arg in ("-L", str(d))]


def boot_args(cfg: VmConfig) -> list[str]:
    append = " ".join([*DEFAULT_APPEND, *cfg.append_extra])
    return ["-kernel", str(cfg.kernel), "-initrd", str(cfg.initrd), "-append", append]


def console_args() -> list[str]:
    """ttyS0: the kernel console, on QEMU's stdout (read by the console monitor)."""
    return ["-chardev", "stdio,id=console0,signal=off", "-serial", "chardev:console0"]


def agent_args(cfg: VmConfig) -> list[str]:
    """ttyS1: the agent channel; QEMU waits for the host to connect before it starts."""
    return ["-chardev", f"socket,id=agent0,path={cfg.agent_socket},server=on,wait=on",
            "-serial", "chardev:agent0"]


def window_args(cfg: VmConfig) -> list[str]:
    """The agent's shared-memory window: a host file shown to the guest as the BAR2 of
    an ivshmem-plain PCI device (the agent maps it through sysfs; no guest driver).

    Measured (bench/transfer_rate.py, TCG, 6.1): hex over the ttyS1 serial line moves
    30 KB/s of blob bytes into the guest and 90 KB/s back, so loading a 717 KB
    object took 28 s; through this window 165 MB/s in and 424 MB/s back (0.05 s).
    The serial line stays the control channel. ivshmem needs only CONFIG_PCI and
    sysfs (built into the 6.1 and 6.12 cloud kernels); virtio-serial is a module
    on 6.1.
    """
    if cfg.window is None:
        return []
    return ["-object", f"memory-backend-file,id=window0,share=on,mem-path={cfg.window},"
            f"size={cfg.window_bytes}",
            "-device", "ivshmem-plain,memdev=window0,master=on"]  # on: the VM can be saved


def qmp_args(cfg: VmConfig) -> list[str]:
    return ["-chardev", f"socket,id=qmp0,path={cfg.qmp_socket},server=on,wait=off",
            "-mon", "chardev=qmp0,mode=control"]


def gdb_args(cfg: VmConfig) -> list[str]:
    return ["-chardev", f"socket,id=gdb0,path={cfg.gdb_socket},server=on,wait=off",
            "-gdb", "chardev:gdb0"]


def plugin_args(cfg: VmConfig) -> list[str]:
    """The recorder TCG plugin: loaded disarmed (instruments nothing until armed over
    its own socket); measured cost when disarmed in bench/record_rate.py."""
    if cfg.plugin is None:
        return []
    return ["-plugin", f"{cfg.plugin},ctl={cfg.recorder_socket},log={cfg.recorder_log}"]


def qemu_argv(cfg: VmConfig) -> list[str]:
    """The complete argv for QEMU."""
    return [cfg.qemu, *machine_args(cfg), *firmware_args(cfg), *boot_args(cfg),
            *console_args(), *agent_args(cfg), *window_args(cfg), *qmp_args(cfg),
            *gdb_args(cfg), *plugin_args(cfg), *(["-incoming", "defer"] if cfg.incoming else [])]


def printable(argv: list[str]) -> str:
    """Shell-quoted form of argv, for ``--print-cmd``."""
    return " ".join(shlex.quote(a) for a in argv)
