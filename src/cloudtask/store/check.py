"""Whether a finished session's store adds up: the one consistency check.

The store is the record a user trusts: every job's state, every attempt,
every launched instance. After a session that finished, whatever faults it
went through, it must add up (`check_finished`):

- the jobs are exactly 1..N, every one ok, with exactly one ok attempt, and
  that attempt is the job's last (nothing ran after a job was done); no
  attempt names a job that does not exist;
- no attempt is left open (no outcome), every outcome is a known one, only
  an attempt closed on resume as cut off (`lost`) lacks an end time, and no
  attempt ends before it starts;
- a job's counted attempts (`jobs.attempts`) are its ok/failed/timeout ones;
- the session's state is `finished` (also after a controller killed or
  aborted after the last job ended, once a resume found nothing to run), it
  has an end time, and no session key of a run is still recorded as possibly
  left on a worker;
- every launched instance record is closed (destroyed), in time order, and
  names an instance id at most once.

With `cut_off` (the jobs running at each SIGKILL of the controller, a job once
per kill), nothing but the kills may have cut an attempt off: the only
attempts that are not ok are those closed as lost on resume, with no end
time, exactly one for each job in `cut_off`, so no more jobs ran twice than
were running at the kills.

It reads the store through the reader, streaming: a million-job session is
checked in bounded memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import meta
from .reader import StoreReader
from .records import COUNTED, OUTCOMES, AttemptRecord, InstanceRecord, JobRecord

JOB_PROBLEMS_SHOWN = 50  # lines about single jobs, then a count of the rest


@dataclass
class StoreCheck:
    """The problems found (empty: consistent) and the figures read on the way."""

    problems: list[str] = field(default_factory=list)
    jobs: int = 0  # job records
    states: dict[str, int] = field(default_factory=dict)  # jobs by state
    ok_attempts: int = 0
    jobs_ok: int = 0  # jobs with an ok attempt
    open_attempts: int = 0  # attempts with no outcome
    lost: list[int] = field(default_factory=list)  # jobs of attempts closed as lost, no end
    other_outcomes: Counter[str] = field(default_factory=Counter)  # the other ended attempts
    ran_twice: int = 0  # jobs with more than one attempt
    runs: int = 0  # the session's runs (meta runs)
    instances: int = 0  # instance records
    open_instances: int = 0  # ... not recorded as destroyed


def check_finished(
    reader: StoreReader, jobs: int, *, cut_off: Iterable[int] | None = None
) -> StoreCheck:
    """Check the store of a finished session of `jobs` jobs (see the module's rules)."""
    check = StoreCheck()
    with reader.snapshot():
        _check_session(reader, check)
        _check_jobs(reader, jobs, check)
        _check_instances(reader.instances(), check)
    if cut_off is not None:
        _check_cut_off(Counter(cut_off), check)
    return check


def _check_session(reader: StoreReader, check: StoreCheck) -> None:
    check.runs = reader.meta(meta.RUNS) or 0
    state = reader.meta(meta.STATE)
    if state != "finished":
        check.problems.append(f"session state is {state!r}, not 'finished'")
    if reader.meta(meta.ENDED) is None:
        check.problems.append("session has no end time")
    keys = reader.session_keys()
    if keys:
        check.problems.append(f"session keys still recorded as left on workers: {len(keys)}")


def _check_jobs(reader: StoreReader, jobs: int, check: StoreCheck) -> None:
    problems: list[str] = []
    first_ids: list[int] = []
    in_order = True
    not_ok: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for job, attempts in reader.jobs_with_attempts():
        check.jobs += 1
        in_order = in_order and job.id == check.jobs
        if len(first_ids) < 10:
            first_ids.append(job.id)
        states[job.state] += 1
        if job.state != "ok":
            not_ok[job.state] += 1
        _tally(attempts, check)
        problems.extend(_job_problems(job, attempts))
    check.states = dict(states)
    found = []
    if not in_order or check.jobs != jobs:
        found.append(f"job ids are not 1..{jobs}: {check.jobs} jobs, {_few(first_ids, check.jobs)}")
    orphans = reader.orphan_attempts()
    if orphans:
        found.append(f"attempts of jobs that do not exist: {_few(orphans, len(orphans))}")
    if not_ok:
        found.append(f"jobs not ok: {dict(not_ok)}")
    shown = problems[:JOB_PROBLEMS_SHOWN]
    if len(problems) > len(shown):
        shown.append(f"... and {len(problems) - len(shown)} more problems with single jobs")
    check.problems += found + shown


def _tally(attempts: list[AttemptRecord], check: StoreCheck) -> None:
    outcomes = [attempt.outcome for attempt in attempts]
    check.ok_attempts += outcomes.count("ok")
    check.jobs_ok += "ok" in outcomes
    check.open_attempts += outcomes.count(None)
    check.ran_twice += len(attempts) > 1
    for a in attempts:
        if a.outcome == "lost" and a.ended is None:
            check.lost.append(a.job)
        elif a.outcome not in ("ok", None):
            check.other_outcomes[a.outcome] += 1


def _job_problems(job: JobRecord, attempts: list[AttemptRecord]) -> list[str]:
    found = []
    number = job.id
    outcomes = [a.outcome for a in attempts]
    if outcomes.count("ok") != 1:
        found.append(f"job {number}: {outcomes.count('ok')} ok attempts (outcomes {outcomes})")
    elif attempts[-1].outcome != "ok":
        found.append(f"job {number}: attempts after its ok one (outcomes {outcomes})")
    if job.state == "ok" and (not attempts or attempts[-1].outcome != "ok"):
        found.append(f"job {number}: state ok but its last attempt is {outcomes[-1:]}")
    if job.attempts != sum(outcome in COUNTED for outcome in outcomes):
        found.append(f"job {number}: {job.attempts} counted attempts, outcomes {outcomes}")
    for a in attempts:
        if a.outcome is None:
            found.append(f"job {number}: attempt {a.id} on {a.worker} still open")
        elif a.outcome not in OUTCOMES:
            found.append(f"job {number}: attempt {a.id} has unknown outcome {a.outcome!r}")
        elif a.ended is None and a.outcome != "lost":
            found.append(f"job {number}: attempt {a.id} ({a.outcome}) has no end time")
        if a.ended is not None and a.ended < a.started:
            found.append(f"job {number}: attempt {a.id} ends before it starts")
    return found


def _check_cut_off(running: Counter[int], check: StoreCheck) -> None:
    """Only the kills cut attempts off: one lost attempt per job running at each."""
    if check.other_outcomes:
        check.problems.append(f"other attempts: {dict(check.other_outcomes)}")
    lost = Counter(check.lost)
    if lost != running:
        check.problems.append(
            f"attempts closed as lost for jobs {sorted(lost.elements())[:20]}, but running at "
            f"the kills: {sorted(running.elements())[:20]}"
        )
    if check.ran_twice > running.total():
        check.problems.append(
            f"jobs that ran more than once: {check.ran_twice}, more than were running at "
            f"the kills ({running.total()})"
        )


def _check_instances(records: list[InstanceRecord], check: StoreCheck) -> None:
    check.instances = len(records)
    ids = Counter(r.instance_id for r in records if r.instance_id is not None)
    for instance_id, count in ids.items():
        if count > 1:
            check.problems.append(f"instance {instance_id} recorded {count} times")
    for r in records:
        what = f"instance {r.name} ({r.instance_id or 'no id'})"
        if r.destroyed is None:
            check.open_instances += 1
            check.problems.append(f"{what} not recorded as destroyed")
        times = [t for t in (r.intended, r.launched, r.running, r.destroyed) if t is not None]
        if times != sorted(times):
            check.problems.append(f"{what}: times out of order {times}")
        if r.instance_id is None and r.destroyed is not None and not r.note:
            check.problems.append(f"{what}: closed with no id and no note")


def _few(values: list[int], total: int, limit: int = 10) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f", ... ({total} in all)" if total > limit else "")
