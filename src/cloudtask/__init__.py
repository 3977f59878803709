"""cloudtask: run a batch of shell commands in parallel on many workers.

From Python: `cloudtask.run(command, jobs, **options)`, `cloudtask.resume(id)`
and `cloudtask.retry(id)` return a `SessionResult` (see docs/api.md); `Task`
makes a command of its own with option defaults (a task template).
"""

from . import environment

# First of all: no process started from here on (by us or a library) inherits a secret.
environment.hide_secrets()

from .api import resume, retry, run  # noqa: E402
from .errors import CloudtaskError, InputError, SessionError, UsageError  # noqa: E402
from .session.result import SessionResult  # noqa: E402
from .task import Task  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = [
    "CloudtaskError",
    "InputError",
    "SessionError",
    "SessionResult",
    "Task",
    "UsageError",
    "__version__",
    "resume",
    "retry",
    "run",
]
