"""pytest plugin: BPF regression tests as ordinary pytest tests, on real kernels.

Installed with qstep (entry point ``pytest11``). A test asks for ``qstep_vm``, a booted
guest (`qstep.Session`) with its agent ready, and runs once per kernel of
``--qstep-kernel 6.1,6.12,7.3`` (or ``all``; default: the catalog's default kernel).
Guests are booted on first use and shared by every test of the pytest session (with
pytest-xdist, one guest per kernel in each worker)::

    from qstep.bpf.elf import BpfObject

    def test_drops_short_packets(qstep_vm):
        prog = qstep_vm.load(BpfObject.open("build/prog.bpf.o"), "xdp_main")
        try:
            assert qstep_vm.test_run(prog, bytes(10)).retval == 1  # XDP_DROP
        finally:
            qstep_vm.unload(prog)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from qstep.images.kernels import kernel_names, load_catalog
from qstep.session import Session

KERNEL_OPTION = "--qstep-kernel"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qstep", "BPF programs on real kernels under QEMU")
    group.addoption(KERNEL_OPTION, default=os.environ.get("QSTEP_KERNELS"),
                    help="kernels for tests using qstep_vm: K[,K...] or 'all' "
                    "(default: $QSTEP_KERNELS, else the catalog default)")
    group.addoption("--qstep-accel", default="tcg", choices=["tcg", "kvm"],
                    help="QEMU accelerator for the guests (default tcg)")


def selected_kernels(config: pytest.Config) -> list[str]:
    """The kernels named on the command line, or the catalog's default."""
    value = config.getoption(KERNEL_OPTION)
    return kernel_names(value) if value else [load_catalog()[0]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "qstep_kernel" in metafunc.fixturenames:
        kernels = selected_kernels(metafunc.config)
        metafunc.parametrize("qstep_kernel", kernels, ids=[f"kernel={k}" for k in kernels],
                             scope="session")


class GuestPool:
    """Booted guests by kernel, started on first use, all shut down at the end."""

    def __init__(self, accel: str) -> None:
        self.accel = accel
        self._guests: dict[str, Session] = {}
        self._stack = ExitStack()

    def get(self, kernel: str) -> Session:
        """The guest running ``kernel``; booted now if it is not running yet."""
        if kernel not in self._guests:
            self._guests[kernel] = self._stack.enter_context(
                Session(kernel=kernel, accel=self.accel))
        return self._guests[kernel]

    def close(self) -> None:
        self._stack.close()
        self._guests.clear()


@pytest.fixture(scope="session")
def qstep_guests(pytestconfig: pytest.Config) -> Iterator[GuestPool]:
    """Every guest of this pytest session (or xdist worker), shared by all tests."""
    pool = GuestPool(pytestconfig.getoption("--qstep-accel"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def qstep_vm(qstep_guests: GuestPool, qstep_kernel: str) -> Session:
    """A booted guest with ``qstep_kernel``; the test runs once per selected kernel."""
    return qstep_guests.get(qstep_kernel)
