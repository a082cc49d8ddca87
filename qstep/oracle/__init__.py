"""Reference BPF interpreter (RFC 9669, ISA v4) used as an independent test oracle."""

from qstep.oracle.interp import Effect, MemRead, MemWrite, OracleError, step
from qstep.oracle.run import FlatMemory, run_program

__all__ = ["Effect", "FlatMemory", "MemRead", "MemWrite", "OracleError", "run_program", "step"]
