"""cloudtask: run a batch of shell commands in parallel on many workers."""

from . import environment

# First of all: no process started from here on (by us or a library) inherits a secret.
environment.hide_secrets()

from .task import Task  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Task", "__version__"]
