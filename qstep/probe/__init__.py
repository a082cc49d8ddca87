"""qstep.probe package."""
