"""The read-only store reader and the one consistency check, on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloudtask.scheduler import JobState
from cloudtask.store import AttemptEnd, Store
from cloudtask.store import meta as keys
from cloudtask.store import schema as store_schema
from cloudtask.store.check import check_finished
from cloudtask.store.reader import StoreReader
from cloudtask.usage import Usage


def run_job(store: Store, job: int, outcome: str, state: JobState, at: float) -> int:
    attempt = store.start_attempt(job, f"w{job % 2}", at)
    used = Usage(0.5, 0.25, 1 << 20, job)  # what it used is recorded too, and checks add up
    end = AttemptEnd(outcome, 0, None, f"tail {job}", used)
    store.end_attempt(attempt, job, state, end, at + 1)
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


def test_the_reader_reads_a_version_2_store_as_using_nothing_measured(tmp_path: Path) -> None:
    # A store as cloudtask 2 left it (no usage columns, no workers table), made with SQL.
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.executescript(store_schema.SCHEMA + store_schema.MIGRATIONS[1])
    db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    db.execute("INSERT INTO jobs (id, line, command, state) VALUES (1, 1, 'echo 1', 'ok')")
    db.execute(
        "INSERT INTO attempts (job, worker, started, ended, outcome) VALUES (1, 'w', 1, 2, 'ok')"
    )
    db.commit()
    db.close()

    with StoreReader.open(tmp_path) as reader, reader.snapshot():
        assert reader.meta(keys.SCHEMA_VERSION) == 2  # not migrated
        assert not reader.has_usage()
        ((_, (tried,)),) = list(reader.jobs_with_attempts())
        assert (tried.outcome, tried.usage) == ("ok", None)
        assert [a.usage for a in reader.attempts()] == [None]
        assert [a.usage for a in reader.attempts_of([1])[1]] == [None]
        assert reader.usage_totals() == (0, 0, 0.0, 0.0, None, 0)
        assert (reader.most_cpu(5), reader.most_memory(5), reader.worker_slots()) == ([], [], {})


def used_store(directory: Path) -> None:
    """Jobs 1-4 (1 retried), what they used; job 4's worker had no agent (bytes only)."""
    store = Store.create(directory)
    store.add_jobs((n, n, f"job {n}") for n in range(1, 6))
    used = {
        1: [Usage(1.0, 0.5, 100, 10), Usage(2.0, 0.5, 300, 20)],  # 4.0 s, peak 300
        2: [Usage(0.25, 0.25, 900, 30)],  # 0.5 s, peak 900
        3: [Usage(6.0, 1.0, 200, 40)],  # 7.0 s, peak 200
        4: [Usage(output_bytes=50)],
    }
    for job, uses in used.items():
        for use in uses:
            attempt = store.start_attempt(job, "w", 1.0)
            store.end_attempt(attempt, job, JobState.OK, AttemptEnd("ok", 0, None, "", use), 2.0)
    store.start_attempt(5, "w", 3.0)  # running: nothing measured yet
    store.worker_slots("w", 2)
    store.close()


def test_what_the_attempts_used_is_summed_and_ranked_in_sql(tmp_path: Path) -> None:
    used_store(tmp_path)

    with StoreReader.open(tmp_path) as reader, reader.snapshot():
        assert reader.has_usage()
        totals = reader.usage_totals()
        assert totals == (5, 4, 9.25, 2.25, 900, 150)
        assert reader.most_cpu(2) == [(3, 7.0, "job 3"), (1, 4.0, "job 1")]
        assert reader.most_cpu(9) == [(3, 7.0, "job 3"), (1, 4.0, "job 1"), (2, 0.5, "job 2")]
        assert reader.most_memory(2) == [(2, 900, "job 2"), (1, 300, "job 1")]
        assert reader.worker_slots() == {"w": 2}


def test_a_finished_store_adds_up(tmp_path: Path) -> None:
    finished_store(tmp_path).close()

    with StoreReader.open(tmp_path) as reader:
        check = check_finished(reader, 3, cut_off=())
    assert check.problems == []
    assert (check.jobs, check.ok_attempts, check.jobs_ok, check.runs) == (3, 3, 3, 1)


def test_a_retry_is_allowed_unless_only_kills_may_cut_attempts_off(tmp_path: Path) -> None:
    store = finished_store(tmp_path)
    store.add_jobs([(4, 4, "flaky")])
    run_job(store, 4, "failed", JobState.PENDING, 15.0)
    run_job(store, 4, "ok", JobState.OK, 17.0)
    store.close()

    with StoreReader.open(tmp_path) as reader:
        assert check_finished(reader, 4).problems == []
        problems = check_finished(reader, 4, cut_off=()).problems
    assert problems == [
        "other attempts: {'failed': 1}",
        "jobs that ran more than once: 1, more than were running at the kills (0)",
    ]


def test_attempts_a_kill_cut_off_must_be_those_running_at_it(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.add_jobs([(1, 1, "true"), (2, 2, "true")])
    store.begin_run(10.0)
    store.start_attempt(1, "w", 11.0)  # the controller is killed here
    store.reset([JobState.RUNNING])  # the resume: closed as lost, with no end
    run_job(store, 1, "ok", JobState.OK, 12.0)
    run_job(store, 2, "ok", JobState.OK, 12.0)
    store.end_run(20.0, "finished")
    store.close()

    with StoreReader.open(tmp_path) as reader:
        assert check_finished(reader, 2, cut_off=[1]).problems == []
        (problem, *_) = check_finished(reader, 2, cut_off=[2]).problems
    assert problem.startswith("attempts closed as lost for jobs [1], but running at the kills: [2]")


def test_what_does_not_add_up_is_named(tmp_path: Path) -> None:
    store = finished_store(tmp_path)
    store.add_session_key("ssh-ed25519 AAAA session")
    store.start_attempt(3, "w", 40.0)
    store.intend_instance("tok", "hub", "hub1", None, None, 5.0)
    store.close()

    with StoreReader.open(tmp_path) as reader:
        check = check_finished(reader, 4)
    assert check.problems == [
        "session keys still recorded as left on workers: 1",
        "job ids are not 1..4: 3 jobs, 1, 2, 3",
        "jobs not ok: {'running': 1}",
        "job 3: attempts after its ok one (outcomes ['ok', None])",
        "job 3: attempt 4 on w still open",
        "instance hub1 (no id) not recorded as destroyed",
    ]
    assert (check.open_attempts, check.open_instances) == (1, 1)


@pytest.mark.parametrize("jobs", [0, 1])
def test_an_unfinished_session_is_a_problem(tmp_path: Path, jobs: int) -> None:
    store = Store.create(tmp_path)
    store.add_jobs((n, n, "true") for n in range(1, jobs + 1))
    store.close()

    with StoreReader.open(tmp_path) as reader:
        problems = check_finished(reader, jobs).problems
    assert problems[:2] == ["session state is None, not 'finished'", "session has no end time"]
