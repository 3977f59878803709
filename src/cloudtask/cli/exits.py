"""How each program ends: the one table from errors to exit statuses.

                              cloudtask   cloudtask-logalyzer   launch/destroy-workers
    all done                  0           0                     0
    some job, worker not ok   1           -                     2 (some could not be
                                                                   launched, destroyed)
    usage, input, session     2           2                     1 (fatal)
    a failure while running   1           2                     1 (fatal)
    (a full disk, stdout)
    interrupted (Ctrl-C)      1           130                   1

The exceptions say what went wrong (errors.py); only this table says what a
program's exit status is for it. docs/commands/*.md show the same table.
"""

from __future__ import annotations

from enum import StrEnum

from ..errors import (
    CloudtaskError,
    ExitStatus,
    OutputError,
    SessionWriteError,
    WorkerError,
)


class NotConfirmed(CloudtaskError):
    """The user did not confirm the run: nothing ran."""


class Program(StrEnum):
    CLOUDTASK = "cloudtask"
    LOGALYZER = "cloudtask-logalyzer"
    FLEET = "cloudtask-launch-workers, cloudtask-destroy-workers"


# Errors that come while the work goes on, not from what was asked.
RUNNING = (SessionWriteError, WorkerError, OutputError, NotConfirmed)

INTERRUPTED = {Program.CLOUDTASK: 1, Program.LOGALYZER: 130, Program.FLEET: 1}


def exit_status(program: Program, error: CloudtaskError) -> int:
    """The exit status `program` ends with on `error`."""
    if program is Program.FLEET:
        return ExitStatus.NOT_OK  # 2 means some worker could not be destroyed
    if program is Program.CLOUDTASK and isinstance(error, RUNNING):
        return ExitStatus.NOT_OK  # 2 means nothing ran for bad input
    return ExitStatus.USAGE
