"""The session digest: what a session did, read from its store without disturbing it.

`load` is the only code here that touches the disk. It reads the session's
store through `store.StoreReader` (read-only: a controller may be writing it
at that very moment, WAL mode lets both go on), everything in one snapshot,
so counts, workers and jobs describe the same instant. It never takes the
session lock; it only probes whether a controller holds it, which is how a
session stored as "running" whose controller died is told apart (it is shown
as "interrupted").

Sessions can hold a million jobs, so the digest is built from the reader's
aggregates (counts by state, one row per worker) and lists at most `limit`
jobs of each kind (pending, running, not ok, ok; the first ones by id). `limit=None` lists
every job; for a machine-readable dump of a huge session, `write_json` with
`iter_jobs` streams every job and its attempts instead of holding them.

Everything else is pure: `to_text` (the digest as a mail body or terminal
page) and `to_json` (one JSON object, described by digest.schema.json) take
a Digest and return text or plain data. Times are UNIX seconds in the
dataclasses, and ISO 8601 UTC strings plus `*_unix` seconds in the JSON.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ..config import OPTIONS
from ..config import dollars as dollars_option
from ..console import plural
from ..cost import Projection, projection, seconds_left
from ..errors import CloudtaskError
from ..output import printable
from ..store import SCHEMA_VERSION, STORE_NAME, AttemptRecord, InstanceRecord, JobRecord
from ..store import meta as meta_keys
from ..store.reader import ReadError, StoreReader

FORMAT = "cloudtask-digest"
FORMAT_VERSION = 1

DEFAULT_LIMIT = 50  # jobs listed of each kind, and rows of the workers table in text
TAIL_SHOWN = 10  # last lines of output shown with a job that is not ok
COMMAND_SHOWN = 200  # characters of a command shown in text
# The timeline's resolution: attempts shorter than a column gather into one
# bar per column. A row gets TIMELINE_COLUMNS columns, fewer when many rows
# would pass TIMELINE_BARS in all (a bounded picture, whatever the session).
TIMELINE_COLUMNS = 500
TIMELINE_BARS = 6000
TIMELINE_MIN_COLUMNS = 25
TIMELINE_ROWS = 200  # workers drawn on the timeline; the rest are counted
_BARS_PER_ROW = 4 * TIMELINE_COLUMNS  # a hard bound, whatever the data

JOB_STATES = ("pending", "running", "ok", "failed", "timeout", "lost")
NOT_OK_STATES = ("failed", "timeout", "lost")
# Outcomes of one attempt: as stored, plus "running" for one a live controller runs.
OUTCOMES = ("ok", "failed", "timeout", "lost", "stopped", "running")
# How a session is shown: the stored state, or what a free lock says about it.
SESSION_STATES = (
    "running",
    "finished",
    "incomplete",
    "halted",
    "aborted",
    "interrupted",  # stored as running, but no controller holds the lock: it died
    "starting",  # no run began yet, and a controller holds the lock (reading input)
    "unstarted",  # no run began, and nobody holds the lock: it never will by itself
)

_SECRETS = frozenset(option.name for option in OPTIONS if option.secret)


class DigestError(CloudtaskError):
    """The session cannot be read: not a session directory, or a corrupt store."""


# -- the digest ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: int | None  # None: a session directory whose name is not its id (a copy)
    directory: Path
    state: str  # one of SESSION_STATES
    stored_state: str | None  # as the store has it
    live: bool  # a controller (or the watchdog) holds the session lock
    started: float | None  # the first run's start
    ended: float | None  # the last run's end; None while running or interrupted
    elapsed: float | None  # started to ended (to now while live, to the last activity if dead)
    command: str | None
    runs: int
    schema_version: int
    # What halted a halted session: --halt=SPEC or --budget=$N; None when it
    # is not halted, or when a store older than that record does not tell.
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    pending: int = 0
    running: int = 0
    ok: int = 0
    failed: int = 0
    timeout: int = 0
    lost: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.running + self.ok + self.failed + self.timeout + self.lost

    @property
    def not_ok(self) -> int:
        return self.failed + self.timeout + self.lost


@dataclass(frozen=True, slots=True)
class Instance:
    """A launched instance and what it cost."""

    name: str
    provider: str
    size: str | None
    hourly_price: float | None
    instance_id: str | None  # None: the launch call never returned one
    address: str | None
    intended: float
    launched: float | None
    running: float | None
    destroyed: float | None
    note: str | None
    # Billed life: launched (or, with no id back, the launch intent) to
    # destroyed, or to the digest's time while not destroyed (it may still bill).
    seconds: float

    @property
    def not_destroyed(self) -> bool:
        return self.destroyed is None

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    @property
    def cost(self) -> float | None:
        return None if self.hourly_price is None else self.hours * self.hourly_price


@dataclass(frozen=True, slots=True)
class Worker:
    name: str
    attempts: int  # jobs run, every attempt counted
    ok: int
    failed: int
    timeout: int
    lost: int  # including attempts whose end is unknown (the controller was killed)
    stopped: int  # stopped by an abort: pending again
    running: int  # running now, under a live controller
    unknown_end: int  # attempts with no end time: running, or lost when the controller died
    work_seconds: float  # sum of the durations of the attempts that have an end
    first_started: float | None
    last_ended: float | None  # the last known activity: an end, or a start with no end
    # First start to last end; for a launched worker, its instances' billed life.
    lifetime: float | None
    instances: tuple[Instance, ...] = ()

    @property
    def launched(self) -> bool:
        return bool(self.instances)

    @property
    def not_destroyed(self) -> bool:
        return any(instance.not_destroyed for instance in self.instances)

    @property
    def not_ok(self) -> int:
        return self.failed + self.timeout + self.lost

    @property
    def efficiency(self) -> float | None:
        """Work time over lifetime, for a launched worker."""
        if not self.launched or not self.lifetime:
            return None
        return self.work_seconds / self.lifetime


@dataclass(frozen=True, slots=True)
class Attempt:
    worker: str
    started: float
    ended: float | None  # None: running, or lost with its end unknown
    outcome: str  # one of OUTCOMES
    exit_status: int | None
    signal: int | None
    tail: str

    @property
    def duration(self) -> float | None:
        # A clock stepped back during the attempt makes no negative duration.
        return None if self.ended is None else max(0.0, self.ended - self.started)


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    line: int
    command: str
    state: str  # one of JOB_STATES
    counted_attempts: int  # the attempts that count against --retries (ok, failed, timeout)
    attempts: tuple[Attempt, ...]

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True, slots=True)
class JobLists:
    """The jobs the digest lists: at most `limit` of each kind, the first by id."""

    limit: int | None  # None: every job
    pending: tuple[Job, ...] = ()
    running: tuple[Job, ...] = ()
    not_ok: tuple[Job, ...] = ()  # failed, timeout and lost
    ok: tuple[Job, ...] = ()

    def all(self) -> list[Job]:
        return sorted((*self.pending, *self.running, *self.not_ok, *self.ok), key=lambda j: j.id)


@dataclass(frozen=True, slots=True)
class Cost:
    """Launched workers' instance time, price and use."""

    instances: int
    instance_seconds: float
    work_seconds: float  # attempts' durations on launched workers
    total: float | None  # dollars, of the instances with a price; None when none has one
    unpriced: int  # instances with no known price, left out of the total
    # Dollars when the batch ends at the present rate (cost.projection): the
    # total once no job is left; None when none can be made (no job ended
    # yet, a stopped session with jobs left, the pace of a resumed run).
    projected: float | None = None

    @property
    def instance_hours(self) -> float:
        return self.instance_seconds / 3600

    @property
    def work_hours(self) -> float:
        return self.work_seconds / 3600

    @property
    def efficiency(self) -> float | None:
        """Work hours over instance hours: the share of paid time spent on jobs."""
        return self.work_seconds / self.instance_seconds if self.instance_seconds else None


