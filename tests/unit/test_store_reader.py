"""The read-only store reader, on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cloudtask.scheduler import JobState
from cloudtask.store import AttemptEnd, Store
from cloudtask.store import meta as keys
from cloudtask.store import schema as store_schema
from cloudtask.store.reader import StoreReader


def run_job(store: Store, job: int, outcome: str, state: JobState, at: float) -> int:
    attempt = store.start_attempt(job, f"w{job % 2}", at)
    store.end_attempt(attempt, job, state, AttemptEnd(outcome, 0, None, f"tail {job}"), at + 1)
    return attempt


def finished_store(directory: Path, jobs: int = 3) -> Store:
    store = Store.create(directory)
    store.write(keys.COMMAND, "echo")
    store.add_jobs((n, n, f"echo {n}") for n in range(1, jobs + 1))
    store.begin_run(10.0)
    for n in range(1, jobs + 1):
        run_job(store, n, "ok", JobState.OK, 10.0 + n)
    store.end_run(20.0, "finished")
    return store


def test_the_reader_sees_what_the_writer_committed_typed(tmp_path: Path) -> None:
    store = finished_store(tmp_path)
    first = store.start_attempt(2, "w9", 30.0)  # a second attempt at job 2, still open

    with StoreReader.open(tmp_path) as reader, reader.snapshot():
        assert reader.meta(keys.STATE) == "finished"
        assert reader.meta(keys.STARTED) == 10.0 and reader.meta(keys.RUNS) == 1
        assert reader.meta(keys.CONFIG) == {} and reader.session_keys() == []
        assert reader.state_counts() == {"ok": 2, "running": 1}
        assert reader.job_states() == {1: "ok", 2: "running", 3: "ok"}
        assert [job.id for job in reader.jobs(JobState.OK)] == [1, 3]
        assert [job.command for job in reader.jobs(limit=2)] == ["echo 1", "echo 2"]
        paired = [(job.id, [a.id for a in tried]) for job, tried in reader.jobs_with_attempts()]
        assert paired == [(1, [1]), (2, [2, first]), (3, [3])]
        assert [a.outcome for a in reader.attempts(2)] == ["ok", None]
        assert list(reader.attempts_of([3, 1])) == [1, 3]
        assert reader.attempt_bounds() == (11.0, 30.0, 14.0)
        totals = {t.worker: (t.attempts, t.ok, t.open) for t in reader.worker_totals()}
        assert totals == {"w0": (1, 1, 0), "w1": (2, 2, 0), "w9": (1, 0, 1)}
        assert reader.orphan_attempts() == [] and reader.open_instances() == 0


def test_the_reader_reads_an_old_store_as_it_is_and_never_writes(tmp_path: Path) -> None:
    # A store as cloudtask 1 left it: made with SQL, as no code writes schema 1 any more.
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.executescript(store_schema.SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.commit()
    db.close()

    with StoreReader.open(tmp_path) as reader:
        assert reader.meta(keys.SCHEMA_VERSION) == 1  # not migrated
        assert not reader.has_instances()
        assert (reader.instances(), reader.open_instances()) == ([], 0)
    with StoreReader.open(tmp_path) as reader:
        assert reader.meta(keys.SCHEMA_VERSION) == 1
