"""The exceptions of citus_ha: one for input that cannot be used, one for a policy that
stopped, one for a refused swap."""

from __future__ import annotations


class CitusHaError(Exception):
    """Base class of every error this package raises."""


class InvalidInput(CitusHaError, ValueError):
    """Input the policy cannot use: which field, and why. Nothing changed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PolicyTrap(CitusHaError):
    """A call into the policy did not return: it trapped, ran out of its time budget or of
    memory. The instance it ran in is gone; a `Handler` has already been restored from its last
    snapshot in a fresh one."""

    def __init__(self, message: str, build: str = "") -> None:
        super().__init__(f"policy trapped: {message}" + (f" ({build})" if build else ""))
        self.message = message
        self.build = build


class PolicyLoadError(CitusHaError):
    """A file that is not a policy component this package can run."""


class SwapRefused(CitusHaError):
    """A candidate build was refused; the running one keeps running."""


def os_error_text(e: OSError) -> str:
    """An OS error worded as the Rust host words it ("No such file or directory (os error
    2)"), so that a message every host prints (a refused swap's note) reads the same."""
    if e.errno is not None and e.strerror:
        return f"{e.strerror} (os error {e.errno})"
    return str(e)
