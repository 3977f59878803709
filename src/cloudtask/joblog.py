"""--joblog: one line per attempt in GNU parallel's --joblog format.

Tab-separated, with parallel's header line, so tools that read parallel's
joblogs read ours: Seq (the job id), Host, Starttime (epoch seconds),
JobRuntime (seconds), Send and Receive (bytes; we count neither: 0), Exitval,
Signal and Command.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TextIO

from .errors import UsageError
from .paths import os_reason

HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"


def joblog_line(
    job: int,
    host: str,
    started: float,
    runtime: float,
    exit_status: int | None,
    signal: int | None,
    command: str,
) -> str:
    flat = command.replace("\n", " ").replace("\t", " ")
    return (
        f"{job}\t{host}\t{started:.3f}\t{runtime:.3f}\t0\t0\t"
        f"{exit_status if exit_status is not None else -1}\t{signal or 0}\t{flat}"
    )


class Joblog:
    """The --joblog file, opened (and its header written) before anything runs.

    A write that fails later (a full disk) does not stop the run: the store has
    every attempt. The joblog stops there, and `close` says why."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None
        self.created = not os.path.lexists(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.file: TextIO = open(fd, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            if self.file.tell() == 0:
                self.file.write(HEADER + "\n")
        except OSError as exc:
            raise UsageError(f"--joblog: cannot write {os_reason(exc, path)}") from None

    def write(self, line: str) -> None:
        if self.error is not None:
            return
        try:
            self.file.write(line + "\n")
        except OSError as exc:
            self.error = os_reason(exc, self.path)

    def discard(self) -> None:
        """Nothing ran: close it, and remove it if it was made for this run."""
        self.close()
        if self.created:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def close(self) -> str | None:
        """Close the file; the reason lines are missing from it, if they are."""
        try:
            self.file.close()
        except OSError as exc:
            self.error = self.error or os_reason(exc, self.path)
        return self.error
