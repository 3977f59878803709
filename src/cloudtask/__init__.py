"""cloudtask: run a batch of shell commands in parallel on many workers."""

from .task import Task

__version__ = "0.1.0"
__all__ = ["Task", "__version__"]
