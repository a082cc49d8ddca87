"""qstep: a QEMU-backed debugger for eBPF programs."""

__version__ = "0.1.0"
