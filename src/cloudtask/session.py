"""The session directory: SESSIONS/ID/ with the session log and worker logs.

Ids are allocated by creating the directory: mkdir either makes it or fails,
so two cloudtask processes started at once never share an id.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .errors import SessionError
from .paths import os_reason

# Session locks this process holds: kept open (and so held) until it exits.
_held_locks: list[int] = []

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


@dataclass(frozen=True)
class SessionDir:
    id: int
    path: Path

    @property
    def log_path(self) -> Path:
        return self.path / "log"

    @property
    def known_hosts_path(self) -> Path:
        """Host keys trusted on first use, pinned for the session (and its resume)."""
        return self.path / "known_hosts"

    @property
    def workers_path(self) -> Path:
        return self.path / "workers"

    @classmethod
    def create(cls, sessions: Path) -> SessionDir:
        try:
            sessions.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            session_id = max(existing_ids(sessions), default=0) + 1
            while True:
                path = sessions / str(session_id)
                try:
                    path.mkdir(mode=PRIVATE_DIR)
                    break
                except FileExistsError:
                    session_id += 1
            (path / "workers").mkdir(mode=PRIVATE_DIR)
        except OSError as exc:
            raise SessionError(
                f"--sessions: cannot create a session in {sessions}: {exc.strerror or exc}"
            ) from None
        return cls(session_id, path)

    @classmethod
    def find(cls, sessions: Path, session_id: int, option: str) -> SessionDir:
        path = sessions / str(session_id)
        try:
            found = (path / "store.sqlite").is_file()
        except OSError:  # an id too long to be a file name, a directory not readable
            found = False
        if not found:
            raise SessionError(f"{option}: no session {session_id} in {sessions}")
        return cls(session_id, path)

    def lock(self) -> None:
        """Hold the session for this process; another one gets a one-line error.

        The lock is an flock on SESSIONS/ID/lock, released when the process ends
        however it ends, so a killed controller never leaves a stale lock.
        """
        path = self.path / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except OSError as exc:
            raise SessionError(f"session {self.id}: cannot lock {os_reason(exc, path)}") from None
        # A reader (cloudtask-logalyzer) probes the lock for an instant: try a
        # few times before saying that another process holds it.
        for pause in (0.02, 0.05, 0.1, None):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if pause is not None:
                    time.sleep(pause)
                    continue
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise SessionError(
                    f"session {self.id} is being run by another cloudtask (process {holder})"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held_locks.append(fd)

    def unlock(self) -> None:
        """Let go of the session (the watchdog holds it only while it sweeps)."""
        path = (self.path / "lock").resolve()
        for fd in list(_held_locks):
            if Path(f"/proc/self/fd/{fd}").resolve() == path:
                _held_locks.remove(fd)
                os.close(fd)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def open_log(self, path: Path) -> TextIO:
        """A log file only the user can read, line-buffered so tail -f follows it."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        except OSError as exc:
            raise SessionError(f"cannot write {path}: {exc.strerror or exc}") from None
        return open(fd, "a", encoding="utf-8", errors="replace", buffering=1)

    def worker_log(self, name: str) -> TextIO:
        return self.open_log(self.workers_path / name)


def existing_ids(sessions: Path) -> list[int]:
    return [int(entry.name) for entry in sessions.iterdir() if entry.name.isdigit()]
