"""--joblog: one line per attempt in GNU parallel's --joblog format.

Tab-separated, with parallel's header line, so tools that read parallel's
joblogs read ours: Seq (the job id), Host, Starttime (epoch seconds),
JobRuntime (seconds), Send and Receive (bytes; we count neither: 0), Exitval,
Signal and Command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from .errors import UsageError

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
    def __init__(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.file: TextIO = open(fd, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"--joblog: cannot write {path}: {exc.strerror or exc}") from None
        if self.file.tell() == 0:
            self.file.write(HEADER + "\n")

    def write(self, line: str) -> None:
        self.file.write(line + "\n")

    def close(self) -> None:
        self.file.close()
