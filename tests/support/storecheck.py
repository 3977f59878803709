"""Read a session's SQLite store after the end and say what is inconsistent in it.

The store is the record a user trusts (src/cloudtask/store.py has the schema):
every job's state, every attempt, every launched instance. After a session
that finished, whatever faults it went through, it must add up:

- the jobs are exactly 1..N, every one ok, with exactly one ok attempt, and
  that attempt is the job's last (nothing ran after a job was done);
- no attempt is left open (no outcome), every outcome is a known one, only
  an attempt closed on resume as cut off (`lost`) lacks an end time, and no
  attempt ends before it starts;
- a job's counted attempts (`jobs.attempts`) are its ok/failed/timeout ones;
- the session's state is `finished` (also after a controller killed or
  aborted after the last job ended, once a resume found nothing to run), and
  no session key of a run is still recorded as possibly left on a worker;
- every launched instance record is closed (destroyed), in time order, and
  names an instance id at most once.

`check_store` returns the problems as lines (empty: consistent) and what it
read, so the caller can also explain duplicates from the attempts.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

OUTCOMES = {"ok", "failed", "timeout", "stopped", "lost"}
COUNTED = {"ok", "failed", "timeout"}  # outcomes that use up a try (store.end_attempt)
CUT_OFF = {"stopped", "lost"}  # the attempt did not end by itself: a fault or an abort ended it


@dataclass(frozen=True)
class Attempt:
    id: int
    job: int
    worker: str
    started: float
    ended: float | None
    outcome: str | None


@dataclass
class StoreReport:
    problems: list[str] = field(default_factory=list)
    attempts: dict[int, list[Attempt]] = field(default_factory=dict)  # by job, in order
    instances: int = 0  # instance records
    open_instances: int = 0  # not recorded as destroyed
    runs: int = 0  # the session's runs (meta `runs`)

    def cut_off(self, job: int) -> list[Attempt]:
        return [a for a in self.attempts.get(job, []) if a.outcome in CUT_OFF]


def check_store(path: Path, jobs: int) -> StoreReport:
    """Check the store at path (SESSIONS/ID/store.sqlite) of a finished session of `jobs` jobs."""
    report = StoreReport()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        _check_session(db, report)
        _check_jobs(db, jobs, report)
        _check_instances(db, report)
    finally:
        db.close()
    return report


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    return {str(key): str(value) for key, value in db.execute("SELECT key, value FROM meta")}


def _check_session(db: sqlite3.Connection, report: StoreReport) -> None:
    meta = _meta(db)
    report.runs = int(meta.get("runs", "0"))
    if meta.get("state") != "finished":
        report.problems.append(f"session state is {meta.get('state')!r}, not 'finished'")
    if not meta.get("ended"):
        report.problems.append("session has no end time")
    keys = json.loads(meta.get("session_keys") or "[]")
    if keys:
        report.problems.append(f"{len(keys)} session keys still recorded as left on workers")


def _check_jobs(db: sqlite3.Connection, jobs: int, report: StoreReport) -> None:
    problems = report.problems
    rows = db.execute("SELECT id, state, attempts FROM jobs ORDER BY id").fetchall()
    ids = [row[0] for row in rows]
    if ids != list(range(1, jobs + 1)):
        problems.append(f"job ids are not 1..{jobs}: {len(ids)} jobs, {_few(ids)}")
    for row in db.execute(
        "SELECT id, job, worker, started, ended, outcome FROM attempts ORDER BY id"
    ):
        attempt = Attempt(*row)
        report.attempts.setdefault(attempt.job, []).append(attempt)
    unknown_jobs = set(report.attempts) - set(ids)
    if unknown_jobs:
        problems.append(f"attempts of jobs that do not exist: {_few(sorted(unknown_jobs))}")
    not_ok = Counter(state for _, state, _ in rows if state != "ok")
    if not_ok:
        problems.append(f"jobs not ok: {dict(not_ok)}")
    for job, state, counted in rows:
        problems.extend(_job_problems(job, state, counted, report.attempts.get(job, [])))


def _job_problems(job: int, state: str, counted: int, attempts: list[Attempt]) -> list[str]:
    found = []
    outcomes = [a.outcome for a in attempts]
    if outcomes.count("ok") != 1:
        found.append(f"job {job}: {outcomes.count('ok')} ok attempts (outcomes {outcomes})")
    elif attempts[-1].outcome != "ok":
        found.append(f"job {job}: attempts after its ok one (outcomes {outcomes})")
    if state == "ok" and (not attempts or attempts[-1].outcome != "ok"):
        found.append(f"job {job}: state ok but its last attempt is {outcomes[-1:]}")
    if counted != sum(outcome in COUNTED for outcome in outcomes):
        found.append(f"job {job}: {counted} counted attempts, outcomes {outcomes}")
    for a in attempts:
        if a.outcome is None:
            found.append(f"job {job}: attempt {a.id} on {a.worker} still open")
        elif a.outcome not in OUTCOMES:
            found.append(f"job {job}: attempt {a.id} has unknown outcome {a.outcome!r}")
        elif a.ended is None and a.outcome != "lost":
            found.append(f"job {job}: attempt {a.id} ({a.outcome}) has no end time")
        if a.ended is not None and a.ended < a.started:
            found.append(f"job {job}: attempt {a.id} ends before it starts")
    return found


def _check_instances(db: sqlite3.Connection, report: StoreReport) -> None:
    rows = db.execute(
        "SELECT name, instance_id, intended, launched, running, destroyed, note "
        "FROM instances ORDER BY rowid"
    ).fetchall()
    report.instances = len(rows)
    ids = Counter(row[1] for row in rows if row[1] is not None)
    for instance_id, count in ids.items():
        if count > 1:
            report.problems.append(f"instance {instance_id} recorded {count} times")
    for name, instance_id, intended, launched, running, destroyed, note in rows:
        what = f"instance {name} ({instance_id or 'no id'})"
        if destroyed is None:
            report.open_instances += 1
            report.problems.append(f"{what} not recorded as destroyed")
        times = [t for t in (intended, launched, running, destroyed) if t is not None]
        if times != sorted(times):
            report.problems.append(f"{what}: times out of order {times}")
        if instance_id is None and destroyed is not None and not note:
            report.problems.append(f"{what}: closed with no id and no note")


def _few(values: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")
