"""The kinds of failure, which decide what happens next: `rn50` maps them to its exit codes (pipeline.cli)
and the Airflow tasks to a final or a retried failure (tasks.common), each in one place.

Raise the kind that says whether trying again could help, with a one-line message naming the file, the
record or the parameter. Anything else that escapes is a crash: a retry may get past it.
"""

from __future__ import annotations

from pipeline.contracts import exit_codes


class Refused(Exception):
    """Bad arguments or unusable input, refused before any work started: a retry is refused the same way."""

    exit_code = exit_codes.USAGE


class Failed(Exception):
    """The work ran and failed on its input (a gate, a record it cannot read): a retry fails the same way."""

    exit_code = exit_codes.FAILED


class Retryable(RuntimeError):
    """Something outside the input failed (the object store, a lost rank): a retry may pass.

    A RuntimeError, as the failures it names were before it had a name: code that catches those still does.
    """

    exit_code = exit_codes.RETRY


def is_final(exc: BaseException) -> bool:
    """Whether a retry could not help."""
    return isinstance(exc, Refused | Failed)
