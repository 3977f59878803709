"""The session directory: SESSIONS/ID/ with the session log and worker logs.

Ids are allocated by creating the directory: mkdir either makes it or fails,
so two cloudtask processes started at once never share an id.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..errors import SessionError
from ..paths import PRIVATE_FILE, cannot_write, os_reason

# Session locks this process holds: kept open (and so held) until it exits.
_held_locks: list[int] = []

PRIVATE_DIR = 0o700


@contextlib.contextmanager
def locks_released() -> Iterator[None]:
    """Session locks taken within are let go at its end: a program that runs
    several sessions through the API would otherwise hold each until it exits
    (as the command does, which ends when its session does)."""
    before = len(_held_locks)
    try:
        yield
    finally:
        while len(_held_locks) > before:
            os.close(_held_locks.pop())


class WriteTrouble:
    """The first write under the session directory that failed (a full disk,
    an I/O error), and who is told of it: the run stops starting jobs then."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._listeners: list[Callable[[str], None]] = []

    def listen(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def report(self, reason: str) -> None:
        if self.reason is not None:
            return  # the first failure is the one to name; the rest follow from it
        self.reason = reason
        for listener in list(self._listeners):
            listener(reason)


class LogFile(io.TextIOWrapper):
    """A line-buffered log whose writes never raise.

    A failed write (the disk is full) is reported once to `trouble`; the log
    then stays silent, so a full disk costs log lines, never the run's state."""

    def __init__(self, fd: int, path: Path, directory: Path, trouble: WriteTrouble) -> None:
        super().__init__(
            io.BufferedWriter(io.FileIO(fd, "w")),
            encoding="utf-8",
            errors="replace",
            line_buffering=True,
        )
        self._path = path
        self._directory = directory
        self._trouble = trouble
        self.failed = False

    def write(self, text: str) -> int:
        if not self.failed:
            try:
                super().write(text)
            except OSError as exc:
                self._fail(exc)
        return len(text)

    def flush(self) -> None:
        if not self.failed:
            try:
                super().flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        # What was still buffered is lost with the full disk; the fd is closed all the same.
        with contextlib.suppress(OSError):
            super().close()

    def _fail(self, exc: OSError) -> None:
        self.failed = True
        name = str(self._path.relative_to(self._directory))
        self._trouble.report(cannot_write(self._directory, name, exc.strerror or str(exc)))


@dataclass(frozen=True)
class SessionDir:
    id: int
    path: Path
    # Writes under the directory that failed (a full disk): see WriteTrouble.
    trouble: WriteTrouble = field(default_factory=WriteTrouble, compare=False, repr=False)

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
        """A log file only the user can read, line-buffered so tail -f follows it.

        A write that fails later (a full disk) is reported to `trouble`."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        except OSError as exc:
            name = str(path.relative_to(self.path))
            raise SessionError(cannot_write(self.path, name, exc.strerror or str(exc))) from None
        return LogFile(fd, path, self.path, self.trouble)

    def worker_log(self, name: str) -> TextIO:
        """The worker's log; on a full disk, a log that writes nothing (reported)."""
        path = self.workers_path / name
        try:
            return self.open_log(path)
        except SessionError as exc:
            self.trouble.report(str(exc))
            log = LogFile(os.open(os.devnull, os.O_WRONLY), path, self.path, self.trouble)
            log.failed = True
            return log


def existing_ids(sessions: Path) -> list[int]:
    return [int(entry.name) for entry in sessions.iterdir() if entry.name.isdigit()]
