"""The session store's writer: the only code that writes state.

Every change is committed before it is shown or reported, so a controller
killed at any moment loses nothing but the jobs that were running. The file
lives in the session directory (`SESSIONS/ID/store.sqlite`), in WAL mode; its
schema (schema.py) carries a version and is migrated when opened.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import SessionError, SessionWriteError
from ..paths import cannot_write
from ..scheduler import JobState
from ..usage import Usage
from . import meta, schema
from .queries import Queries
from .records import COUNTED, AttemptEnd

T = TypeVar("T")

INGEST_BATCH = 10_000


class Store(Queries):
    """The session's store, open for writing (one per session, under its lock)."""

    @classmethod
    def create(cls, directory: Path) -> Store:
        path = directory / schema.STORE_NAME
        store = cls(schema.connect(path), path)
        schema.create(store.db)
        schema.migrate(store.db, 1)
        return store

    @classmethod
    def open(cls, directory: Path) -> Store:
        """The session's store, migrated; a damaged one is a SessionError naming what."""
        path = directory / schema.STORE_NAME
        if not path.is_file():
            raise SessionError(f"{directory}: no session store")
        store = cls(schema.connect(path), path)
        try:
            store._check(store._version())
        except sqlite3.Error as exc:
            raise SessionError(f"{path}: not a session store SQLite can read: {exc}") from None
        return store

    def _version(self) -> int:
        raw = self.meta_text(meta.SCHEMA_VERSION)
        try:
            version = meta.SCHEMA_VERSION.decode(raw or "")
        except ValueError:
            raise SessionError(f"{self.path}: damaged: no schema version (found {raw!r})") from None
        if not 1 <= version <= schema.SCHEMA_VERSION:
            raise SessionError(
                f"{self.path}: schema version {version} is not one this cloudtask knows "
                f"(1 to {schema.SCHEMA_VERSION}): made by a newer cloudtask?"
            )
        return version

    def _check(self, version: int) -> None:
        """Migrate, then refuse a store whose tables or states cloudtask did not write."""
        schema.migrate(self.db, version)
        missing = sorted(schema.TABLES - schema.tables(self.db))
        if missing:
            raise SessionError(f"{self.path}: damaged: no {', '.join(missing)} table")
        # Any other state sorts before, between or after the known ones: a few
        # seeks on the state index find it, where a scan would read every job.
        known = sorted(state.value for state in JobState)
        ranges = [
            ("state < ?", (known[0],)),
            *(("state > ? AND state < ?", pair) for pair in itertools.pairwise(known)),
            ("state > ?", (known[-1],)),
        ]
        for where, bounds in ranges:
            odd = self.db.execute(
                f"SELECT id, state FROM jobs WHERE {where} LIMIT 1", bounds
            ).fetchone()
            if odd is not None:
                raise SessionError(f"{self.path}: damaged: job {odd[0]} has state {odd[1]!r}")
        for key in meta.CHECKED_ON_OPEN:
            self.meta(key)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, committed at the end or rolled back whole.

        A full disk or an I/O error is a SessionWriteError naming the
        directory: what was committed before stays as it was."""
        try:
            with self.db:
                yield
        except sqlite3.OperationalError as exc:
            raise SessionWriteError(
                cannot_write(self.path.parent, self.path.name, str(exc))
            ) from None

    # -- session metadata (meta.py names each key and its type) ----------------

    def write(self, key: meta.Key[T], value: T) -> None:
        """Set a meta key, in a commit of its own."""
        with self._writing():
            self._put(key, value)

    def _put(self, key: meta.Key[T], value: T) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key.name, key.encode(value))
        )

    def _drop(self, key: meta.Key[T]) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", (key.name,))

    def _listed(self, key: meta.Key[list[str]]) -> list[str]:
        found: list[str] | None = self.meta(key)
        return list(found or [])

    # -- the session's runs: meta keys started (first run), state, ended, runs ---
    # state: running while a controller drives it (a dead controller leaves
    # it so: "interrupted" to a reader that finds the lock free), then how the
    # last run ended: finished (every job in a final state), incomplete (no
    # worker was left to run the rest), halted (--halt or --budget) or aborted
    # (Ctrl-C, SIGTERM). stop_reason: what halted it ("--halt=SPEC" or
    # "--budget=$N"; absent in stores older than it), and budget_figure: the
    # dollars --budget stopped the run on (cost.Projection.budget_figure).

    def begin_run(self, when: float) -> None:
        with self._writing():
            if self.meta_text(meta.STARTED) is None:
                self._put(meta.STARTED, when)
            self._put(meta.STATE, "running")
            self._put(meta.RUNS, (self.meta(meta.RUNS) or 0) + 1)
            self._drop(meta.STOP_REASON)
            self._drop(meta.BUDGET_FIGURE)

    def end_run(self, when: float, state: str, reason: str | None = None) -> None:
        """How the run ended; `reason`: what halted it (RunSummary.halted)."""
        with self._writing():
            self._put(meta.STATE, state)
            self._put(meta.ENDED, when)
            if reason:
                self._put(meta.STOP_REASON, reason)
            else:
                self._drop(meta.STOP_REASON)

    def budget_passed(self, figure: float) -> None:
        """--budget stops the run: the figure it passed (recorded as it stops)."""
        self.write(meta.BUDGET_FIGURE, figure)

    def set_config(self, values: Mapping[str, Any]) -> None:
        """The configuration, already without secrets."""
        self.write(meta.CONFIG, dict(values))

    def config(self) -> dict[str, str]:
        found: dict[str, str] | None = self.meta(meta.CONFIG)
        return dict(found or {})

    # -- jobs ----------------------------------------------------------------

    def add_jobs(self, jobs: Iterable[tuple[int, int, str]]) -> int:
        """Store (id, line, command) rows in batches, as they stream in; how many."""
        count = 0
        rows = iter(jobs)
        while batch := list(itertools.islice(rows, INGEST_BATCH)):
            with self._writing():
                self.db.executemany("INSERT INTO jobs (id, line, command) VALUES (?, ?, ?)", batch)
            count += len(batch)
        return count

    def reset(self, states: Iterable[JobState]) -> int:
        """Jobs in these states become pending again (to be run on resume); how many.

        Attempts left open by a controller that was killed while they ran are
        closed first as lost, with no end time: when they ended is not known.
        """
        names = [state.value for state in states]
        marks = ", ".join("?" for _ in names)
        with self._writing():
            self.db.execute("UPDATE attempts SET outcome = 'lost' WHERE outcome IS NULL")
            cursor = self.db.execute(
                f"UPDATE jobs SET state = 'pending' WHERE state IN ({marks})", names
            )
        return cursor.rowcount

    # -- session keys and local runs -------------------------------------------

    def session_keys(self) -> list[str]:
        """Public key lines of runs that may have left them on workers.

        A run's key is recorded before it is used and forgotten once it is
        known to be removed everywhere. Private keys are never stored.
        """
        return self._listed(meta.SESSION_KEYS)

    def add_session_key(self, line: str) -> None:
        """A run's key, before it is used; on no worker yet (see key_workers)."""
        workers = {**self.key_workers(), line: []}
        with self._writing():
            self._put(meta.SESSION_KEYS, [*self.session_keys(), line])
            self._put(meta.SESSION_KEY_WORKERS, workers)

    def forget_session_keys(self, lines: Iterable[str]) -> None:
        removed = set(lines)
        kept = [line for line in self.session_keys() if line not in removed]
        workers = {key: at for key, at in self.key_workers().items() if key not in removed}
        with self._writing():
            self._put(meta.SESSION_KEYS, kept)
            self._put(meta.SESSION_KEY_WORKERS, workers)

    def key_workers(self) -> dict[str, list[str]]:
        """For each session key, the workers (`user@host:port`) it was sent to
        and not yet removed from, once per copy. A key recorded before these
        were kept has no entry: where it went is not known."""
        found: dict[str, list[str]] | None = self.meta(meta.SESSION_KEY_WORKERS)
        return dict(found or {})

    def key_sent(self, line: str, worker: str) -> None:
        """The key is about to be added on the worker (recorded first: a
        controller killed right after the add leaves it findable)."""
        workers = self.key_workers()
        workers.setdefault(line, []).append(worker)
        self.write(meta.SESSION_KEY_WORKERS, workers)

    def key_removed(self, line: str, worker: str, *, every: bool = False) -> None:
        """One copy of the key (or `every` copy) is known to be gone from the worker."""
        workers = self.key_workers()
        at = workers.get(line, [])
        if every:
            at = [name for name in at if name != worker]
        elif worker in at:
            at.remove(worker)
        workers[line] = at
        self.write(meta.SESSION_KEY_WORKERS, workers)

    def local_runs(self) -> list[str]:
        """Tags of this session's runs on the local provider (see transport.local.RUN_TAG)."""
        return self._listed(meta.LOCAL_RUNS)

    def add_local_run(self, tag: str) -> None:
        self.write(meta.LOCAL_RUNS, [*self.local_runs(), tag])

    # -- launched instances ------------------------------------------------------

    def intend_instance(
        self,
        token: str,
        provider: str,
        name: str,
        size: str | None,
        hourly_price: float | None,
        when: float,
    ) -> None:
        """Recorded before the launch call: a sweep by token finds what it made."""
        with self._writing():
            self.db.execute(
                "INSERT INTO instances (token, provider, name, size, hourly_price, intended) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (token, provider, name, size, hourly_price, when),
            )

    def instance_launched(self, token: str, instance_id: str, when: float) -> None:
        self._update_instance(token, instance_id=instance_id, launched=when)

    def instance_running(self, token: str, address: str, when: float) -> None:
        self._update_instance(token, address=address, running=when)

    def instance_destroyed(self, token: str, when: float, note: str | None = None) -> None:
        self._update_instance(token, destroyed=when, note=note)

    def sweep_until(self, when: float) -> None:
        """Instances may appear until `when` that no record has an id for (a launch
        call whose outcome is unknown): sweeps by tag go on until then."""
        with self._writing():
            if when > self.swept_until():
                self._put(meta.SWEEP_UNTIL, when)

    def swept_until(self) -> float:
        return self.meta(meta.SWEEP_UNTIL) or 0.0

    def _update_instance(self, token: str, **values: object) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._writing():
            self.db.execute(
                f"UPDATE instances SET {columns} WHERE token = ?", (*values.values(), token)
            )

    # -- workers ---------------------------------------------------------------

    def worker_slots(self, name: str, slots: int) -> None:
        """How many jobs at once the worker runs (--slots); one that is never
        recorded ran one at a time."""
        with self._writing():
            self.db.execute(
                "INSERT OR REPLACE INTO workers (name, slots) VALUES (?, ?)", (name, slots)
            )

    # -- attempts --------------------------------------------------------------

    def start_attempt(self, job_id: int, worker: str, started: float) -> int:
        with self._writing():
            self.db.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (job_id,))
            cursor = self.db.execute(
                "INSERT INTO attempts (job, worker, started) VALUES (?, ?, ?)",
                (job_id, worker, started),
            )
        return int(cursor.lastrowid or 0)

    def end_attempt(
        self, attempt: int, job_id: int, state: JobState, end: AttemptEnd, ended: float
    ) -> None:
        """Record how the attempt ended and the job's state after it, in one commit."""
        counted = 1 if end.outcome in COUNTED else 0
        values = (ended, end.outcome, end.exit_status, end.signal, end.tail)
        with self._writing():
            self.db.execute(
                "UPDATE attempts SET ended = ?, outcome = ?, exit_status = ?, signal = ?, "
                "tail = ?, user_cpu = ?, system_cpu = ?, max_rss = ?, output_bytes = ? "
                "WHERE id = ?",
                (*values, *_usage_row(end.usage), attempt),
            )
            self.db.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + ? WHERE id = ?",
                (state.value, counted, job_id),
            )


def _usage_row(usage: Usage | None) -> tuple[float | None, ...]:
    """The usage columns of attempts (schema 3), in records.USAGE_COLUMNS's
    order; NULL: not measured."""
    if usage is None:
        return (None, None, None, None)
    return (usage.user_cpu, usage.system_cpu, usage.max_rss, usage.output_bytes)
