"""The pytest plugin as a user meets it: a test file using `qstep_vm`, on two kernels."""

from __future__ import annotations

import pytest

from qstep.paths import REPO_ROOT

pytestmark = pytest.mark.vm
pytest_plugins = ["pytester"]

USER_TEST = f'''
import pytest
from qstep.bpf.compile import compile_c
from qstep.bpf.elf import BpfObject

SOURCE = {str(REPO_ROOT / "tests" / "progs" / "cpu_id.bpf.c")!r}

def test_xdp_pass_on_every_kernel(qstep_vm, qstep_kernel):
    assert qstep_vm.release.startswith(qstep_kernel + ".")
    prog = qstep_vm.load(BpfObject.open(compile_c(__import__("pathlib").Path(SOURCE))),
                         "cpu_id_main")
    try:
        assert qstep_vm.test_run(prog, bytes(32)).retval == 2  # XDP_PASS
    finally:
        qstep_vm.unload(prog)

def test_same_guest_is_reused(qstep_vm, qstep_guests, qstep_kernel):
    assert qstep_guests.get(qstep_kernel) is qstep_vm
'''


def test_a_user_test_runs_once_per_kernel(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-v", "--qstep-kernel", "6.1,6.12",)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_xdp_pass_on_every_kernel?kernel=6.1? PASSED*",
                                 "*test_xdp_pass_on_every_kernel?kernel=6.12? PASSED*"])


def test_xdist_workers_each_get_their_own_guest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-n", "2", "--qstep-kernel", "6.1,6.12")
    result.assert_outcomes(passed=4)
