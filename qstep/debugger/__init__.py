"""Interactive debugging of JIT-compiled BPF programs through QEMU's gdbstub."""
