"""Reads the writer and the reader share: the same query, written once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from ..errors import SessionError
from ..scheduler import JobState
from . import meta
from .records import INSTANCE_COLUMNS, InstanceRecord

T = TypeVar("T")

PENDING_CHUNK = 1_000


class Queries:
    """Queries over one store connection (`db`) of the file at `path`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    def close(self) -> None:
        self.db.close()

    # -- session metadata (see meta.py) ---------------------------------------

    def meta_text(self, key: meta.Key[T]) -> str | None:
        """The value as stored, unread (for a message that shows it)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key.name,)).fetchone()
        return None if row is None else str(row[0])

    def meta(self, key: meta.Key[T]) -> T | None:
        """The value of a meta key (an absent list or mapping reads as empty);
        a value cloudtask does not write is a SessionError naming it."""
        raw = self.meta_text(key)
        try:
            return key.read(raw)
        except ValueError:
            what = "is not what cloudtask wrote" if key.json else f"is {raw!r}"
            raise SessionError(f"{self.path}: damaged: meta {key.name} {what}") from None

    # -- jobs ----------------------------------------------------------------

    def command(self, job_id: int) -> str:
        row = self.db.execute("SELECT command FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return str(row[0])

    def job_ids(self, state: JobState = JobState.PENDING) -> list[int]:
        rows = self.db.execute("SELECT id FROM jobs WHERE state = ? ORDER BY id", (state.value,))
        return [int(row[0]) for row in rows]

    def pending_ids(self, chunk: int = PENDING_CHUNK) -> Iterator[int]:
        """The pending jobs in input order, read a chunk at a time as they are needed.

        Each chunk starts after the last id read, so jobs whose state changes
        meanwhile (started, or put back by the scheduler) are not read twice.
        """
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT id FROM jobs WHERE state = 'pending' AND id > ? ORDER BY id LIMIT ?",
                (last, chunk),
            ).fetchall()
            if not rows:
                return
            for (job_id,) in rows:
                yield int(job_id)
            last = int(rows[-1][0])

    def state_counts(self) -> dict[str, int]:
        """Jobs by state, as stored (a state cloudtask does not write included)."""
        rows = self.db.execute("SELECT state, count(*) FROM jobs GROUP BY state")
        return {str(state): int(count) for state, count in rows}

    def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, count in self.state_counts().items():
            counts[JobState(state)] = count
        return counts

    # -- attempts --------------------------------------------------------------

    def last_attempt_end(self) -> float | None:
        row = self.db.execute("SELECT max(ended) FROM attempts").fetchone()
        return None if row[0] is None else float(row[0])

    def attempt_number(self, job_id: int, attempt: int) -> int:
        """Which attempt at the job this one is: 1 for the first (lost ones count)."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM attempts WHERE job = ? AND id <= ?", (job_id, attempt)
        ).fetchone()
        return int(row[0])

    # -- launched instances ------------------------------------------------------

    def instances(self, *, open_only: bool = False) -> list[InstanceRecord]:
        """Launched instances in launch order; open_only: those not destroyed yet."""
        where = " WHERE destroyed IS NULL" if open_only else ""
        rows = self.db.execute(
            f"SELECT {INSTANCE_COLUMNS} FROM instances{where} ORDER BY intended, rowid"
        )
        return [InstanceRecord(*row) for row in rows]