@dataclass(frozen=True, slots=True)
class Budget:
    """--budget against what launched workers cost."""

    dollars: float
    spent: float | None  # so far; None: no instance has a known price
    # The projection held to it: for a session it stopped, the figure it
    # stopped on (None: not recorded); else as of the digest (Cost.projected).
    projected: float | None
    stopped: bool  # it halted the session


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of the timeline: an attempt, or attempts gathered below a column's width.

    A bar of mixed outcomes is drawn as a stack, each outcome's share of its
    attempts in its colour; `outcome` is the one that took the most time.
    """

    start: float
    end: float
    outcome: str  # the outcome that took the most time in it
    attempts: int
    first_job: int
    last_job: int
    outcomes: tuple[tuple[str, int], ...]  # attempts of each outcome, in OUTCOMES order


@dataclass(frozen=True, slots=True)
class Life:
    """A launched instance's life on the timeline."""

    start: float  # launched (or the launch intent, when no id came back)
    end: float | None  # destroyed; None: not destroyed
    instance_id: str | None


@dataclass(frozen=True, slots=True)
class TimelineRow:
    worker: str
    bars: tuple[Bar, ...]
    lives: tuple[Life, ...]
    bars_dropped: int = 0  # over the hard bound of bars per row (overlapping data)


@dataclass(frozen=True, slots=True)
class Timeline:
    start: float
    end: float
    column: float  # seconds per column: shorter attempts next to each other merge
    rows: tuple[TimelineRow, ...]
    rows_omitted: int  # workers beyond TIMELINE_ROWS, not drawn


