"""``qstep debug --record``: record the run, then debug it forward and backward."""

from __future__ import annotations

import argparse

from qstep.commands.common import make_session
from qstep.commands.recorded_trace import record
from qstep.debugger.replay_commands import ReplayCommands
from qstep.recorder.plugin import require_recorder
from qstep.recorder.replay import Replay


def recorded_commands(args: argparse.Namespace) -> ReplayCommands:
    """Boot, record one run of the program, shut the guest down; commands over the run."""
    require_recorder()
    with make_session(args) as session:
        rec = record(args, session)[1]
    return ReplayCommands(Replay(rec))
