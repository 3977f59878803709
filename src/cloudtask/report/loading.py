"""Reading a session into its digest, without disturbing it.

This is the only part of the report that touches the disk. It reads the
session's store through `store.StoreReader` (read-only: a controller may be
writing it at that very moment, WAL mode lets both go on), everything in one
snapshot, so counts, workers and jobs describe the same instant. It never
takes the session lock; it only probes whether a controller holds it, which
is how a session stored as "running" whose controller died is told apart (it
is shown as "interrupted").

Sessions can hold a million jobs, so the digest is built from the reader's
aggregates (counts by state, one row per worker) and lists at most `limit`
jobs of each kind (pending, running, not ok, ok; the first ones by id).
`limit=None` lists every job; `iter_jobs` streams every job and its attempts
instead of holding them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import OPTIONS
from ..config import dollars as dollars_option
from ..cost import Projection, projection, seconds_left
from ..store import SCHEMA_VERSION, STORE_NAME, AttemptRecord, InstanceRecord, JobRecord
from ..store import meta as meta_keys
from ..store.reader import ReadError, StoreReader
from .bars import RowBuilder
from .model import (
    DEFAULT_LIMIT,
    JOB_STATES,
    MOST_SHOWN,
    NOT_OK_STATES,
    TIMELINE_BARS,
    TIMELINE_COLUMNS,
    TIMELINE_MIN_COLUMNS,
    TIMELINE_ROWS,
    Attempt,
    Budget,
    Cost,
    Counts,
    Digest,
    DigestError,
    Instance,
    Job,
    JobLists,
    JobUse,
    Life,
    Resources,
    SessionInfo,
    Summary,
    Timeline,
    TimelineRow,
    Worker,
)

_SECRETS = frozenset(option.name for option in OPTIONS if option.secret)


def lock_held(session_dir: Path) -> bool:
    """Whether a controller (or the watchdog) holds the session's lock right now.

    A shared lock taken and dropped at once on a descriptor of our own: it
    fails only while someone holds the exclusive lock, and never keeps a
    starting controller out for more than that instant.
    """
    try:
        fd = os.open(session_dir / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # no controller ever locked it
    except OSError as exc:
        raise DigestError(f"{session_dir}: cannot check the session lock: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise DigestError(f"{session_dir}: cannot check the session lock: {exc.strerror}") from None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def check_session_dir(session_dir: Path) -> Path:
    """The store of a session directory; DigestError when it is not one."""
    if not session_dir.is_dir():
        raise DigestError(f"{session_dir}: no such session directory")
    store = session_dir / STORE_NAME
    if not store.is_file():
        raise DigestError(f"{session_dir}: not a session directory (no {STORE_NAME})")
    return store


@contextlib.contextmanager
def _reading(session_dir: Path) -> Iterator[StoreReader]:
    """The store read-only, inside one read transaction (one consistent snapshot)."""
    path = check_session_dir(session_dir)
    try:
        store = StoreReader.open(session_dir)
    except ReadError as exc:
        raise DigestError(f"{path}: cannot open the session store: {exc}") from None
    try:
        with store.snapshot():
            yield store
    except ReadError as exc:
        raise DigestError(f"{path}: not a readable session store: {exc}") from None
    finally:
        store.close()


def load(
    session_dir: Path,
    *,
    limit: int | None = DEFAULT_LIMIT,
    timeline: bool = False,
    now: float | None = None,
) -> Digest:
    """The digest of the session in `session_dir`, read without disturbing it.

    limit: jobs listed of each kind (None: every job). timeline: also gather
    the timeline (one pass over every attempt: for the picture). now: the
    time the digest is "as of" (for live sessions and undestroyed instances).
    Raises DigestError when the directory is not a readable session.
    """
    session_dir = Path(session_dir)
    check_session_dir(session_dir)
    generated = time.time() if now is None else now
    held = lock_held(session_dir)
    logged = logged_workers(session_dir)  # before the snapshot: all of them are in it
    with _reading(session_dir) as store:
        meta = _meta(store, session_dir)
        if meta.state in (None, "running") and not held:
            # It may have started between the probe and the snapshot.
            held = lock_held(session_dir)
        reader = _Reader(store, held, generated)
        counts = reader.counts()
        workers = reader.workers(logged)
        last_seen = reader.last_seen(meta, workers)
        info = _session_info(session_dir, meta, held, generated, last_seen)
        jobs = reader.job_lists(limit)
        resources = reader.resources()
        drawn = reader.timeline(info, workers, last_seen) if timeline else None
    config = meta.config
    figures = projection(reader.records, generated, _time_left(info, counts))
    return Digest(
        session=info,
        counts=counts,
        config=config,
        workers=workers,
        jobs=jobs,
        cost=_cost(workers, figures),
        generated=generated,
        timeline=drawn,
        budget=_budget(info, dict(config), figures, bool(reader.records), meta),
        resources=resources,
    )


def load_summary(session_dir: Path) -> Summary:
    """Just the session, its counts and its instances not destroyed: what
    `--list` shows, cheap for big sessions."""
    session_dir = Path(session_dir)
    check_session_dir(session_dir)
    generated = time.time()
    held = lock_held(session_dir)
    with _reading(session_dir) as store:
        meta = _meta(store, session_dir)
        reader = _Reader(store, held, generated)
        info = _session_info(session_dir, meta, held, generated, reader.last_seen(meta, ()))
        return Summary(info, reader.counts(), reader.not_destroyed())


def left_running(sessions: Path, recent: int = 50) -> list[tuple[int, int]]:
    """(session id, launched instances not recorded destroyed) of the `recent`
    newest sessions under `sessions` that no controller or watchdog holds:
    whoever could destroy them is gone. A session that cannot be read is skipped."""
    try:
        ids = sorted((int(e.name) for e in sessions.iterdir() if e.name.isdigit()), reverse=True)
    except OSError:
        return []
    found = []
    for session_id in ids[:recent]:
        session_dir = sessions / str(session_id)
        if not (session_dir / STORE_NAME).is_file() or lock_held(session_dir):
            continue
        try:
            with _reading(session_dir) as store:
                count = store.open_instances()
        except (DigestError, ReadError):
            continue
        if count:
            found.append((session_id, count))
    return sorted(found)


def iter_jobs(digest: Digest) -> Iterator[Job]:
    """Every job of the digest's session with its attempts, in id order, streamed.

    Two cursors walk jobs and attempts side by side (both in id order), so a
    million jobs never sit in memory at once. The snapshot is the store as it
    is when the iteration starts, not the digest's.
    """
    with _reading(digest.session.directory) as store:
        yield from _Reader(store, digest.session.live, digest.generated).every_job()


@dataclass(frozen=True)
class _Meta:
    """What the digest shows of the session's meta table. A value cloudtask
    would not have written reads as absent: a report shows what it can."""

    schema_version: int
    state: str | None
    command: str | None
    started: float | None
    ended: float | None
    runs: int
    stop_reason: str | None
    budget_figure: float | None
    config: tuple[tuple[str, str], ...]


def _meta(store: StoreReader, session_dir: Path) -> _Meta:
    if not {"meta", "jobs", "attempts"} <= store.tables():
        raise DigestError(f"{session_dir}: not a cloudtask session store")
    raw_version = store.meta_text(meta_keys.SCHEMA_VERSION)
    try:
        version = int(raw_version or "0")
    except ValueError:
        version = 0
    if not 1 <= version <= SCHEMA_VERSION:
        raise DigestError(
            f"{session_dir}: store schema version {raw_version} is not one "
            f"this cloudtask knows (1 to {SCHEMA_VERSION})"
        )
    return _Meta(
        schema_version=version,
        state=store.meta_text(meta_keys.STATE),
        command=store.meta_text(meta_keys.COMMAND),
        started=store.meta_or_none(meta_keys.STARTED),
        ended=store.meta_or_none(meta_keys.ENDED),
        runs=int(_number(store.meta_text(meta_keys.RUNS)) or 0),
        stop_reason=store.meta_text(meta_keys.STOP_REASON),
        budget_figure=store.meta_or_none(meta_keys.BUDGET_FIGURE),
        config=_config(store.meta_text(meta_keys.CONFIG)),
    )


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _session_info(
    session_dir: Path,
    meta: _Meta,
    live: bool,
    generated: float,
    last_seen: float | None,
) -> SessionInfo:
    stored = meta.state
    if stored is None:
        state = "starting" if live else "unstarted"
    elif stored == "running" and not live:
        state = "interrupted"
    else:
        state = stored
    started = meta.started
    # The stored end belongs to an earlier run while one runs, or died running.
    ended = None if state in ("running", "interrupted") else meta.ended
    until = ended
    if until is None:
        until = generated if live else last_seen
    elapsed = None if started is None or until is None else max(0.0, until - started)
    directory = session_dir.absolute()
    name = session_dir.resolve().name
    return SessionInfo(
        id=int(name) if name.isdigit() else None,
        directory=directory,
        state=state,
        stored_state=stored,
        live=live,
        started=started,
        ended=ended,
        elapsed=elapsed,
        command=meta.command,
        runs=meta.runs,
        schema_version=meta.schema_version,
        stop_reason=_stop_reason(state, meta),
    )


def _stop_reason(state: str, meta: _Meta) -> str | None:
    """What halted a halted session: as recorded, or in a store older than the
    record, whichever of --halt and --budget its options had (if only one)."""
    if state != "halted":
        return None
    if recorded := meta.stop_reason:
        return recorded
    options = dict(meta.config)
    given = [f"--halt={options['halt']}"] if "halt" in options else []
    if (budget := _budget_option(options)) is not None:
        given.append(f"--budget=${budget:g}")
    return given[0] if len(given) == 1 else None


def _budget_option(options: dict[str, str]) -> float | None:
    """The stored --budget, in dollars."""
    try:
        return dollars_option(options["budget"])
    except (KeyError, ValueError):
        return None


def _time_left(info: SessionInfo, counts: Counts) -> float | None:
    """The time the session's jobs left still need, as cost.seconds_left
    reckons it for the run that drives it (None: unknown)."""
    left = counts.pending + counts.running
    if not left:
        return 0.0
    # Only a first run's pace is known: a resumed one's start is not stored.
    if not info.live or info.runs != 1 or info.started is None or info.elapsed is None:
        return None
    return seconds_left(left, counts.total - left, info.elapsed)


def _budget(
    info: SessionInfo,
    options: dict[str, str],
    figures: Projection | None,
    launched: bool,
    meta: _Meta,
) -> Budget | None:
    limit = _budget_option(options)
    if limit is None:
        return None
    stopped = (info.stop_reason or "").startswith("--budget=")
    if figures is None:
        spent = None if launched else 0.0
        projected = None
    else:
        spent, projected = figures.spent, figures.projected
    if stopped:
        projected = meta.budget_figure
    return Budget(limit, spent, projected, stopped)


def _config(text: str | None) -> tuple[tuple[str, str], ...]:
    """The stored options; a secret, should an old store hold one, is left out."""
    try:
        values = json.loads(text or "{}")
    except ValueError:
        return ()
    if not isinstance(values, dict):
        return ()
    return tuple(
        sorted((str(name), str(value)) for name, value in values.items() if name not in _SECRETS)
    )


def _cost(workers: Sequence[Worker], figures: Projection | None) -> Cost | None:
    instances = [instance for worker in workers for instance in worker.instances]
    if not instances:
        return None
    return Cost(
        instances=len(instances),
        instance_seconds=sum(instance.seconds for instance in instances),
        slot_seconds=sum(worker.capacity or 0.0 for worker in workers if worker.launched),
        work_seconds=sum(worker.work_seconds for worker in workers if worker.launched),
        # The live view and --budget take their figures from the same function.
        total=None if figures is None else figures.spent,
        unpriced=sum(1 for instance in instances if instance.hourly_price is None),
        projected=None if figures is None else figures.projected,
    )


def logged_workers(session_dir: Path) -> list[str]:
    """The workers that have a log in the session directory: every worker that
    got as far as connecting, whether or not it ran a job (SessionDir.worker_log;
    sessions have kept these logs since the first version)."""
    try:
        with os.scandir(session_dir / "workers") as entries:
            # Not an editor's swap file (.local1.swp) beside a log being read.
            return [e.name for e in entries if not e.name.startswith(".") and e.is_file()]
    except OSError:  # no such directory, or not readable: the store's workers still show
        return []


def _no_jobs(name: str, instances: tuple[Instance, ...], slots: int) -> Worker:
    """A worker that ran no job; a launched one lived (and cost) all the same."""
    lifetime = sum(instance.seconds for instance in instances) if instances else None
    return Worker(
        name=name,
        attempts=0,
        ok=0,
        failed=0,
        timeout=0,
        lost=0,
        stopped=0,
        running=0,
        unknown_end=0,
        work_seconds=0.0,
        first_started=None,
        last_ended=None,
        lifetime=lifetime,
        instances=instances,
        slots=slots,
    )


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """local2 before local10."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part
    )


