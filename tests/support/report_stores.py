"""Sessions for the report tests: real ones run by the installed cloudtask command,
and stores crafted with cloudtask.store.Store for what a local run cannot make
(launched instances with prices, a controller killed mid-run, huge sessions).

Crafted sessions use round UNIX times (T0 and offsets from it) so durations,
hours, costs and efficiencies are exact binary fractions that tests compare
with ==.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from tests.support.helpers import cloudtask, sessions_dir

from cloudtask.scheduler import JobState
from cloudtask.session import SessionDir
from cloudtask.store import INGEST_BATCH, AttemptEnd, Store
from cloudtask.store import meta as keys
from cloudtask.usage import Usage

T0 = 1_800_000_000.0  # a round start time (2027-01-15T08:00:00Z)
# One of something the reports count, said in the plural ("1 jobs").
ONE_IN_THE_PLURAL = re.compile(r"\b1 (?:more )?(?:jobs|workers|attempts|instances|runs)\b")
JOB = "sh -c 'echo out $1; echo more $1 >&2; exit $1' x"


def real_session(*lines: str, split: int = 2, extra: tuple[str, ...] = ()) -> Path:
    """A session run by the installed cloudtask: each line is a job's exit status."""
    result = cloudtask(
        "--force",
        f"--split={split}",
        *extra,
        "sh",
        "-c",
        "echo out $1; echo more $1 >&2; exit $1",
        "x",
        input="".join(f"{line}\n" for line in lines).encode(),
    )
    assert "Traceback" not in result.stderr, result.stderr
    ids = sorted(int(p.name) for p in sessions_dir().iterdir() if p.name.isdigit())
    return sessions_dir() / str(ids[-1])


def new_store(config: dict[str, str] | None = None, jobs: int = 0) -> tuple[Path, Store]:
    """An empty crafted session in the test's sessions directory."""
    session = SessionDir.create(sessions_dir())
    store = Store.create(session.path)
    store.write(keys.COMMAND, JOB)
    store.set_config(config or {"split": "2", "provider": "hub"})
    if jobs:
        store.add_jobs((n, n, f"{JOB} {n}") for n in range(1, jobs + 1))
    return session.path, store


def attempt(
    store: Store,
    job: int,
    worker: str,
    start: float,
    end: float,
    outcome: str,
    state: JobState,
    exit_status: int | None = None,
    tail: str = "",
    usage: Usage | None = None,
) -> None:
    number = store.start_attempt(job, worker, T0 + start)
    end_of = AttemptEnd(outcome, exit_status, None, tail, usage)
    store.end_attempt(number, job, state, end_of, T0 + end)


def launched_session(slots: dict[str, int] | None = None) -> Path:
    """Two launched workers, both destroyed, with prices; `slots`: the jobs at
    once recorded for a worker (--slots; a worker absent ran one).

    hub1 (t3.small, $0.0208/h): launched at T0, destroyed T0+1800 s: 0.5 h;
      job 1 ok 900 s, job 2 failed 450 s: work 1350 s, efficiency 0.75.
    hub2 (m5.large, $0.096/h): launched at T0, destroyed T0+3600 s: 1 h;
      job 3 ok 1800 s, job 4 timeout 900 s: work 2700 s, efficiency 0.75.
    """
    path, store = new_store(jobs=5)
    store.begin_run(T0)
    for name, count in (slots or {}).items():
        store.worker_slots(name, count)
    store.intend_instance("tok1", "hub", "hub1", "t3.small", 0.0208, T0 - 5)
    store.instance_launched("tok1", "i-0001", T0)
    store.instance_running("tok1", "10.0.0.1", T0 + 30)
    store.intend_instance("tok2", "hub", "hub2", "m5.large", 0.096, T0 - 5)
    store.instance_launched("tok2", "i-0002", T0)
    store.instance_running("tok2", "10.0.0.2", T0 + 40)
    attempt(store, 1, "hub1", 60, 960, "ok", JobState.OK, 0, "out 1")
    attempt(store, 2, "hub1", 1000, 1450, "failed", JobState.FAILED, 3, "line a\nline b\nboom")
    attempt(store, 3, "hub2", 100, 1900, "ok", JobState.OK, 0, "out 3")
    attempt(store, 4, "hub2", 2000, 2900, "timeout", JobState.TIMEOUT, None, "slow")
    store.instance_destroyed("tok1", T0 + 1800)
    store.instance_destroyed("tok2", T0 + 3600)
    store.end_run(T0 + 3600, "incomplete")
    store.close()
    return path


