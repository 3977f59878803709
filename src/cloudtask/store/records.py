"""The rows of the store as frozen dataclasses (times are UNIX seconds)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..usage import Usage

# Outcomes of an attempt, as stored (None while it runs): ok, failed and
# timeout use up a try (jobs.attempts counts them); stopped (an abort, a lost
# worker) and lost (closed on resume: its controller died) do not.
OUTCOMES = frozenset({"ok", "failed", "timeout", "stopped", "lost"})
COUNTED = frozenset({"ok", "failed", "timeout"})


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, as stored: outcome is ok, failed, timeout, stopped or lost;
    usage: what it used (None: not measured)."""

    outcome: str
    exit_status: int | None = None
    signal: int | None = None
    tail: str = ""
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job: `attempts` counts its tries (ok, failed and timeout attempts)."""

    id: int
    line: int
    command: str
    state: str
    attempts: int


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """An attempt at a job; outcome None: not ended (running, or its controller died)."""

    id: int
    job: int
    worker: str
    started: float
    ended: float | None  # None while it runs, and for one closed as lost on resume
    outcome: str | None
    exit_status: int | None
    signal: int | None
    tail: str | None
    # What it used (schema 3; None: not measured, still running, or an older store).
    user_cpu: float | None = None
    system_cpu: float | None = None
    max_rss: int | None = None
    output_bytes: int | None = None

    @property
    def usage(self) -> Usage | None:
        """What it used; None when nothing was recorded."""
        values = (self.user_cpu, self.system_cpu, self.max_rss, self.output_bytes)
        if all(value is None for value in values):
            return None
        return Usage(self.user_cpu, self.system_cpu, self.max_rss, self.output_bytes or 0)


# The columns schema 3 added to attempts: a reader of an older store reads them as NULL.
USAGE_COLUMNS = ("user_cpu", "system_cpu", "max_rss", "output_bytes")


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """A launched instance as the store knows it (times are UNIX seconds)."""

    token: str
    provider: str
    name: str
    size: str | None
    hourly_price: float | None
    instance_id: str | None  # None: the launch call never returned an id
    address: str | None
    intended: float
    launched: float | None
    running: float | None
    destroyed: float | None
    note: str | None


def columns(record: Any) -> str:
    """The record's columns, in its fields' order, for a SELECT."""
    return ", ".join(field.name for field in fields(record))


JOB_COLUMNS = columns(JobRecord)
ATTEMPT_COLUMNS = columns(AttemptRecord)
INSTANCE_COLUMNS = columns(InstanceRecord)
