"""The session store on real SQLite files."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from cloudtask.config import resolve
from cloudtask.errors import SessionError, SessionWriteError
from cloudtask.scheduler import JobState
from cloudtask.session.plan import stored_config
from cloudtask.store import INGEST_BATCH, AttemptEnd, Store
from cloudtask.store import meta as keys
from cloudtask.store import schema as store_schema
from cloudtask.store.reader import StoreReader
from cloudtask.usage import Usage


def test_jobs_stream_in_batches_and_come_back_in_order(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    count = INGEST_BATCH * 2 + 7
    added = store.add_jobs((n, n + 1, f"echo {n}") for n in range(1, count + 1))

    assert added == count
    assert store.job_ids() == list(range(1, count + 1))
    assert store.command(count) == f"echo {count}"
    assert store.counts()[JobState.PENDING] == count


def test_a_bad_row_midway_keeps_earlier_batches_only_up_to_the_error(tmp_path: Path) -> None:
    store = Store.create(tmp_path)

    def rows():
        yield from ((n, n, "true") for n in range(1, INGEST_BATCH + 1))
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        store.add_jobs(rows())
    assert store.counts()[JobState.PENDING] == INGEST_BATCH


def test_attempts_and_states_are_committed_for_another_reader(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.add_jobs([(1, 1, "false"), (2, 2, "true")])
    first = store.start_attempt(1, "w1", 100.0)
    store.end_attempt(first, 1, JobState.PENDING, AttemptEnd("failed", 1, None, "boom"), 101.0)
    second = store.start_attempt(1, "w2", 102.0)

    # Another connection (as after a crash of this process) sees every commit.
    other = StoreReader.open(tmp_path)
    (job, _) = other.jobs()
    assert (job.state, job.attempts) == ("running", 1)
    rows = [(a.id, a.worker, a.outcome, a.exit_status, a.tail) for a in other.attempts()]
    assert rows == [(first, "w1", "failed", 1, "boom"), (second, "w2", None, None, None)]

    store.end_attempt(second, 1, JobState.PENDING, AttemptEnd("stopped"), 103.0)
    (job, _) = other.jobs()
    assert (job.state, job.attempts) == ("pending", 1)  # a stopped attempt is not a try


def test_pending_jobs_are_read_in_chunks_past_the_last_one_read(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.add_jobs((n, n, "true") for n in range(1, 11))
    pending = store.pending_ids(chunk=3)
    taken = [next(pending) for _ in range(4)]
    assert taken == [1, 2, 3, 4]
    # Job 2 runs and goes back to pending, job 8 runs and ends: neither is read
    # again by the running cursor (the scheduler holds job 2 itself).
    for job_id, state in ((2, JobState.PENDING), (8, JobState.OK)):
        attempt = store.start_attempt(job_id, "w", 1.0)
        store.end_attempt(attempt, job_id, state, AttemptEnd(state.value), 2.0)
    assert list(pending) == [5, 6, 7, 9, 10]


def test_resume_closes_attempts_cut_off_by_a_killed_controller(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.add_jobs([(1, 1, "sleep 9"), (2, 2, "true")])
    done = store.start_attempt(2, "w", 1.0)
    store.end_attempt(done, 2, JobState.OK, AttemptEnd("ok", 0), 2.0)
    store.start_attempt(1, "w", 1.5)
    store.close()  # the controller is killed here

    store = Store.open(tmp_path)
    assert store.reset([JobState.RUNNING, JobState.LOST]) == 1
    assert store.counts()[JobState.PENDING] == 1
    with StoreReader.open(tmp_path) as reader:
        rows = [(a.job, a.outcome, a.ended) for a in reader.attempts()]
    assert rows == [(2, "ok", 2.0), (1, "lost", None)]


def test_the_store_is_private_and_versioned(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    mode = stat.S_IMODE((tmp_path / "store.sqlite").stat().st_mode)
    assert mode == 0o600
    store.write(keys.SCHEMA_VERSION, 99)
    store.close()

    with pytest.raises(SessionError, match="schema version 99 is not one this cloudtask knows"):
        Store.open(tmp_path)
    with pytest.raises(SessionError, match="no session store"):
        Store.open(tmp_path / "elsewhere")


def test_what_halted_a_run_is_recorded_until_the_next_run_begins(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.begin_run(100.0)
    store.budget_passed(7306.97)
    store.end_run(200.0, "halted", "--budget=$5")
    store.close()

    store = Store.open(tmp_path)
    assert (store.meta(keys.STATE), store.meta(keys.STOP_REASON)) == ("halted", "--budget=$5")
    assert store.meta_text(keys.BUDGET_FIGURE) == "7306.97"
    # A resume: no stop yet, and the last one's figure is gone with it.
    store.begin_run(300.0)
    assert (store.meta(keys.STOP_REASON), store.meta(keys.BUDGET_FIGURE)) == (None, None)
    store.end_run(400.0, "halted", "--halt=fail=1")
    assert store.meta(keys.STOP_REASON) == "--halt=fail=1"
    store.end_run(500.0, "finished")  # as cli.py called it before there was a reason
    assert (store.meta(keys.STATE), store.meta(keys.STOP_REASON)) == ("finished", None)
    store.close()


def test_the_stored_configuration_has_no_secret() -> None:
    config = resolve({"split": "3"}, None, {"CLOUDTASK_HUB_APIKEY": "s3cret-key"})

    stored = stored_config(config)
    assert stored["split"] == "3"
    assert "hub-apikey" not in stored
    assert "s3cret-key" not in repr(stored)


def test_a_version_1_store_is_migrated_on_open_and_keeps_its_jobs(tmp_path: Path) -> None:
    # A store as cloudtask 1 left it: made with SQL, as no code writes schema 1 any more.
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.executescript(store_schema.SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO jobs (id, line, command) VALUES (1, 1, 'echo 1')")
    db.commit()
    db.close()

    store = Store.open(tmp_path)
    assert store.meta(keys.SCHEMA_VERSION) == store_schema.SCHEMA_VERSION == 3
    assert store.command(1) == "echo 1"
    store.intend_instance("tok", "hub", "hub1", "t3.small", 0.02, 10.0)
    store.instance_launched("tok", "i-1", 11.0)
    assert [(r.instance_id, r.launched, r.destroyed) for r in store.instances()] == [
        ("i-1", 11.0, None)
    ]
    store.close()
    # Opening again migrates nothing more.
    assert Store.open(tmp_path).meta(keys.SCHEMA_VERSION) == 3


def version_2_store(directory: Path) -> None:
    """A store as cloudtask 2 left it: job 1 ended ok on w1, job 2 still running."""
    db = sqlite3.connect(directory / "store.sqlite")
    db.executescript(store_schema.SCHEMA + store_schema.MIGRATIONS[1])
    db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    db.execute("INSERT INTO jobs (id, line, command, state) VALUES (1, 1, 'echo 1', 'ok')")
    db.execute("INSERT INTO jobs (id, line, command, state) VALUES (2, 2, 'echo 2', 'running')")
    db.execute(
        "INSERT INTO attempts (job, worker, started, ended, outcome, exit_status, tail) "
        "VALUES (1, 'w1', 1.0, 2.0, 'ok', 0, '1')"
    )
    db.execute("INSERT INTO attempts (job, worker, started) VALUES (2, 'w1', 2.0)")
    db.commit()
    db.close()


def test_a_version_2_store_is_migrated_and_its_attempts_used_nothing_measured(
    tmp_path: Path,
) -> None:
    version_2_store(tmp_path)

    store = Store.open(tmp_path)
    assert store.meta(keys.SCHEMA_VERSION) == 3
    assert "workers" in store_schema.tables(store.db)
    # The attempt that ran under version 2 has no usage; one that ends now has.
    used = Usage(user_cpu=1.5, system_cpu=0.25, max_rss=64 << 20, output_bytes=12)
    store.end_attempt(2, 2, JobState.OK, AttemptEnd("ok", 0, None, "2", used), 3.0)
    store.worker_slots("w1", 4)
    store.close()

    with StoreReader.open(tmp_path) as reader:
        (old, new) = reader.attempts()
        assert (old.outcome, old.usage) == ("ok", None)
        assert (new.outcome, new.usage) == ("ok", used)
        assert reader.worker_slots() == {"w1": 4}


def test_usage_round_trips_and_none_stays_none(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.add_jobs([(1, 1, "a"), (2, 2, "b"), (3, 3, "c")])
    no_agent = Usage(output_bytes=5)  # a worker without the agent: only bytes counted
    ends = {
        1: AttemptEnd("ok", 0, None, "", Usage(0.5, 0.125, 1 << 30, 1 << 20)),
        2: AttemptEnd("failed", 1, None, "", no_agent),
        3: AttemptEnd("stopped"),  # no usage at all
    }
    for job, end in ends.items():
        attempt = store.start_attempt(job, "w", 1.0)
        store.end_attempt(attempt, job, JobState.PENDING, end, 2.0)
    running = store.start_attempt(1, "w", 3.0)

    with StoreReader.open(tmp_path) as reader:
        found = {a.id: a for a in reader.attempts()}
    assert [found[job].usage for job in ends] == [end.usage for end in ends.values()]
    assert (found[2].user_cpu, found[2].max_rss, found[2].output_bytes) == (None, None, 5)
    assert (found[3].user_cpu, found[3].output_bytes) == (None, None)
    assert found[running].usage is None
    assert found[1].usage is not None and found[1].usage.cpu == 0.625


def test_a_worker_s_slots_are_recorded_and_replaced(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.worker_slots("w1", 2)
    store.worker_slots("w2", 8)
    store.worker_slots("w1", 4)  # a later run with another --slots

    with StoreReader.open(tmp_path) as reader:
        assert reader.worker_slots() == {"w1": 4, "w2": 8}


def test_instances_are_recorded_from_intent_to_destruction(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.intend_instance("a", "ec2", "ec2-1", "t3.small", 0.0208, 1.0)
    store.intend_instance("b", "ec2", "ec2-2", "t3.small", 0.0208, 2.0)
    store.instance_launched("a", "i-a", 1.5)
    store.instance_running("a", "198.18.0.9", 3.0)
    # Another connection (after a SIGKILL) sees the intent with no id yet, too.
    other = Store.open(tmp_path)
    assert [(r.token, r.instance_id) for r in other.instances(open_only=True)] == [
        ("a", "i-a"),
        ("b", None),
    ]
    store.instance_destroyed("a", 9.0)
    store.instance_destroyed("b", 9.5, "never launched")
    assert other.instances(open_only=True) == []
    (first, second) = other.instances()
    assert (first.address, first.running, first.destroyed) == ("198.18.0.9", 3.0, 9.0)
    assert second.note == "never launched"


def test_a_session_key_is_recorded_per_copy_on_each_worker_it_was_sent_to(
    tmp_path: Path,
) -> None:
    store = Store.create(tmp_path)
    store.add_session_key("key-1")
    assert store.key_workers() == {"key-1": []}
    store.key_sent("key-1", "root@a:22")
    store.key_sent("key-1", "root@a:22")  # an address listed twice: two copies
    store.key_sent("key-1", "deploy@b:2222")
    store.key_removed("key-1", "root@a:22")
    assert store.key_workers() == {"key-1": ["root@a:22", "deploy@b:2222"]}
    store.key_removed("key-1", "deploy@b:2222", every=True)
    store.key_removed("key-1", "nowhere:22")  # never sent there: nothing changes
    other = Store.open(tmp_path)
    assert other.key_workers() == {"key-1": ["root@a:22"]}
    assert other.session_keys() == ["key-1"]
    store.forget_session_keys(["key-1"])
    assert (other.session_keys(), other.key_workers()) == ([], {})


DAMAGE = {
    "no schema version": "UPDATE meta SET value = 'x' WHERE key = 'schema_version'",
    "unknown job state": "UPDATE jobs SET state = 'weird' WHERE id = 2",
    "config not JSON": "INSERT OR REPLACE INTO meta VALUES ('config', '{')",
    "config not a mapping of text": "INSERT OR REPLACE INTO meta VALUES ('config', '[1]')",
    "session keys not a list": "INSERT OR REPLACE INTO meta VALUES ('session_keys', '5')",
    "local runs not text": "INSERT OR REPLACE INTO meta VALUES ('local_runs', '[null]')",
    "key workers not lists": "INSERT OR REPLACE INTO meta VALUES ('session_key_workers', "
    '\'{"k": "w"}\')',
    "a dropped table": "DROP TABLE attempts",
    "no workers table": "DROP TABLE workers",
    "schema version not ASCII digits": "UPDATE meta SET value = '²' WHERE key = 'schema_version'",
    "runs not a number": "INSERT OR REPLACE INTO meta VALUES ('runs', 'many')",
    "end not a time": "INSERT OR REPLACE INTO meta VALUES ('ended', 'later')",
    "budget figure not a number": "INSERT INTO meta VALUES ('budget_figure', 'lots')",
    "no meta table": "DROP TABLE meta",
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_store_is_refused_on_open_as_one_session_error(
    tmp_path: Path, damage: str
) -> None:
    store = Store.create(tmp_path)
    store.add_jobs([(1, 1, "echo 1"), (2, 2, "echo 2")])
    store.close()
    # Damaged with SQL on purpose: cloudtask never writes any of these.
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.execute(damage)
    db.commit()
    db.close()

    with pytest.raises(SessionError, match=r"store\.sqlite: (damaged|not a session store)"):
        Store.open(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\x00not a database\x00" * 400])
def test_a_store_file_that_is_empty_or_garbage_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "store.sqlite").write_bytes(content)

    with pytest.raises(SessionError, match=r"store\.sqlite: "):
        Store.open(tmp_path)


def test_a_slots_record_that_cannot_be_written_is_a_session_write_error(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.db.execute("PRAGMA query_only = ON")  # every write fails, as on a full disk

    with pytest.raises(SessionWriteError, match=r"store\.sqlite"):
        store.worker_slots("w1", 4)
