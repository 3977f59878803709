"""The session directory: SESSIONS/ID/ with the session log and worker logs.

Ids are allocated by creating the directory: mkdir either makes it or fails,
so two cloudtask processes started at once never share an id.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .errors import SessionError

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