class _Reader:
    """The digest's view of one snapshot of a store."""

    def __init__(self, store: StoreReader, live: bool, generated: float) -> None:
        self.store = store
        self.live = live
        self.generated = generated
        self.records: list[InstanceRecord] = []

    def counts(self) -> Counts:
        found = self.store.state_counts()
        return Counts(**{state: found.get(state, 0) for state in JOB_STATES})

    def instances(self) -> list[Instance]:
        """The launched instances; their records are kept for cost.spent."""
        self.records = self.store.instances()
        return [
            Instance(
                r.name,
                r.provider,
                r.size,
                r.hourly_price,
                r.instance_id,
                r.address,
                r.intended,
                r.launched,
                r.running,
                r.destroyed,
                r.note,
                # cloudtask.cost's rule: from the launch (or its intent) to the
                # destruction, or to now.
                max(
                    0.0,
                    (self.generated if r.destroyed is None else r.destroyed)
                    - (r.intended if r.launched is None else r.launched),
                ),
            )
            for r in self.records
        ]

    def not_destroyed(self) -> int:
        """How many launched instances are not recorded destroyed."""
        return self.store.open_instances()

    def workers(self, logged: Iterable[str] = ()) -> tuple[Worker, ...]:
        """One row per worker name, aggregated by the store (never one per attempt);
        `logged` names the workers with a log, those with no attempt included."""
        rows = self.store.worker_totals()
        slots = self.store.worker_slots()  # a worker absent ran one job at a time
        by_name: dict[str, list[Instance]] = {}
        for instance in self.instances():
            by_name.setdefault(instance.name, []).append(instance)
        workers: dict[str, Worker] = {}
        for row in rows:
            (name, attempts, ok, failed, timeout, lost, stopped, open_, unknown_end) = row[:9]
            work, first, last_end, last_start = row[9:]
            # An attempt with no outcome runs under a live controller; with a
            # dead one, it is lost (as the next resume records it).
            running = open_ if self.live else 0
            last = max(x for x in (last_end, last_start) if x is not None)
            if running:
                last = max(last, self.generated)
            instances = tuple(by_name.pop(name, ()))
            if instances:
                lifetime: float | None = sum(instance.seconds for instance in instances)
            else:
                lifetime = last - first
            workers[name] = Worker(
                name=name,
                attempts=int(attempts),
                ok=int(ok),
                failed=int(failed),
                timeout=int(timeout),
                lost=int(lost) + (0 if self.live else int(open_)),
                stopped=int(stopped),
                running=int(running),
                unknown_end=int(unknown_end),
                work_seconds=float(work),
                first_started=first,
                last_ended=last,
                lifetime=lifetime,
                instances=instances,
                slots=slots.get(name, 1),
            )
        # Launched instances that never ran a job are workers too (they cost).
        for name, unused in by_name.items():
            workers[name] = _no_jobs(name, tuple(unused), slots.get(name, 1))
        # So is every worker that got as far as connecting (it has a log): set
        # up and released with no job left for it, or its --pre failed.
        for name in logged:
            workers.setdefault(name, _no_jobs(name, (), slots.get(name, 1)))
        return tuple(workers[name] for name in sorted(workers, key=natural_key))

    def last_seen(self, meta: _Meta, workers: Iterable[Worker]) -> float | None:
        """The last time anything is known to have happened in the session."""
        bounds = self.store.attempt_bounds()
        times = [meta.started, meta.ended, bounds.last_started, bounds.last_ended]
        for worker in workers:
            for instance in worker.instances:
                times += [
                    instance.intended,
                    instance.launched,
                    instance.running,
                    instance.destroyed,
                ]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def resources(self) -> Resources | None:
        """What the attempts used, aggregated by the store; None when nothing was
        measured (a session from before cloudtask measured anything)."""
        totals = self.store.usage_totals()
        if not totals.measured:
            return None

        def most(rows: Iterable[tuple[int, float, str]]) -> tuple[JobUse, ...]:
            return tuple(JobUse(int(job), used, str(command)) for job, used, command in rows)

        return Resources(
            measured=int(totals.measured),
            cpu_measured=int(totals.cpu_measured),
            user_cpu=float(totals.user_cpu),
            system_cpu=float(totals.system_cpu),
            max_rss=None if totals.max_rss is None else int(totals.max_rss),
            output_bytes=int(totals.output_bytes),
            most_cpu=most(self.store.most_cpu(MOST_SHOWN)),
            most_memory=most(self.store.most_memory(MOST_SHOWN)),
        )

    # -- jobs ------------------------------------------------------------------

    def _attempt(self, record: AttemptRecord) -> Attempt:
        outcome = record.outcome
        if outcome is None:
            outcome = "running" if self.live else "lost"
        return Attempt(
            record.worker,
            record.started,
            record.ended,
            outcome,
            record.exit_status,
            record.signal,
            record.tail or "",
            record.usage,
        )

    def job_lists(self, limit: int | None) -> JobLists:
        if limit is None:
            groups: dict[str, list[Job]] = {"pending": [], "running": [], "not_ok": [], "ok": []}
            for job in self.every_job():
                kind = "not_ok" if job.state in NOT_OK_STATES else job.state
                groups.setdefault(kind, []).append(job)
            return JobLists(
                None,
                tuple(groups["pending"]),
                tuple(groups["running"]),
                tuple(groups["not_ok"]),
                tuple(groups["ok"]),
            )
        rows: dict[str, list[JobRecord]] = {}
        for state in JOB_STATES:
            # The state index holds each state's jobs in id order: no sort.
            rows[state] = self.store.jobs(state, limit)
        not_ok = sorted((row for s in NOT_OK_STATES for row in rows[s]), key=lambda r: r.id)
        not_ok = not_ok[:limit]
        wanted = [*rows["pending"], *rows["running"], *not_ok, *rows["ok"]]
        attempts = self._attempts_of([row.id for row in wanted])

        def jobs(of: list[JobRecord]) -> tuple[Job, ...]:
            return tuple(_job(row, attempts.get(row.id, ())) for row in of)

        return JobLists(
            limit, jobs(rows["pending"]), jobs(rows["running"]), jobs(not_ok), jobs(rows["ok"])
        )

    def _attempts_of(self, ids: list[int]) -> dict[int, tuple[Attempt, ...]]:
        found = self.store.attempts_of(ids)
        return {job: tuple(map(self._attempt, attempts)) for job, attempts in found.items()}

    def every_job(self) -> Iterator[Job]:
        for job, attempts in self.store.jobs_with_attempts():
            yield _job(job, tuple(map(self._attempt, attempts)))

    # -- timeline --------------------------------------------------------------

    def timeline(
        self, info: SessionInfo, workers: Sequence[Worker], last_seen: float | None
    ) -> Timeline:
        """Bars per worker, merged below a column's width: bounded for any session."""
        first = self.store.attempt_bounds().first_started
        starts = [t for t in (info.started, first) if t is not None]
        starts += [life.intended for worker in workers for life in worker.instances]
        start = min(starts) if starts else self.generated
        end = self.generated if info.live else (last_seen or start)
        end = max(end, start + 0.001)  # a session of no time still gets an axis
        drawn = workers[:TIMELINE_ROWS]
        columns = max(
            TIMELINE_MIN_COLUMNS, min(TIMELINE_COLUMNS, TIMELINE_BARS // max(1, len(drawn)))
        )
        column = (end - start) / columns
        builders = {worker.name: RowBuilder(column) for worker in drawn}
        for job, worker, started, ended, outcome in self.store.attempt_times():
            builder = builders.get(worker)
            if builder is None:
                continue
            if outcome is None:
                outcome = "running" if self.live else "lost"
                if self.live:
                    ended = self.generated
            builder.add(job, started, started if ended is None else ended, outcome)
        return Timeline(
            start=start,
            end=end,
            column=column,
            rows=tuple(
                TimelineRow(
                    worker.name,
                    builders[worker.name].finish(),
                    tuple(
                        Life(
                            instance.launched
                            if instance.launched is not None
                            else instance.intended,
                            instance.destroyed,
                            instance.instance_id,
                        )
                        for instance in worker.instances
                    ),
                    builders[worker.name].dropped,
                )
                for worker in drawn
            ),
            rows_omitted=len(workers) - len(drawn),
        )


def _job(row: JobRecord, attempts: tuple[Attempt, ...]) -> Job:
    # Cast as read: a store SQLite reads may still hold values cloudtask never wrote.
    return Job(
        int(row.id), int(row.line), str(row.command), str(row.state), int(row.attempts), attempts
    )
