"""Run BPF programs on the host kernel (BPF_PROG_TEST_RUN), the ground truth for tests.

Needs root. Raw instruction programs are loaded with the bpf(2) syscall directly;
ELF objects go through ``bpftool prog loadall`` into a private bpffs mount.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qstep.bpf.uapi import ProgType
from qstep.errors import HostError

SYS_BPF = 321  # x86-64
BPF_OBJ_GET, BPF_PROG_LOAD, BPF_PROG_TEST_RUN = 7, 5, 10
_ATTR_SIZE = 128

_libc = ctypes.CDLL(None, use_errno=True)


def _addr(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


def _bpf(cmd: int, attr: bytearray) -> int:
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    ret = int(_libc.syscall(SYS_BPF, cmd, buf, len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    attr[:] = buf.raw
    return ret


def available() -> bool:
    """True when running as root on x86-64 Linux with bpftool installed."""
    return (os.geteuid() == 0 and os.uname().machine == "x86_64"
            and shutil.which("bpftool") is not None)


def load_raw(code: bytes, prog_type: int = ProgType.XDP) -> int:
    """Load raw instructions; return the program fd or raise HostError with the log."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 20)
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("<IIQQIIQ", attr, 0, prog_type, len(code) // 8, _addr(insns), _addr(lic),
                     1, len(log), _addr(log))
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        raise HostError(f"BPF_PROG_LOAD: {exc}\n{log.value.decode(errors='replace')}") from None


def obj_get(path: Path) -> int:
    """fd of the object pinned at `path`."""
    name = ctypes.create_string_buffer(os.fsencode(path))
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("<Q", attr, 0, _addr(name))
    return _bpf(BPF_OBJ_GET, attr)


def prog_run(fd: int, data: bytes) -> tuple[int, bytes]:
    """Run program `fd` once on packet `data`; return (retval, packet after)."""
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(len(data) + 4096)
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("<IIIIQQI", attr, 0, fd, 0, len(data), len(dout), _addr(din), _addr(dout), 1)
    _bpf(BPF_PROG_TEST_RUN, attr)
    retval, _, size_out = struct.unpack_from("<III", attr, 4)
    return retval, dout.raw[:size_out]


@contextmanager
def bpffs() -> Iterator[Path]:
    """A private bpffs mount in a temporary directory, unmounted afterwards."""
    with tempfile.TemporaryDirectory(prefix="qstep-bpffs-") as tmp:
        subprocess.run(["mount", "-t", "bpf", "bpf", tmp], check=True)
        try:
            yield Path(tmp)
        finally:
            subprocess.run(["umount", tmp], check=True)


@contextmanager
def load_object(obj: Path) -> Iterator[dict[str, int]]:
    """Load every program of an ELF object with bpftool; yield {program name: fd}."""
    with bpffs() as fs:
        pins = fs / "progs"
        proc = subprocess.run(["bpftool", "prog", "loadall", str(obj), str(pins)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise HostError(f"bpftool prog loadall {obj} failed:\n{proc.stderr}")
        fds: dict[str, int] = {}
        try:
            for pin in pins.iterdir():
                fds[pin.name] = obj_get(pin)
            yield fds
        finally:
            for fd in fds.values():
                os.close(fd)
