"""A session store read without disturbing it: for reports, tests and benchmarks.

`StoreReader.open` opens the file read-only (a controller may be writing it
at that very moment: WAL mode lets both go on) and never takes the session
lock. It neither migrates nor checks the store: an older schema is read as
it is (a version 1 store has no instances, attempts of a version 2 store
read as having used nothing measured, every worker of either ran one job at
a time). Reads inside `snapshot()` see
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
from .records import (
    ATTEMPT_COLUMNS,
    JOB_COLUMNS,
    USAGE_COLUMNS,
    AttemptRecord,
    InstanceRecord,
    JobRecord,
)

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


class UsageTotals(NamedTuple):
    """What the attempts used, summed over them: `measured` attempts recorded
    any of it, `cpu_measured` their CPU; `max_rss` is the largest peak
    (None: no attempt's was measured)."""

    measured: int
    cpu_measured: int
    user_cpu: float
    system_cpu: float
    max_rss: int | None
    output_bytes: int


class JobUse(NamedTuple):
    """A job among those that used the most: what it used (CPU seconds, over
    its attempts; or its largest peak memory, in bytes) and its command."""

    job: int
    used: float
    command: str


# How a job's use of each measure is summed over its attempts, and which attempts count.
_MEASURES = {
    "cpu": ("sum(user_cpu + system_cpu)", "user_cpu IS NOT NULL AND system_cpu IS NOT NULL"),
    "memory": ("max(max_rss)", "max_rss IS NOT NULL"),
}


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

    def has_usage(self) -> bool:
        """Whether attempts record what they used (schema 3 on)."""
        found = {str(row[1]) for row in self.db.execute("PRAGMA table_info(attempts)")}
        return set(USAGE_COLUMNS) <= found

    def _attempt_columns(self) -> str:
        """ATTEMPT_COLUMNS, with NULL for the usage columns a store older than schema 3 lacks."""
        if self.has_usage():
            return ATTEMPT_COLUMNS
        return ", ".join(
            f"NULL AS {name}" if name in USAGE_COLUMNS else name
            for name in ATTEMPT_COLUMNS.split(", ")
        )

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
            f"SELECT {self._attempt_columns()} FROM attempts ORDER BY job, id"
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
        columns = self._attempt_columns()
        rows = self.db.execute(f"SELECT {columns} FROM attempts{where} ORDER BY id", values)
        return [AttemptRecord(*row) for row in rows]

    def attempts_of(self, jobs: Iterable[int]) -> dict[int, list[AttemptRecord]]:
        """The attempts of these jobs, by job, each job's in id order."""
        ids = list(jobs)
        found: dict[int, list[AttemptRecord]] = {}
        columns = self._attempt_columns()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for row in self.db.execute(
                f"SELECT {columns} FROM attempts WHERE job IN ({marks}) ORDER BY job, id",
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

    # -- what the attempts used (schema 3) ---------------------------------------------

    def usage_totals(self) -> UsageTotals:
        """What every attempt used, summed in SQL (nothing in a store older than schema 3)."""
        if not self.has_usage():
            return UsageTotals(0, 0, 0.0, 0.0, None, 0)
        row = self.db.execute(
            "SELECT coalesce(sum(user_cpu IS NOT NULL OR system_cpu IS NOT NULL "
            "OR max_rss IS NOT NULL OR output_bytes IS NOT NULL), 0), "
            "coalesce(sum(user_cpu IS NOT NULL AND system_cpu IS NOT NULL), 0), "
            "total(user_cpu), total(system_cpu), max(max_rss), coalesce(sum(output_bytes), 0) "
            "FROM attempts"
        ).fetchone()
        return UsageTotals(*row)

    def most_cpu(self, limit: int) -> list[JobUse]:
        """The `limit` jobs that used the most CPU (user and system, over their attempts)."""
        return self._most("cpu", limit)

    def most_memory(self, limit: int) -> list[JobUse]:
        """The `limit` jobs with the largest peak memory (of any of their attempts)."""
        return self._most("memory", limit)

    def _most(self, measure: str, limit: int) -> list[JobUse]:
        if not self.has_usage():
            return []
        used, counted = _MEASURES[measure]
        rows = self.db.execute(
            "SELECT top.job, top.used, coalesce(jobs.command, '') FROM ("
            f"SELECT job, {used} AS used FROM attempts WHERE {counted} "
            "GROUP BY job ORDER BY used DESC, job LIMIT ?"
            ") AS top LEFT JOIN jobs ON jobs.id = top.job ORDER BY top.used DESC, top.job",
            (limit,),
        )
        return [JobUse(int(job), used_, str(command)) for job, used_, command in rows]

    # -- workers -----------------------------------------------------------------------

    def worker_slots(self) -> dict[str, int]:
        """Jobs at once of each worker recorded with --slots (none before schema 3);
        a worker absent ran one. (The writer's `worker_slots` records them.)"""
        if "workers" not in self.tables():
            return {}
        rows = self.db.execute("SELECT name, slots FROM workers ORDER BY name")
        return {str(name): int(slots) for name, slots in rows}

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