@dataclass(frozen=True, slots=True)
class Digest:
    session: SessionInfo
    counts: Counts
    config: tuple[tuple[str, str], ...]  # stored options, sorted by name; never a secret
    workers: tuple[Worker, ...]
    jobs: JobLists
    cost: Cost | None  # None: no launched workers
    generated: float  # when the digest was read: "now" for live and undestroyed times
    timeline: Timeline | None = field(default=None)
    budget: Budget | None = None  # None: no --budget


@dataclass(frozen=True, slots=True)
class Summary:
    """A session in one line (`--list`)."""

    session: SessionInfo
    counts: Counts
    # Launched instances not recorded destroyed: with no controller or
    # watchdog holding the session, they may still be running (and billing).
    not_destroyed: int


# -- reading a session -------------------------------------------------------------


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


def _no_jobs(name: str, instances: tuple[Instance, ...]) -> Worker:
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
            )
        # Launched instances that never ran a job are workers too (they cost).
        for name, unused in by_name.items():
            workers[name] = _no_jobs(name, tuple(unused))
        # So is every worker that got as far as connecting (it has a log): set
        # up and released with no job left for it, or its --pre failed.
        for name in logged:
            workers.setdefault(name, _no_jobs(name, ()))
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
        builders = {worker.name: _RowBuilder(column) for worker in drawn}
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


