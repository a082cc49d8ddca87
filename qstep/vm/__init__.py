"""qstep.vm package."""
