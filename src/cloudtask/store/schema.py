"""The store's schema: its tables, its version and the migrations run on open.

The one place the layout of `store.sqlite` is declared. A new store gets
`SCHEMA` at version 1 and is migrated like any older one, one version a
commit (`migrate`), so every store of a version went through the same steps.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import SessionError

SCHEMA_VERSION = 3
STORE_NAME = "store.sqlite"
TABLES = frozenset({"meta", "jobs", "attempts", "instances", "workers"})

SCHEMA = """
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
MIGRATIONS: dict[int, str] = {
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
    # 3: what each attempt used (usage.Usage; NULL: not measured, or from an
    # older cloudtask, or still running), and how many jobs at once each
    # worker ran (--slots; a worker not in the table ran one).
    2: """
ALTER TABLE attempts ADD COLUMN user_cpu REAL;
ALTER TABLE attempts ADD COLUMN system_cpu REAL;
ALTER TABLE attempts ADD COLUMN max_rss INTEGER;
ALTER TABLE attempts ADD COLUMN output_bytes INTEGER;
CREATE TABLE workers (name TEXT PRIMARY KEY, slots INTEGER NOT NULL);
""",
}


def create(db: sqlite3.Connection) -> None:
    """The tables of a new store, at version 1, in one commit (then `migrate`)."""
    with db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring the schema up to date, one version a commit."""
    while version < SCHEMA_VERSION:
        # executescript commits first; the version moves with its step.
        db.executescript(
            "BEGIN;\n" + MIGRATIONS[version] + "\nINSERT OR REPLACE INTO meta (key, value) "
            f"VALUES ('schema_version', '{version + 1}');\nCOMMIT;"
        )
        version += 1


def tables(db: sqlite3.Connection) -> set[str]:
    return {
        str(row[0]) for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }


def connect(path: Path) -> sqlite3.Connection:
    """The writer's connection (WAL); the file is made private before SQLite opens it."""
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


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write (the file opened read-only), in autocommit
    mode: its reads are grouped by an explicit transaction (a snapshot)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
