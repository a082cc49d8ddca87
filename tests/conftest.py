"""Shared fixtures: compiled BPF objects and one booted guest per kernel per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from qstep import pytest_plugin
from qstep.bpf.elf import BpfObject
from qstep.loaded import LoadedProgram
from qstep.paths import REPO_ROOT, cache_dir
from qstep.session import Session
from qstep.userinput import encode_entry, read_map_file

CFLAGS = ["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu"]
CPU_FLAGS = {"alu": ["-mcpu=v3"], "alu_v4": ["-mcpu=v4"]}


# The one rule for a tool the tests need and do not find: fail, naming the Debian
# package (``make deps`` installs them all; ``make test`` runs it first).
TOOL_PACKAGES = {"clang-19": "clang-19", "bpftool": "bpftool", "cpio": "cpio", "gdb": "gdb"}


def require_tool(name: str) -> None:
    """Fail the test with the install hint when ``name`` is not on PATH."""
    if shutil.which(name) is None:
        pytest.fail(f"{name} is missing: run make deps (Debian package "
                    f"{TOOL_PACKAGES.get(name, name)})")


def clang_bpf(source: Path, out: Path, *flags: str) -> Path:
    """Compile one BPF C file with clang-19 (the flags the README gives) into ``out``."""
    require_tool("clang-19")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["clang-19", *CFLAGS, *flags, "-c", str(source), "-o", str(out)], check=True)
    return out


def compile_bpf(source: Path, out_dir: Path) -> Path:
    """clang-19 a BPF C file (cached by mtime) and return the object path."""
    out = out_dir / source.name.replace(".c", ".o")
    if out.exists() and out.stat().st_mtime >= source.stat().st_mtime:
        return out
    stem = source.name.removesuffix(".bpf.c")
    return clang_bpf(source, out, *CPU_FLAGS.get(stem, []))


@pytest.fixture(scope="session")
def bpf_obj() -> Callable[[str], Path]:
    """``bpf_obj('tests/progs/calls.bpf.c')`` → compiled object path."""
    out_dir = cache_dir() / "build" / "pytest"

    def build(relpath: str) -> Path:
        return compile_bpf(REPO_ROOT / relpath, out_dir)
    return build


@pytest.fixture(scope="session")
def l4lb_obj(bpf_obj: Callable[[str], Path]) -> Path:
    return bpf_obj("examples/l4lb/l4lb.bpf.c")


def pytest_configure(config: pytest.Config) -> None:
    """qstep's own VM tests use its pytest plugin (normally loaded by its entry point)."""
    if not config.pluginmanager.has_plugin("qstep"):
        config.pluginmanager.register(pytest_plugin, "qstep")


def _guest(guests: pytest_plugin.GuestPool, kernel: str) -> Session:
    if os.geteuid() != 0:
        pytest.skip("VM tests fetch kernels with apt and need root")
    return guests.get(kernel)


@pytest.fixture(scope="session")
def vm(qstep_guests: pytest_plugin.GuestPool) -> Session:
    """One guest with the default test kernel, shared by all tests that allow it."""
    return _guest(qstep_guests, os.environ.get("QSTEP_TEST_KERNEL", "6.1"))


# Kernels the kernel-parametrized VM tests run on. make test: the oldest, the LTS and
# the newest (7.2 adds ~1/8 of the suite's time under load); make test-kernels runs the
# whole matrix; QSTEP_TEST_KERNELS=6.1,7.3 (or a kernel image path) chooses.
MATRIX = ("6.1", "6.12", "7.2", "7.3")
DEFAULT_KERNELS = ("6.1", "6.12", "7.3")


def matrix_kernels(*wanted: str) -> list[str]:
    """The kernels among ``wanted`` selected for this run; without ``wanted``, all of
    them (which may include kernel images by path, e.g. from ``qstep images build``)."""
    chosen = os.environ.get("QSTEP_TEST_KERNELS", ",".join(DEFAULT_KERNELS)).split(",")
    return [k for k in wanted if k in chosen] if wanted else chosen


def release_version(release: str) -> tuple[int, int]:
    """(major, minor) of a ``uname -r`` string such as ``7.3.4+deb13-cloud-amd64``."""
    major, minor = release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


@pytest.fixture(scope="session")
def guests(qstep_guests: pytest_plugin.GuestPool) -> Callable[[str], Session]:
    """``guests("7.3")`` → the shared guest with that kernel, booted on first use."""
    return lambda kernel: _guest(qstep_guests, kernel)


@pytest.fixture(scope="session")
def vm612(qstep_guests: pytest_plugin.GuestPool) -> Session:
    """A second guest with the 6.12 kernel, for the tests that compare kernels."""
    return _guest(qstep_guests, "6.12")


@pytest.fixture(params=["6.1", "6.12"])
def guest(request: pytest.FixtureRequest) -> Session:
    """The shared guest of each test kernel in turn: a test using it runs on both."""
    session: Session = request.getfixturevalue("vm" if request.param == "6.1" else "vm612")
    return session


def load_program(vm: Session, obj_path: Path, name: str, example_maps: bool) -> LoadedProgram:
    """Load ``name`` from ``obj_path``; fill the maps from examples/l4lb/maps.txt if asked."""
    prog = vm.load(BpfObject.open(obj_path), name)
    if example_maps:
        for entry in read_map_file(REPO_ROOT / "examples" / "l4lb" / "maps.txt"):
            key, value = encode_entry(entry, prog.maps[entry.map_name], prog.btf)
            vm.update_map(prog, entry.map_name, key, value)
    return prog
