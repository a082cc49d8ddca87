"""qstep.agent package."""
