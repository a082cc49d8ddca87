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


class HostError(QstepError):
    """A host tool or resource is missing; the message says what to install."""


class GuestError(QstepError):
    """The guest panicked or hung; `console_tail` holds the last console lines."""

    def __init__(self, message: str, console_tail: str = "") -> None:
        super().__init__(message)
        self.console_tail = console_tail
