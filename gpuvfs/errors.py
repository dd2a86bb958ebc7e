"""Exceptions raised by gpuvfs. Every message says what went wrong and what to do."""
from __future__ import annotations


class GvfsError(Exception):
    """Base class of every error gpuvfs raises."""


class BackendUnavailable(GvfsError):
    """The requested backend cannot run here (no CuPy, no GPU, no compiler)."""


class CompileError(GvfsError):
    """Device source failed to compile; `log` holds the compiler's output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message + (f"\n{log}" if log else ""))
        self.log = log


class LaunchError(GvfsError):
    """A kernel launch was refused or failed while running."""