class _Bucket:
    """Attempts each shorter than a column, gathered until they span one."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.end = start
        self.first_job = 0
        self.last_job = 0
        self.time: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def add(self, job: int, start: float, end: float, outcome: str) -> None:
        if not self.count:
            self.first_job = job
        self.last_job = job
        self.end = max(self.end, end)
        self.time[outcome] = self.time.get(outcome, 0.0) + (end - start)
        self.count[outcome] = self.count.get(outcome, 0) + 1

    def bar(self) -> Bar:
        # The outcome that took the most time (then the most attempts) colours it.
        outcome = max(self.count, key=lambda o: (self.time[o], self.count[o]))
        return Bar(
            self.start,
            self.end,
            outcome,
            sum(self.count.values()),
            self.first_job,
            self.last_job,
            tuple((o, self.count[o]) for o in OUTCOMES if o in self.count),
        )


class _RowBuilder:
    """A worker's bars, from its attempts in start order.

    An attempt at least a column wide is its own bar. Shorter ones gather in
    a bucket until it spans a column (or an idle gap of a column ends it);
    buckets next to each other of one and the same outcome merge, so a long
    run of short ok jobs is one bar, while a column with failures among them
    keeps its mix. So a row has at most about two bars per column, whatever
    the number of jobs.
    """

    def __init__(self, column: float) -> None:
        self.column = column
        self.bars: list[Bar] = []
        self.bucket: _Bucket | None = None
        self.dropped = 0

    def add(self, job: int, start: float, end: float, outcome: str) -> None:
        if end - start >= self.column:
            self._flush()
            self._append(Bar(start, end, outcome, 1, job, job, ((outcome, 1),)), merge=False)
            return
        if self.bucket is not None and start - self.bucket.end >= self.column:
            self._flush()
        if self.bucket is None:
            self.bucket = _Bucket(start)
        self.bucket.add(job, start, end, outcome)
        if self.bucket.end - self.bucket.start >= self.column:
            self._flush()

    def finish(self) -> tuple[Bar, ...]:
        self._flush()
        return tuple(self.bars)

    def _flush(self) -> None:
        if self.bucket is not None:
            self._append(self.bucket.bar(), merge=True)
            self.bucket = None

    def _append(self, bar: Bar, *, merge: bool) -> None:
        previous = self.bars[-1] if self.bars else None
        if (
            merge
            and previous is not None
            and len(previous.outcomes) == len(bar.outcomes) == 1
            and previous.outcome == bar.outcome
            and bar.start - previous.end < self.column
            and (previous.attempts > 1 or previous.end - previous.start < self.column)
        ):
            counts = dict(previous.outcomes)
            for outcome, count in bar.outcomes:
                counts[outcome] = counts.get(outcome, 0) + count
            self.bars[-1] = Bar(
                previous.start,
                max(previous.end, bar.end),
                previous.outcome,
                previous.attempts + bar.attempts,
                previous.first_job,
                bar.last_job,
                tuple((o, counts[o]) for o in OUTCOMES if o in counts),
            )
            return
        if len(self.bars) >= _BARS_PER_ROW:
            self.dropped += bar.attempts
            return
        self.bars.append(bar)


# -- formatting helpers ------------------------------------------------------------


def iso(when: float | None) -> str | None:
    """ISO 8601 in UTC, to the millisecond: 2026-05-01T12:00:00.000Z."""
    if when is None:
        return None
    moment = datetime.fromtimestamp(when, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clock(when: float | None, day: float | None = None) -> str:
    """A time for people: 2026-05-01 12:00:00 UTC; just 12:00:00 on the same day as `day`."""
    if when is None:
        return "-"
    moment = datetime.fromtimestamp(when, UTC)
    if day is not None and moment.date() == datetime.fromtimestamp(day, UTC).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float | None) -> str:
    """A duration for people: 0.42 s, 42 s, 12 min 05 s, 3 h 07 min."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s"
    whole = round(seconds)
    if whole < 120:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def dollars(amount: float | None) -> str:
    if amount is None:
        return "unknown"
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def shorten(text: str, width: int = COMMAND_SHOWN) -> str:
    """One line, control characters escaped, cut to `width` characters."""
    shown = printable(text)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def how_ended(attempt: Attempt) -> str:
    """exit 1, killed by signal 9, timed out, lost (end unknown), ..."""
    if attempt.outcome == "running":
        return "running"
    if attempt.outcome == "timeout":
        return "timed out"
    if attempt.outcome == "lost":
        return "lost (worker failed)" if attempt.ended is not None else "lost (end unknown)"
    if attempt.outcome == "stopped":
        return "stopped by an abort"
    if attempt.signal is not None:
        return f"killed by signal {attempt.signal}"
    if attempt.exit_status is not None:
        return f"exit {attempt.exit_status}"
    return attempt.outcome


def counts_text(counts: Counts) -> str:
    return (
        f"{plural(counts.total, 'job')}: {counts.ok} ok, {counts.failed} failed, "
        f"{counts.timeout} timeout, {counts.lost} lost, {counts.pending} pending, "
        f"{counts.running} running"
    )


def state_note(digest: Digest) -> str | None:
    """What the session's state means for the user, when it needs saying."""
    session = digest.session
    resume = "cloudtask --resume=" + (str(session.id) if session.id is not None else "ID")
    # A store older than the stop's record, whose options had both, does not tell which.
    halted_by = session.stop_reason or ("--halt or --budget" if digest.budget else "--halt")
    notes = {
        "interrupted": "its controller died while it ran; "
        f"{resume} runs the rest (and destroys what it left)",
        "incomplete": f"no worker was left to run every job; {resume} runs the rest",
        "halted": f"stopped by {halted_by}; {resume} runs the rest",
        "aborted": f"aborted; {resume} runs the rest",
        "running": "a controller is running it now: this is a snapshot",
        "starting": "a controller is starting it (reading its jobs)",
        "unstarted": "its controller stopped before running any job",
    }
    return notes.get(session.state)


