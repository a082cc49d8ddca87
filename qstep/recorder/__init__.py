"""The recorder: a QEMU TCG plugin that logs a BPF program's execution, and its reader."""
