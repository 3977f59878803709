"""The session store: one SQLite file per session, the only code that writes state.

Every change is committed before it is shown or reported, so a controller
killed at any moment loses nothing but the jobs that were running. The file
lives in the session directory (`SESSIONS/ID/store.sqlite`), in WAL mode; its
schema carries a version and is migrated when opened.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SessionError, SessionWriteError
from .paths import cannot_write
from .scheduler import JobState

SCHEMA_VERSION = 2
INGEST_BATCH = 10_000
PENDING_CHUNK = 1_000
STORE_NAME = "store.sqlite"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    line INTEGER NOT NULL,
    command TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_state ON jobs (state);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs (id),
    worker TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    outcome TEXT,
    exit_status INTEGER,
    signal INTEGER,
    tail TEXT
);
CREATE INDEX attempts_job ON attempts (job);
"""

# Each step turns schema version N into N + 1; a store is migrated on open.
_MIGRATIONS: dict[int, str] = {
    # 2: launched instances, each recorded before the launch call (intent) and
    # its id as soon as the cloud returns it, so none is ever forgotten.
    1: """
CREATE TABLE instances (
    token TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    name TEXT NOT NULL,
    size TEXT,
    hourly_price REAL,
    instance_id TEXT,
    address TEXT,
    intended REAL NOT NULL,
    launched REAL,
    running REAL,
    destroyed REAL,
    note TEXT
);
CREATE INDEX instances_open ON instances (destroyed);
""",
}


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, as stored: outcome is ok, failed, timeout, stopped or lost."""

    outcome: str
    exit_status: int | None = None
    signal: int | None = None
    tail: str = ""


class Store:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    def create(cls, directory: Path) -> Store:
        path = directory / STORE_NAME
        store = cls(_connect(path), path)
        with store.db:
            store.db.executescript(_SCHEMA)
            store._set("schema_version", "1")
        store._migrate(1)
        return store

    @classmethod
    def open(cls, directory: Path) -> Store:
        """The session's store, migrated; a damaged one is a SessionError naming what."""
        path = directory / STORE_NAME
        if not path.is_file():
            raise SessionError(f"{directory}: no session store")
        store = cls(_connect(path), path)
        try:
            store._check(store._version())
        except sqlite3.Error as exc:
            raise SessionError(f"{path}: not a session store SQLite can read: {exc}") from None
        return store

    def _version(self) -> int:
        raw = self.get("schema_version")
        if raw is None or not (raw.isascii() and raw.isdigit()):
            raise SessionError(f"{self.path}: damaged: no schema version (found {raw!r})")
        version = int(raw)
        if not 1 <= version <= SCHEMA_VERSION:
            raise SessionError(
                f"{self.path}: schema version {version} is not one this cloudtask knows "
                f"(1 to {SCHEMA_VERSION}): made by a newer cloudtask?"
            )
        return version

    def _check(self, version: int) -> None:
        """Migrate, then refuse a store whose tables or states cloudtask did not write."""
        self._migrate(version)
        tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master")}
        missing = sorted({"meta", "jobs", "attempts", "instances"} - tables)
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
        for key in ("config", "session_keys", "session_key_workers", "local_runs"):
            self._json(key)
        numbers = (
            ("runs", int),
            ("started", float),
            ("ended", float),
            ("sweep_until", float),
            ("budget_figure", float),
        )
        for key, number in numbers:
            raw = self.get(key)
            try:
                if raw is not None:
                    number(raw)
            except ValueError:
                raise SessionError(f"{self.path}: damaged: meta {key} is {raw!r}") from None

    def _json(self, key: str) -> Any:
        """A meta value cloudtask stores as JSON: a dict of strings (config), a
        dict of lists of strings (session_key_workers) or a list of strings."""
        mapping = key in ("config", "session_key_workers")
        raw = self.get(key)
        if raw is None:
            return {} if mapping else []
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if key == "session_key_workers":
            fits = isinstance(value, dict) and all(
                isinstance(at, list) and all(isinstance(name, str) for name in at)
                for at in value.values()
            )
        else:
            items = value.values() if isinstance(value, dict) else value
            fits = isinstance(value, dict if mapping else list) and all(
                isinstance(item, str) for item in items
            )
        if not fits:
            raise SessionError(f"{self.path}: damaged: meta {key} is not what cloudtask wrote")
        return value

    def _migrate(self, version: int) -> None:
        """Bring the schema up to date, one version a commit."""
        while version < SCHEMA_VERSION:
            # executescript commits first; the version moves with its step.
            self.db.executescript(
                "BEGIN;\n" + _MIGRATIONS[version] + "\nINSERT OR REPLACE INTO meta (key, value) "
                f"VALUES ('schema_version', '{version + 1}');\nCOMMIT;"
            )
            version += 1

    def close(self) -> None:
        self.db.close()

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

    # -- session metadata --------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        with self._writing():
            self._set(key, value)

    def _set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _unset(self, key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", (key,))

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
            if self.get("started") is None:
                self._set("started", repr(when))
            self._set("state", "running")
            self._set("runs", str(int(self.get("runs") or 0) + 1))
            self._unset("stop_reason")
            self._unset("budget_figure")

    def end_run(self, when: float, state: str, reason: str | None = None) -> None:
        """How the run ended; `reason`: what halted it (RunSummary.halted)."""
        with self._writing():
            self._set("state", state)
            self._set("ended", repr(when))
            if reason:
                self._set("stop_reason", reason)
            else:
                self._unset("stop_reason")

    def budget_passed(self, figure: float) -> None:
        """--budget stops the run: the figure it passed (recorded as it stops)."""
        self.set("budget_figure", repr(figure))

    def last_attempt_end(self) -> float | None:
        row = self.db.execute("SELECT max(ended) FROM attempts").fetchone()
        return None if row[0] is None else float(row[0])

    def set_config(self, values: Mapping[str, Any]) -> None:
        """The configuration, already without secrets."""
        self.set("config", json.dumps(values, sort_keys=True, default=str))

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

    def session_keys(self) -> list[str]:
        """Public key lines of runs that may have left them on workers.

        A run's key is recorded before it is used and forgotten once it is
        known to be removed everywhere. Private keys are never stored.
        """
        return list(self._json("session_keys"))

    def add_session_key(self, line: str) -> None:
        """A run's key, before it is used; on no worker yet (see key_workers)."""
        workers = {**self.key_workers(), line: []}
        with self._writing():
            self._set("session_keys", json.dumps([*self.session_keys(), line]))
            self._set("session_key_workers", json.dumps(workers))

    def forget_session_keys(self, lines: Iterable[str]) -> None:
        removed = set(lines)
        kept = [line for line in self.session_keys() if line not in removed]
        workers = {key: at for key, at in self.key_workers().items() if key not in removed}
        with self._writing():
            self._set("session_keys", json.dumps(kept))
            self._set("session_key_workers", json.dumps(workers))

    def key_workers(self) -> dict[str, list[str]]:
        """For each session key, the workers (`user@host:port`) it was sent to
        and not yet removed from, once per copy. A key recorded before these
        were kept has no entry: where it went is not known."""
        return dict(self._json("session_key_workers"))

    def key_sent(self, line: str, worker: str) -> None:
        """The key is about to be added on the worker (recorded first: a
        controller killed right after the add leaves it findable)."""
        workers = self.key_workers()
        workers.setdefault(line, []).append(worker)
        self.set("session_key_workers", json.dumps(workers))

    def key_removed(self, line: str, worker: str, *, every: bool = False) -> None:
        """One copy of the key (or `every` copy) is known to be gone from the worker."""
        workers = self.key_workers()
        at = workers.get(line, [])
        if every:
            at = [name for name in at if name != worker]
        elif worker in at:
            at.remove(worker)
        workers[line] = at
        self.set("session_key_workers", json.dumps(workers))

    def local_runs(self) -> list[str]:
        """Tags of this session's runs on the local provider (see transport.local.RUN_TAG)."""
        return list(self._json("local_runs"))

    def add_local_run(self, tag: str) -> None:
        self.set("local_runs", json.dumps([*self.local_runs(), tag]))

    def config(self) -> dict[str, str]:
        return dict(self._json("config"))

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

    def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, count in self.db.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = int(count)
        return counts

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
                self._set("sweep_until", repr(when))

    def swept_until(self) -> float:
        return float(self.get("sweep_until") or 0.0)

    def instances(self, *, open_only: bool = False) -> list[InstanceRecord]:
        """Launched instances in launch order; open_only: those not destroyed yet."""
        where = " WHERE destroyed IS NULL" if open_only else ""
        rows = self.db.execute(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances{where} ORDER BY intended, rowid"
        )
        return [InstanceRecord(*row) for row in rows]

    def _update_instance(self, token: str, **values: object) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._writing():
            self.db.execute(
                f"UPDATE instances SET {columns} WHERE token = ?", (*values.values(), token)
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

    def attempt_number(self, job_id: int, attempt: int) -> int:
        """Which attempt at the job this one is: 1 for the first (lost ones count)."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM attempts WHERE job = ? AND id <= ?", (job_id, attempt)
        ).fetchone()
        return int(row[0])

    def end_attempt(
        self, attempt: int, job_id: int, state: JobState, end: AttemptEnd, ended: float
    ) -> None:
        """Record how the attempt ended and the job's state after it, in one commit."""
        counted = 1 if end.outcome in ("ok", "failed", "timeout") else 0
        with self._writing():
            self.db.execute(
                "UPDATE attempts SET ended = ?, outcome = ?, exit_status = ?, signal = ?, "
                "tail = ? WHERE id = ?",
                (ended, end.outcome, end.exit_status, end.signal, end.tail, attempt),
            )
            self.db.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + ? WHERE id = ?",
                (state.value, counted, job_id),
            )


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


_INSTANCE_COLUMNS = ", ".join(InstanceRecord.__slots__)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # Made private before SQLite opens it: its journal files take its mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(path, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        raise SessionError(f"{path}: {exc}") from None
    path.chmod(0o600)
    return db