# -- the text digest ---------------------------------------------------------------


def _table(rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> list[str]:
    aligned = set(right)
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            cell.rjust(width) if c in aligned else cell.ljust(width)
            for c, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _more(shown: int, total: int, noun: str = "") -> list[str]:
    """The line that says how many were left out: "... and 3 more", "... and 1 more worker"."""
    if total <= shown:
        return []
    left = total - shown
    return [f"  ... and {plural(left, 'more ' + noun) if noun else f'{left} more'}"]


WORKER_COLUMNS = (
    "worker",
    "jobs",
    "ok",
    "not ok",
    "work",
    "lifetime",
    "instance",
    "size",
    "$/hour",
    "address",
    "",
)


def undestroyed(digest: Digest) -> list[Instance]:
    return [i for worker in digest.workers for i in worker.instances if i.not_destroyed]


def to_text(digest: Digest) -> str:
    """The digest for people: a terminal page, and the body of the mail report."""
    session, counts = digest.session, digest.counts
    limit = digest.jobs.limit
    day = session.started  # times on the session's first day are shown as times of day
    title = f"session {session.id}" if session.id is not None else str(session.directory)
    out = [f"cloudtask {printable(title)}: {session.state}"]
    if note := state_note(digest):
        out.append(f"  ({note})")
    out += [
        f"  command:   {shorten(session.command or '-')}",
        f"  started:   {clock(session.started)}",
        f"  ended:     {clock(session.ended)}",
        f"  elapsed:   {span(session.elapsed)}"
        + (f" over {plural(session.runs, 'run')}" if session.runs > 1 else ""),
        f"  jobs:      {counts_text(counts)}",
        f"  directory: {printable(str(session.directory))}",
    ]
    if leftover := undestroyed(digest):
        out += [
            "",
            f"WARNING: {plural(len(leftover), 'launched instance')} NOT DESTROYED "
            "(it may still be running, and billing):",
        ]
        out += [
            f"  {printable(i.name)}  {printable(i.instance_id or '(no id: outcome unknown)')}"
            f"  {i.provider} {i.size or ''}  launched {clock(i.launched or i.intended)}"
            for i in leftover
        ]

    out += ["", "configuration:"]
    if digest.config:
        out += _table([(name, printable(value)) for name, value in digest.config])
    else:
        out.append("  (defaults)")

    out += ["", f"workers ({len(digest.workers)}):"]
    shown_workers = digest.workers if limit is None else digest.workers[:limit]
    if digest.workers:
        rows: list[Sequence[str]] = [WORKER_COLUMNS]
        for worker in shown_workers:
            instances = worker.instances
            rows.append(
                (
                    printable(worker.name),
                    str(worker.attempts),
                    str(worker.ok),
                    str(worker.not_ok),
                    span(worker.work_seconds),
                    span(worker.lifetime),
                    ",".join(printable(i.instance_id or "?") for i in instances) or "-",
                    ",".join(sorted({i.size or "?" for i in instances})) or "-",
                    ",".join(sorted({_price(i.hourly_price) for i in instances})) or "-",
                    ",".join(printable(i.address or "-") for i in instances) or "-",
                    "NOT DESTROYED" if worker.not_destroyed else "",
                )
            )
        out += _table(rows, right=(1, 2, 3, 4, 5))
        out += _more(len(shown_workers), len(digest.workers), "worker")
    else:
        out.append("  (none)")

    jobs = digest.jobs
    if counts.running:
        was = " (were running when the controller died)" if session.state == "interrupted" else ""
        out += ["", f"running jobs ({counts.running}){was}:"]
        for job in jobs.running:
            last = job.last
            where = f" on {printable(last.worker)} since {clock(last.started, day)}" if last else ""
            out.append(f"  job {job.id}{where}: {shorten(job.command)}")
        out += _more(len(jobs.running), counts.running)

    out += ["", f"pending jobs ({counts.pending}):"]
    out += [f"  job {job.id}: {shorten(job.command)}" for job in jobs.pending]
    out += _more(len(jobs.pending), counts.pending)

    out += [
        "",
        f"failed jobs ({counts.not_ok}: {counts.failed} failed, {counts.timeout} timeout, "
        f"{counts.lost} lost):",
    ]
    for job in jobs.not_ok:
        out += _failed_job(job, day)
    out += _more(len(jobs.not_ok), counts.not_ok)

    out += ["", f"succeeded jobs ({counts.ok}):"]
    if jobs.ok:
        done: list[Sequence[str]] = [("job", "worker", "started", "time", "command")]
        for job in jobs.ok:
            last = job.last
            done.append(
                (
                    str(job.id),
                    printable(last.worker) if last else "-",
                    clock(last.started, day) if last else "-",
                    span(last.duration) if last else "-",
                    shorten(job.command, 100),
                )
            )
        out += _table(done, right=(0, 3))
    out += _more(len(jobs.ok), counts.ok)

    if digest.cost is not None or digest.budget is not None:
        out += ["", *_cost_text(digest)]
    return "\n".join(out) + "\n"


def _price(price: float | None) -> str:
    return "?" if price is None else f"{price:g}"


def _failed_job(job: Job, day: float | None) -> list[str]:
    last = job.last
    if last is None:
        return [f"  job {job.id} (line {job.line}): {job.state}, never run: {shorten(job.command)}"]
    lines = [
        f"  job {job.id} (line {job.line}): {job.state}, {how_ended(last)} on "
        f"{printable(last.worker)} at {clock(last.started, day)} after {span(last.duration)} "
        f"({plural(len(job.attempts), 'attempt')})",
        f"    $ {shorten(job.command)}",
    ]
    tail = last.tail.splitlines()[-TAIL_SHOWN:]
    lines += [f"    | {printable(line)}" for line in tail]
    return lines


def projection_text(digest: Digest) -> str | None:
    """The projection, while jobs are left and one can be made."""
    cost = digest.cost
    if cost is None or cost.projected is None or not _jobs_left(digest.counts):
        return None
    return f"{dollars(cost.projected)} when the jobs left are done at the present rate"


def budget_text(digest: Digest) -> str | None:
    """--budget against the cost: "budget $5.00; spent $3.23; ..."."""
    budget = digest.budget
    if budget is None:
        return None
    parts = [f"budget {dollars(budget.dollars)}", f"spent {dollars(budget.spent)}"]
    if budget.stopped:
        figure = "" if budget.projected is None else f" {dollars(budget.projected)}"
        parts.append(f"stopped when the projected cost{figure} passed it")
    elif budget.projected is not None and _jobs_left(digest.counts):
        parts.append(f"projected {dollars(budget.projected)}")
    elif _jobs_left(digest.counts) and digest.session.live:
        parts.append("no projection yet")
    return "; ".join(parts)


def _jobs_left(counts: Counts) -> int:
    return counts.pending + counts.running


def _cost_text(digest: Digest) -> list[str]:
    cost = digest.cost
    out = ["cost of launched workers:"]
    if cost is None:
        return [*out, "  (none launched)", f"  {budget_text(digest)}"]
    rows = [("instance", "worker", "provider", "size", "hours", "$/hour", "cost", "")]
    for worker in digest.workers:
        for i in worker.instances:
            rows.append(
                (
                    printable(i.instance_id or "?"),
                    printable(worker.name),
                    i.provider,
                    i.size or "?",
                    f"{i.hours:.4f}",
                    _price(i.hourly_price),
                    dollars(i.cost),
                    "NOT DESTROYED: counted to now" if i.not_destroyed else "",
                )
            )
    out += _table(rows, right=(4, 5, 6))
    total = dollars(cost.total)
    if cost.unpriced:
        total += f" (without {plural(cost.unpriced, 'instance')} of unknown price)"
    out += [
        f"  total: {total} for {cost.instance_hours:.4f} instance hours",
        f"  work: {cost.work_hours:.4f} hours; efficiency (work / instance hours): "
        f"{percent(cost.efficiency)}",
    ]
    if projected := projection_text(digest):
        out.append(f"  projected: {projected}")
    if budget := budget_text(digest):
        out.append(f"  {budget}")
    return out


# -- the JSON form -----------------------------------------------------------------


def _times(name: str, when: float | None) -> dict[str, Any]:
    return {name: iso(when), f"{name}_unix": when}


def _instance_json(instance: Instance) -> dict[str, Any]:
    return {
        "instance_id": instance.instance_id,
        "provider": instance.provider,
        "size": instance.size,
        "hourly_price": instance.hourly_price,
        "address": instance.address,
        **_times("intended", instance.intended),
        **_times("launched", instance.launched),
        **_times("running", instance.running),
        **_times("destroyed", instance.destroyed),
        "not_destroyed": instance.not_destroyed,
        "note": instance.note,
        "hours": instance.hours,
        "cost": instance.cost,
    }


def _worker_json(worker: Worker) -> dict[str, Any]:
    return {
        "name": worker.name,
        "launched": worker.launched,
        "attempts": worker.attempts,
        "ok": worker.ok,
        "failed": worker.failed,
        "timeout": worker.timeout,
        "lost": worker.lost,
        "stopped": worker.stopped,
        "running": worker.running,
        "unknown_end": worker.unknown_end,
        "work_seconds": worker.work_seconds,
        **_times("first_started", worker.first_started),
        **_times("last_ended", worker.last_ended),
        "lifetime_seconds": worker.lifetime,
        "efficiency": worker.efficiency,
        "not_destroyed": worker.not_destroyed,
        "instances": [_instance_json(instance) for instance in worker.instances],
    }


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "worker": attempt.worker,
        **_times("started", attempt.started),
        **_times("ended", attempt.ended),
        "duration_seconds": attempt.duration,
        "outcome": attempt.outcome,
        "exit_status": attempt.exit_status,
        "signal": attempt.signal,
        "tail": attempt.tail,
    }


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "line": job.line,
        "command": job.command,
        "state": job.state,
        "counted_attempts": job.counted_attempts,
        "attempts": [attempt_json(attempt) for attempt in job.attempts],
    }


