"""A session store read without disturbing it: for reports, tests and benchmarks.

`StoreReader.open` opens the file read-only (a controller may be writing it
at that very moment: WAL mode lets both go on) and never takes the session
lock. It neither migrates nor checks the store: an older schema is read as
it is (a version 1 store has no instances). Reads inside `snapshot()` see
one instant of the store; outside it, each query sees the store as it is.

Sessions can hold a million jobs: the queries aggregate in SQL (counts by
state, one row per worker) or stream (`jobs_with_attempts`), never one
Python object per job held at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, TypeVar

from ..scheduler import JobState
from . import meta, schema
from .queries import Queries
from .records import ATTEMPT_COLUMNS, JOB_COLUMNS, AttemptRecord, InstanceRecord, JobRecord

T = TypeVar("T")

# What a query on a file SQLite cannot read (or that is no store) raises.
ReadError = sqlite3.Error

_IN_CHUNK = 500  # ids per "IN (...)" query, well under SQLite's variable limit


class AttemptTimes(NamedTuple):
    """An attempt's place on the timeline (outcome None: not ended)."""

    job: int
    worker: str
    started: float
    ended: float | None
    outcome: str | None


class AttemptBounds(NamedTuple):
    """The first start, the last start and the last end of any attempt (None: no attempt)."""

    first_started: float | None
    last_started: float | None
    last_ended: float | None


class WorkerTotals(NamedTuple):
    """One worker's attempts, aggregated: by outcome (`open`: no outcome yet),
    `unknown_end`: with no end time, `work`: seconds of the attempts that ended."""

    worker: str
    attempts: int
    ok: int
    failed: int
    timeout: int
    lost: int
    stopped: int
    open: int
    unknown_end: int
    work: float
    first_started: float
    last_ended: float | None
    last_started: float


