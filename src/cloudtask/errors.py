"""The one exception tree of cloudtask.

    CloudtaskError            anything cloudtask reports as a one-line error
    ├── UsageError            bad option, bad template, bad command line
    ├── InputError            bad job input: names the line (record) and the reason
    ├── SessionError          the session directory cannot be made, found or held
    │   └── SessionWriteError a write under it failed mid-run: a full disk
    ├── WorkerError           a worker cannot run commands: the worker failed, not the job
    └── OutputError           standard output cannot take what is written (/dev/full)

Errors from the libraries underneath are translated into these once, where
they are caught. Each program catches CloudtaskError in one place and prints
its message, never a traceback; what exit status it ends with is one table
(cli/exits.py). The Python API raises them as they are.
"""

from __future__ import annotations

from enum import IntEnum

from .output import printable


class ExitStatus(IntEnum):
    """cloudtask's exit statuses (the other programs': cli/exits.py)."""

    OK = 0  # every job ok
    NOT_OK = 1  # some job is not ok, or the run was aborted
    USAGE = 2  # usage or input error: nothing ran


class CloudtaskError(Exception):
    """An error shown to the user as one line."""


class UsageError(CloudtaskError):
    """A bad option, option value, template or command line; `usage` is shown below it."""

    def __init__(self, message: str, usage: str | None = None) -> None:
        super().__init__(message)
        self.usage = usage


class InputError(CloudtaskError):
    """Bad job input, refused before anything runs. `unit` is what the input is
    made of: lines, or NUL-ended records (--null)."""

    def __init__(self, line: int, reason: str, unit: str = "line") -> None:
        super().__init__(f"input {unit} {line}: {reason}")
        self.line = line
        self.reason = reason


class SessionError(CloudtaskError):
    """The session directory cannot be created or written."""


class SessionWriteError(SessionError):
    """A write under the session directory failed (a full disk, an I/O error).

    What was committed before stays; the run stops starting jobs and the
    session is resumable once there is space again. Not a usage error."""


class WorkerError(CloudtaskError):
    """A worker cannot run commands any more: it is failed, not the job."""


class OutputError(CloudtaskError):
    """Standard output cannot be written (a full disk, /dev/full, an I/O error)."""


def error_text(prog: str, exc: CloudtaskError) -> str:
    """The error as the user sees it: one line, whatever a value in it held
    (control characters escaped), then the usage line if there is one."""
    usage = exc.usage if isinstance(exc, UsageError) and exc.usage else None
    message = printable(str(exc)).replace("\n", "\\x0a")
    return f"{prog}: {message}\n" + (f"{usage}\n" if usage else "")