def to_json(digest: Digest) -> dict[str, Any]:
    """The digest as one JSON-ready object (see digest.schema.json for every key)."""
    session, counts, cost, budget = digest.session, digest.counts, digest.cost, digest.budget
    listed = digest.jobs.all()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **_times("generated", digest.generated),
        "session": {
            "id": session.id,
            "directory": str(session.directory),
            "state": session.state,
            "stored_state": session.stored_state,
            "live": session.live,
            **_times("started", session.started),
            **_times("ended", session.ended),
            "elapsed_seconds": session.elapsed,
            "command": session.command,
            "runs": session.runs,
            "stop_reason": session.stop_reason,
        },
        "counts": {
            "total": counts.total,
            **{state: getattr(counts, state) for state in JOB_STATES},
        },
        "config": dict(digest.config),
        "workers": [_worker_json(worker) for worker in digest.workers],
        "cost": None
        if cost is None
        else {
            "instances": cost.instances,
            "instance_hours": cost.instance_hours,
            "work_hours": cost.work_hours,
            "efficiency": cost.efficiency,
            "total": cost.total,
            "unpriced": cost.unpriced,
            "projected": cost.projected,
        },
        "budget": None
        if budget is None
        else {
            "dollars": budget.dollars,
            "spent": budget.spent,
            "projected": budget.projected,
            "stopped": budget.stopped,
        },
        "jobs_listed": {
            "limit": digest.jobs.limit,
            "complete": len(listed) == counts.total,
        },
        "jobs": [job_json(job) for job in listed],
    }


def write_json(
    digest: Digest,
    out: TextIO,
    jobs: Iterable[Job] | None = None,
    *,
    flush_every: int = 1000,
) -> None:
    """Write to_json(digest) as one line of JSON (ASCII: any terminal or pipe
    takes it); with `jobs`, those are the "jobs" (every one, streamed: see
    iter_jobs) and the listing is complete."""
    data = to_json(digest)
    if jobs is None:
        json.dump(data, out)
        out.write("\n")
        return
    del data["jobs"]
    data["jobs_listed"] = {"limit": None, "complete": True}
    head = json.dumps(data)
    out.write(head[:-1] + ', "jobs": [')
    dump: Callable[[Any], str] = json.JSONEncoder().encode
    for number, job in enumerate(jobs):
        out.write((", " if number else "") + dump(job_json(job)))
        if number % flush_every == flush_every - 1:
            out.flush()
    out.write("]}\n")
