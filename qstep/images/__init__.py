"""Test kernels and the guest image (initramfs with the agent)."""
