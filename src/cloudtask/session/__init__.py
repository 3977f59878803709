"""A session's life, between the commands (and the Python API) and the engine.

`directory` is the session's place on disk. `plan` turns what was asked (a
start, a resume or a retry) into a checked `Plan`; `drive` runs it on one
event loop and returns a frozen `SessionResult`; `cleanup` holds the rules of
who cleans up what. Only the directory is imported here: the rest is imported
by name, so the engine can use the directory without importing the layer
above it.
"""

from .directory import SessionDir

__all__ = ["SessionDir"]
