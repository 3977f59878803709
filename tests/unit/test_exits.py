"""The one table from errors to exit statuses, for each program."""

from __future__ import annotations

import pytest

from cloudtask.cli.exits import NotConfirmed, Program, exit_status
from cloudtask.errors import (
    CloudtaskError,
    InputError,
    OutputError,
    SessionError,
    SessionWriteError,
    UsageError,
    WorkerError,
)
from cloudtask.providers.cloud import ProviderError
from cloudtask.report.digest import DigestError

ERRORS = [
    UsageError("--split: bad"),
    InputError(3, "unbalanced quote"),
    SessionError("session 9 not found"),
    SessionWriteError("disk full"),
    WorkerError("gone"),
    OutputError("cannot write standard output"),
    NotConfirmed("not confirmed: nothing ran"),
    ProviderError("the cloud refused the key", transient=False),
    DigestError("not a session store"),
]

EXPECTED = {
    # cloudtask: 2 only when nothing ran for what was asked; 1 for trouble while running.
    Program.CLOUDTASK: [2, 2, 2, 1, 1, 1, 1, 2, 2],
    # the logalyzer: every error is 2.
    Program.LOGALYZER: [2] * len(ERRORS),
    # the fleet commands: every error is fatal, 1 (2 says some worker was not destroyed).
    Program.FLEET: [1] * len(ERRORS),
}


@pytest.mark.parametrize("program", list(Program))
def test_each_program_has_its_exit_status_for_each_error(program: Program) -> None:
    assert [exit_status(program, error) for error in ERRORS] == EXPECTED[program]


def test_every_error_class_of_the_tree_is_in_the_table() -> None:
    def subclasses(cls: type) -> set[type]:
        return {cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))}

    covered = tuple(type(error) for error in ERRORS)
    # Every other error is a kind of one above, and ends each program as it does.
    assert [
        cls.__qualname__
        for cls in subclasses(CloudtaskError) - {CloudtaskError}
        if not issubclass(cls, covered)
    ] == []
