"""The scheduler: which worker runs which job next. Pure: no I/O, no clock.

The runner tells it what happened (a worker joined, a job ended, a worker
failed) and asks it what a worker should do next. Jobs wait in one
first-come, first-served queue, so a fast worker does more jobs.

Rules, each decided here and nowhere else:
- a job that fails (non-zero exit or timeout) goes back to the end of the
  queue while it has retries left; then it is final: failed or timeout;
- a worker with `strikes` consecutive failures is retired (0: never);
- a job whose worker failed under it goes back to the front of the queue
  without using a retry; after `lost_after` such worker failures in a row it
  is lost;
- a worker that runs out of work waits while jobs run elsewhere (they may
  come back to the queue) if it is cheap to keep; otherwise it is released.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    LOST = "lost"

    @property
    def final(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


class Outcome(StrEnum):
    """How one attempt at a job ended on a worker that stayed alive."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"


class Wait(Enum):
    """What a worker does when next_job has no job for it."""

    WAIT = "wait"  # nothing to run now; ask again when something changes
    RELEASE = "release"  # this worker is done: clean it up and let it go


@dataclass(slots=True)
class JobRecord:
    state: JobState = JobState.PENDING
    attempts: int = 0  # attempts that ended on a live worker
    worker_losses: int = 0  # consecutive attempts cut short by a failed worker


@dataclass(slots=True)
class WorkerRecord:
    keep_idle: bool
    job: int | None = None
    strikes: int = 0  # consecutive failed attempts
    retired: bool = False


@dataclass(frozen=True, slots=True)
class Ended:
    """What ending an attempt did: the job's state and the worker's fate."""

    state: JobState
    requeued: bool
    worker_retired: bool


class SchedulerError(Exception):
    """The runner asked for something the state does not allow (a bug)."""


class Scheduler:
    def __init__(
        self, job_ids: Iterable[int], *, retries: int = 0, strikes: int = 0, lost_after: int = 3
    ) -> None:
        self.retries = retries
        self.strikes = strikes
        self.lost_after = lost_after
        self.jobs: dict[int, JobRecord] = {}
        self.queue: deque[int] = deque()
        for job_id in job_ids:
            if job_id in self.jobs:
                raise SchedulerError(f"job {job_id} given twice")
            self.jobs[job_id] = JobRecord()
            self.queue.append(job_id)
        self.workers: dict[str, WorkerRecord] = {}
        self.stopped = False

    # -- questions ---------------------------------------------------------

    @property
    def running(self) -> int:
        return sum(1 for worker in self.workers.values() if worker.job is not None)

    @property
    def done(self) -> bool:
        """Every job is in a final state."""
        return not self.queue and self.running == 0

    def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for job in self.jobs.values():
            counts[job.state] += 1
        return counts

    # -- workers -----------------------------------------------------------

    def add_worker(self, worker: str, *, keep_idle: bool = True) -> None:
        if worker in self.workers:
            raise SchedulerError(f"worker {worker} added twice")
        self.workers[worker] = WorkerRecord(keep_idle=keep_idle)

    def remove_worker(self, worker: str) -> None:
        """A worker leaves (released, or its setup failed): it has no job."""
        record = self._worker(worker)
        if record.job is not None:
            raise SchedulerError(f"worker {worker} leaves while running job {record.job}")
        del self.workers[worker]

    def next_job(self, worker: str) -> int | Wait:
        """The job this worker runs next, or what it does instead."""
        record = self._worker(worker)
        if record.job is not None:
            raise SchedulerError(f"worker {worker} asks for a job while running {record.job}")
        if record.retired or self.stopped:
            return Wait.RELEASE
        if self.queue:
            job_id = self.queue.popleft()
            self.jobs[job_id].state = JobState.RUNNING
            record.job = job_id
            return job_id
        if self.running and record.keep_idle:
            return Wait.WAIT
        return Wait.RELEASE

    # -- events ------------------------------------------------------------

    def end_attempt(self, worker: str, job_id: int, outcome: Outcome) -> Ended:
        """The job's command ended on a live worker."""
        record = self._running(worker, job_id)
        record.job = None
        job = self.jobs[job_id]
        job.attempts += 1
        job.worker_losses = 0
        if outcome is Outcome.OK:
            record.strikes = 0
            job.state = JobState.OK
            return Ended(JobState.OK, requeued=False, worker_retired=False)
        record.strikes += 1
        if self.strikes and record.strikes >= self.strikes:
            record.retired = True
        if job.attempts <= self.retries:
            job.state = JobState.PENDING
            self.queue.append(job_id)
            return Ended(JobState.PENDING, requeued=True, worker_retired=record.retired)
        job.state = JobState.FAILED if outcome is Outcome.FAILED else JobState.TIMEOUT
        return Ended(job.state, requeued=False, worker_retired=record.retired)

    def fail_worker(self, worker: str) -> Ended | None:
        """The worker stopped answering; it is retired and its job put back.

        Returns what happened to the job it was running, if any.
        """
        record = self._worker(worker)
        record.retired = True
        job_id, record.job = record.job, None
        if job_id is None:
            return None
        job = self.jobs[job_id]
        job.worker_losses += 1
        if job.worker_losses >= self.lost_after:
            job.state = JobState.LOST
            return Ended(JobState.LOST, requeued=False, worker_retired=True)
        job.state = JobState.PENDING
        self.queue.appendleft(job_id)
        return Ended(JobState.PENDING, requeued=True, worker_retired=True)

    def interrupt(self, worker: str, job_id: int) -> None:
        """The job was stopped by an abort: it is pending again, as if never run."""
        self._running(worker, job_id).job = None
        self.jobs[job_id].state = JobState.PENDING
        self.queue.appendleft(job_id)

    def stop(self) -> None:
        """Start nothing new: every worker is released once its job ends."""
        self.stopped = True

    # -- checks ------------------------------------------------------------

    def _worker(self, worker: str) -> WorkerRecord:
        try:
            return self.workers[worker]
        except KeyError:
            raise SchedulerError(f"unknown worker {worker}") from None

    def _running(self, worker: str, job_id: int) -> WorkerRecord:
        record = self._worker(worker)
        if record.job != job_id:
            raise SchedulerError(f"worker {worker} is not running job {job_id}")
        return record
