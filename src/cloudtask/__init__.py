"""cloudtask: run a batch of shell commands in parallel on many workers.

From Python: `cloudtask.run(command, jobs, **options)`, `cloudtask.resume(id)`
and `cloudtask.retry(id)` return a `SessionResult` (see docs/api.md); `Task`
makes a command of its own with option defaults (a task template).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import environment

# First of all: no process started from here on (by us or a library) inherits a secret.
environment.hide_secrets()

from .errors import CloudtaskError, InputError, SessionError, UsageError  # noqa: E402
from .task import Task  # noqa: E402
from .version import __version__  # noqa: E402

if TYPE_CHECKING:
    from .api import resume, retry, run
    from .session.result import SessionResult

# Imported when first used: the API brings in the whole engine, which the
# package's own processes (`python -m cloudtask.watchdog`) must not load twice.
_LAZY = {"run": "api", "resume": "api", "retry": "api", "SessionResult": "session.result"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