class StoreReader(Queries):
    """Typed, read-only queries over a session's store."""

    @classmethod
    def open(cls, session_dir: Path) -> StoreReader:
        """The store of `session_dir`, read-only; ReadError when SQLite cannot open it."""
        path = Path(session_dir) / schema.STORE_NAME
        return cls(schema.connect_read_only(path), path)

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[StoreReader]:
        """One read transaction: every read inside it sees the same instant."""
        self.db.execute("BEGIN")
        try:
            yield self
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")

    # -- the store itself ----------------------------------------------------------

    def tables(self) -> set[str]:
        return schema.tables(self.db)

    def has_instances(self) -> bool:
        """Whether the store records launched instances (schema 2 on)."""
        return "instances" in self.tables()

    def meta_or_none(self, key: meta.Key[T]) -> T | None:
        """A meta value; None when absent or not what cloudtask writes (a report
        shows what it can of a damaged store)."""
        try:
            return key.read(self.meta_text(key))
        except ValueError:
            return None

    def session_keys(self) -> list[str]:
        """Public key lines of the session's runs that may be left on workers."""
        found: list[str] | None = self.meta(meta.SESSION_KEYS)
        return list(found or [])

    # -- jobs ------------------------------------------------------------------------

    def job_states(self) -> dict[int, str]:
        """Every job's state, by id."""
        rows = self.db.execute("SELECT id, state FROM jobs ORDER BY id")
        return {int(job): str(state) for job, state in rows}

    def jobs(
        self, state: str | JobState | None = None, limit: int | None = None
    ) -> list[JobRecord]:
        """Jobs in id order: all of them, or those in `state` (the first `limit`)."""
        where, values = _in_state(state)
        rows = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY id LIMIT ?",
            (*values, -1 if limit is None else limit),
        )
        return [JobRecord(*row) for row in rows]

    def jobs_with_attempts(self) -> Iterator[tuple[JobRecord, list[AttemptRecord]]]:
        """Every job with its attempts, in id order, streamed.

        Two cursors walk jobs and attempts side by side (both in id order), so
        a million jobs never sit in memory at once. Attempts of a job that does
        not exist are skipped (see `orphan_attempts`)."""
        jobs = self.db.execute(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY id")
        # A second cursor on the same connection; attempts_job orders it by job, then id.
        attempts = self.db.cursor().execute(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts ORDER BY job, id"
        )
        pending = attempts.fetchone()
        for row in jobs:
            job = JobRecord(*row)
            mine: list[AttemptRecord] = []
            while pending is not None and pending[1] <= job.id:
                if pending[1] == job.id:
                    mine.append(AttemptRecord(*pending))
                pending = attempts.fetchone()
            yield job, mine

    # -- attempts --------------------------------------------------------------------

    def attempts(self, job: int | None = None) -> list[AttemptRecord]:
        """Attempts in the order they started (id order): every one, or the job's."""
        where, values = ("", ()) if job is None else (" WHERE job = ?", (job,))
        rows = self.db.execute(f"SELECT {ATTEMPT_COLUMNS} FROM attempts{where} ORDER BY id", values)
        return [AttemptRecord(*row) for row in rows]

    def attempts_of(self, jobs: Iterable[int]) -> dict[int, list[AttemptRecord]]:
        """The attempts of these jobs, by job, each job's in id order."""
        ids = list(jobs)
        found: dict[int, list[AttemptRecord]] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for row in self.db.execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE job IN ({marks}) ORDER BY job, id",
                chunk,
            ):
                attempt = AttemptRecord(*row)
                found.setdefault(attempt.job, []).append(attempt)
        return found

    def orphan_attempts(self) -> list[int]:
        """Jobs named by attempts that are not in the jobs table (none in a sound store)."""
        rows = self.db.execute(
            "SELECT DISTINCT job FROM attempts WHERE job NOT IN (SELECT id FROM jobs) ORDER BY job"
        )
        return [int(job) for (job,) in rows]

    def attempt_bounds(self) -> AttemptBounds:
        row = self.db.execute("SELECT min(started), max(started), max(ended) FROM attempts")
        return AttemptBounds(*row.fetchone())

    def attempt_times(self) -> Iterator[AttemptTimes]:
        """Every attempt's times, by worker, then in the order they started."""
        rows = self.db.execute(
            "SELECT job, worker, started, ended, outcome FROM attempts ORDER BY worker, started, id"
        )
        for row in rows:
            yield AttemptTimes(*row)

    def worker_totals(self) -> list[WorkerTotals]:
        """One row per worker that made an attempt, aggregated in SQL (never one per attempt)."""
        rows = self.db.execute(
            "SELECT worker, count(*), "
            "coalesce(sum(outcome = 'ok'), 0), coalesce(sum(outcome = 'failed'), 0), "
            "coalesce(sum(outcome = 'timeout'), 0), coalesce(sum(outcome = 'lost'), 0), "
            "coalesce(sum(outcome = 'stopped'), 0), coalesce(sum(outcome IS NULL), 0), "
            "coalesce(sum(ended IS NULL), 0), total(max(ended - started, 0)), "
            "min(started), max(ended), max(started) "
            "FROM attempts GROUP BY worker"
        )
        return [WorkerTotals(*row) for row in rows]

    # -- launched instances ----------------------------------------------------------

    def instances(self, *, open_only: bool = False) -> list[InstanceRecord]:
        """Launched instances in launch order (none in a version 1 store)."""
        return super().instances(open_only=open_only) if self.has_instances() else []

    def open_instances(self) -> int:
        """How many launched instances are not recorded destroyed."""
        if not self.has_instances():
            return 0
        row = self.db.execute("SELECT count(*) FROM instances WHERE destroyed IS NULL").fetchone()
        return int(row[0])


def _in_state(state: str | JobState | None) -> tuple[str, tuple[str, ...]]:
    if state is None:
        return "", ()
    return " WHERE state = ?", (state.value if isinstance(state, JobState) else state,)
