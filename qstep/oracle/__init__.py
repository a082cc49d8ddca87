"""The reference BPF interpreter (RFC 9669, ISA v4): an independent oracle.

It gives BPF semantics for checking what a kernel's JIT did (lockstep tests, verify-jit).
Production paths (probes, the debugger) never depend on it; BPF encoding lives in
`qstep.bpf.asm`.
"""

from qstep.oracle.interp import Effect, MemRead, MemWrite, OracleError, step
from qstep.oracle.run import FlatMemory, run_program

__all__ = ["Effect", "FlatMemory", "MemRead", "MemWrite", "OracleError", "run_program", "step"]
