"""qstep.bpf package."""
