"""User-facing errors: one clear message and a process exit code each."""

from __future__ import annotations


class QstepError(Exception):
    """Base of all errors the CLI prints without a traceback."""

    exit_code = 1


class UsageError(QstepError):
    """Bad command line or user-supplied text (e.g. a map value)."""

    exit_code = 2


class ObjectError(QstepError):
    """The BPF ELF object is missing, malformed or unsupported."""


class VerifierError(QstepError):
    """The kernel verifier rejected a program; `log` holds its (annotated) log."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


class LoadError(QstepError):
    """Loading a program failed outside the verifier (libbpf, kfuncs, modules, types)."""


class MachineError(QstepError):
    """A failure around the VM; ``console_tail`` holds the guest console's last lines
    when there is a console (shown with ``--debug`` and recorded by ``--log``)."""

    def __init__(self, message: str, console_tail: str = "") -> None:
        super().__init__(message)
        self.console_tail = console_tail


class HostError(MachineError):
    """Host infrastructure failed: a tool or resource is missing (the message says what
    to install), or QEMU did not start."""


class GuestError(MachineError):
    """The guest failed: it panicked, hung, did not boot, or its agent broke the protocol."""
