"""qstep: a QEMU-backed debugger for eBPF programs.

The Python API is the same one the command line uses::

    import qstep

    with qstep.Session(kernel="6.1") as session:          # boots a guest
        prog = session.load(qstep.BpfObject.open("prog.bpf.o"), "xdp_main")
        result = session.test_run(prog, packet)           # BPF_PROG_TEST_RUN
        with session.debugger(prog, qstep.RunRequest(packet)) as dbg:
            dbg.add_breakpoint("prog.bpf.c:42")
            event = dbg.run()                             # stops there

See ``qstep.session.Session`` for every action on the guest.
"""

from __future__ import annotations

import os
import signal
import sys
from importlib import import_module

if sys.orig_argv[1:3] == ["-m", "qstep.cli"] or os.path.basename(sys.argv[0]) == "qstep":
    # Started as the qstep command: hold Ctrl-C and SIGTERM from the first qstep code on
    # (qstep.cli's main() handles them); a signal in the imports is then no traceback.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from qstep.bpf.elf import BpfObject
    from qstep.debugger.engine import Debugger, Event, RunRequest
    from qstep.errors import QstepError
    from qstep.loaded import LoadedProgram
    from qstep.loadopts import LoadOptions
    from qstep.session import FromObject, InGuest, Session
    from qstep.userinput import read_packet

# Imported on first use, so ``import qstep.errors`` (and the CLI) stay light.
_EXPORTS = {
    "BpfObject": "qstep.bpf.elf", "Debugger": "qstep.debugger.engine",
    "Event": "qstep.debugger.engine", "RunRequest": "qstep.debugger.engine",
    "QstepError": "qstep.errors", "LoadedProgram": "qstep.loaded",
    "LoadOptions": "qstep.loadopts", "FromObject": "qstep.session",
    "InGuest": "qstep.session", "Session": "qstep.session", "read_packet": "qstep.userinput",
}

__all__ = ["BpfObject", "Debugger", "Event", "FromObject", "InGuest", "LoadOptions",
           "LoadedProgram", "QstepError", "RunRequest", "Session", "__version__",
           "read_packet"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qstep' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