MIB = 1 << 20
LONG_COMMAND = "render --scene=" + "very-long-scene-name-" * 10 + " 2"


def used_session() -> Path:
    """Four jobs on two workers, with what each attempt used.

    job 1: failed (1.5 + 0.5 s CPU, 64 MiB, 2048 bytes), then ok (2.0 + 0.5 s,
      96 MiB, 1024 bytes): 4.5 s, peak 96 MiB;
    job 2 (LONG_COMMAND): 10.0 + 2.0 s, 512 MiB, 3 MiB of output;
    job 3: on a worker without the agent: 100 bytes, nothing else measured;
    job 4: 0.25 + 0 s, 1 MiB, no output.
    In all 16.75 s of CPU (user 13.75, system 3.0), 3,148,900 bytes of output.
    """
    path, store = new_store()
    store.add_jobs(
        [(1, 1, f"{JOB} 1"), (2, 2, LONG_COMMAND), (3, 3, f"{JOB} 3"), (4, 4, f"{JOB} 4")]
    )
    store.begin_run(T0)
    ok = JobState.OK
    attempt(
        store, 1, "w1", 0, 2, "failed", JobState.PENDING, 1, "", Usage(1.5, 0.5, 64 * MIB, 2048)
    )
    attempt(store, 2, "w2", 0, 12, "ok", ok, 0, "", Usage(10.0, 2.0, 512 * MIB, 3 * MIB))
    attempt(store, 1, "w1", 2, 5, "ok", ok, 0, "", Usage(2.0, 0.5, 96 * MIB, 1024))
    attempt(store, 3, "w1", 5, 6, "ok", ok, 0, "", Usage(output_bytes=100))
    attempt(store, 4, "w2", 12, 13, "ok", ok, 0, "", Usage(0.25, 0.0, MIB, 0))
    store.end_run(T0 + 13, "finished")
    store.close()
    return path


def halted_session(
    reason: str | None,
    config: dict[str, str],
    figure: float | None = None,
) -> Path:
    """A launched worker on a halted run: hub1 ($4/h) from T0 to T0+1800 s
    ($2.00), job 1 ok, jobs 2-4 pending. `reason`: what cli.py recorded as the
    stop reason (None: a store older than that record); `figure`: what
    --budget stopped the run on."""
    path, store = new_store(config={"split": "1", "provider": "hub", **config}, jobs=4)
    store.begin_run(T0)
    store.intend_instance("tok1", "hub", "hub1", "t3.small", 4.0, T0)
    store.instance_launched("tok1", "i-0001", T0)
    attempt(store, 1, "hub1", 60, 960, "ok", JobState.OK, 0, "out 1")
    if figure is not None:
        store.budget_passed(figure)
    store.instance_destroyed("tok1", T0 + 1800)
    store.end_run(T0 + 1800, "halted", reason)
    store.close()
    return path


def free_lock(path: Path) -> None:
    """A lock file as a dead controller leaves it: its pid inside, nobody holding it."""
    (path / "lock").write_text("999999\n")
    os.chmod(path / "lock", 0o600)


def schema() -> dict[str, Any]:
    text = resources.files("cloudtask.report").joinpath("digest.schema.json").read_text()
    return dict(json.loads(text))


def validate(data: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.Draft202012Validator(
        schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(data)


def big_session(jobs: int) -> Path:
    """`jobs` jobs: every 10th failed, the rest ok, the last 1000 pending; 4 workers."""
    path, store = new_store(jobs=jobs)
    store.begin_run(T0)
    done = jobs - 1000
    rows = []
    for n in range(1, done + 1):
        failed = n % 10 == 0
        start = T0 + (n - 1) // 4 * 0.5
        rows.append(
            (
                n,
                f"local{(n - 1) % 4 + 1}",
                start,
                start + 0.4,
                "failed" if failed else "ok",
                1 if failed else 0,
                f"output of job {n}",
            )
        )
    # Written with SQL in one transaction: Store commits each attempt on its own,
    # which would take minutes for a session this size.
    with store.db:
        for start in range(0, len(rows), INGEST_BATCH):
            store.db.executemany(
                "INSERT INTO attempts (job, worker, started, ended, outcome, exit_status, tail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows[start : start + INGEST_BATCH],
            )
        store.db.execute(
            "UPDATE jobs SET state = CASE WHEN id % 10 = 0 THEN 'failed' ELSE 'ok' END, "
            "attempts = 1 WHERE id <= ?",
            (done,),
        )
    store.end_run(T0 + done / 8, "aborted")
    store.close()
    return path
