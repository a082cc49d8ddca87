"""Implementations of the ``qstep`` subcommands."""
