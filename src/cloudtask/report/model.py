"""What a session did, as plain frozen data: the digest.

`loading.load` reads it from a session's store; `sections` says it for
people (the text and the HTML page lay that out), `json_form` for programs,
`timeline` draws it. Times are UNIX seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CloudtaskError
from ..usage import Usage

DEFAULT_LIMIT = 50  # jobs listed of each kind, and rows of the workers table in text
# The timeline's resolution: attempts shorter than a column gather into one
# bar per column. A row gets TIMELINE_COLUMNS columns, fewer when many rows
# would pass TIMELINE_BARS in all (a bounded picture, whatever the session).
TIMELINE_COLUMNS = 500
TIMELINE_BARS = 6000
TIMELINE_MIN_COLUMNS = 25
TIMELINE_ROWS = 200  # workers drawn on the timeline; the rest are counted
MOST_SHOWN = 5  # jobs named among those that used the most CPU, and memory

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


def busy(work_seconds: float, capacity: float | None) -> float | None:
    """Efficiency: time spent on jobs over the slot-time there was for them (a
    worker's time x its slots: one that runs 4 jobs at once has 4 seconds of
    room a second). None with no slot-time. The one place the share is made."""
    return work_seconds / capacity if capacity else None


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
    slots: int = 1  # jobs it ran at once (--slots); 1 when the store does not say

    @property
    def capacity(self) -> float | None:
        """Slot-time: its lifetime x its slots."""
        return None if self.lifetime is None else self.lifetime * self.slots

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
        """Work time over slot-time (lifetime x slots), for a launched worker."""
        return busy(self.work_seconds, self.capacity) if self.launched else None


@dataclass(frozen=True, slots=True)
class Attempt:
    worker: str
    started: float
    ended: float | None  # None: running, or lost with its end unknown
    outcome: str  # one of OUTCOMES
    exit_status: int | None
    signal: int | None
    tail: str
    usage: Usage | None = None  # what it used; None: not measured (or not ended)

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
    slot_seconds: float  # instance time x the slots of its worker (Worker.capacity)
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
    def slot_hours(self) -> float:
        return self.slot_seconds / 3600

    @property
    def work_hours(self) -> float:
        return self.work_seconds / 3600

    @property
    def efficiency(self) -> float | None:
        """Work hours over slot hours: the share of paid slot-time spent on jobs."""
        return busy(self.work_seconds, self.slot_seconds)


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
class JobUse:
    """A job among those that used the most."""

    job: int
    used: float  # CPU seconds over its attempts, or its largest peak memory in bytes
    command: str


@dataclass(frozen=True, slots=True)
class Resources:
    """What the session's attempts used (usage.Usage, summed); the jobs that used most."""

    measured: int  # attempts with anything measured
    cpu_measured: int  # attempts whose CPU was measured (a worker with the agent)
    user_cpu: float  # seconds
    system_cpu: float
    max_rss: int | None  # the largest peak, bytes; None: no attempt's was measured
    output_bytes: int
    most_cpu: tuple[JobUse, ...]  # at most MOST_SHOWN, the most first
    most_memory: tuple[JobUse, ...]

    @property
    def cpu(self) -> float:
        return self.user_cpu + self.system_cpu


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
    resources: Resources | None = None  # None: no attempt has anything measured


@dataclass(frozen=True, slots=True)
class Summary:
    """A session in one line (`--list`)."""

    session: SessionInfo
    counts: Counts
    # Launched instances not recorded destroyed: with no controller or
    # watchdog holding the session, they may still be running (and billing).
    not_destroyed: int
