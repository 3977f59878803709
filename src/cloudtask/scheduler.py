"""The scheduler: which worker runs which job next. Pure: no I/O, no clock.

The runner tells it what happened (a worker joined, a job ended, a worker
failed) and asks it what a worker should do next. Jobs wait in one
first-come, first-served queue, so a fast worker does more jobs.

Rules, each decided here and nowhere else:
- a job that fails (non-zero exit or timeout) goes back to the end of the
  queue while it has retries left; then it is final: failed or timeout;
- a worker asking for a job passes over the queued jobs whose last failed
  attempt ran on it, while another worker that is not retired is there to
  take them (a retry runs on another worker if possible, as GNU parallel's
  --retries); if every job it looks at (the first `LOOK_AHEAD`) last failed
  on it, it waits for another worker to take them if it is cheap to keep,
  else it takes the first; with no other worker left it takes it: no retry
  starves;
- a worker with `strikes` consecutive failures is retired (0: never);
- a job whose worker failed under it goes back to the front of the queue
  without using a retry; after `lost_after` such worker failures in a row it
  is lost;
- a worker that runs out of work waits while jobs run elsewhere (they may
  come back to the queue) if it is cheap to keep; otherwise it is released.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

LOOK_AHEAD = 64  # queued jobs a worker looks at for one it did not fail last


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
    failed_on: str | None = None  # the worker of the last failed attempt


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
    attempts: int  # attempts at the job so far that ended on a live worker


class SchedulerError(Exception):
    """The runner asked for something the state does not allow (a bug)."""


class JobQueue:
    """Pending jobs in the order they run.

    First the jobs put back at the front (their worker failed, or an abort
    stopped them), then the jobs not yet taken from the source, then the jobs
    put back at the end (a retry). The source is read lazily, a few at a time,
    so a session of a million pending jobs never has them all in memory.
    """

    def __init__(self, source: Iterable[int]) -> None:
        self._front: deque[int] = deque()
        self._fresh: deque[int] = deque()
        self._source: Iterator[int] | None = iter(source)
        self._back: deque[int] = deque()

    def __bool__(self) -> bool:
        return bool(self._front or self._fill(1) or self._back)

    def popleft(self) -> int:
        for part in (self._front, self._fresh if self._fill(1) else None, self._back):
            if part:
                return part.popleft()
        raise IndexError("no pending job")

    def take(self, passed_over: Callable[[int], bool], limit: int = LOOK_AHEAD) -> int | None:
        """The first of the next `limit` jobs not `passed_over` (None if each
        is); the others keep their places.

        A fresh job never ran, so it is never passed over: the source is read
        no further than popleft reads it.
        """
        for part, index, job_id in itertools.islice(self._candidates(), limit):
            if part is self._fresh or not passed_over(job_id):
                del part[index]
                return job_id
        return None

    def put_front(self, job_id: int) -> None:
        self._front.appendleft(job_id)

    def put_back(self, job_id: int) -> None:
        self._back.append(job_id)

    def peek(self, count: int) -> list[int]:
        """The next `count` jobs, without taking them."""
        self._fill(count)
        return list(itertools.islice(itertools.chain(self._front, self._fresh, self._back), count))

    def _candidates(self) -> Iterator[tuple[deque[int], int, int]]:
        """The pending jobs in order, each with its part and index there; of
        the fresh jobs only the first (take never looks past it)."""
        yield from ((self._front, index, job_id) for index, job_id in enumerate(self._front))
        if self._fill(1):
            yield self._fresh, 0, self._fresh[0]
        yield from ((self._back, index, job_id) for index, job_id in enumerate(self._back))

    def _fill(self, count: int) -> bool:
        """Take up to `count` fresh jobs from the source; whether any are there."""
        while self._source is not None and len(self._fresh) < count:
            job_id = next(self._source, None)
            if job_id is None:
                self._source = None
            else:
                self._fresh.append(job_id)
        return bool(self._fresh)


class Scheduler:
    """Decides who runs what.

    It keeps a record only of the jobs in play (taken from the queue, not yet
    final) and a count of the jobs that reached a final state, so its memory
    grows with the workers, not with the size of the session.
    """

    def __init__(
        self,
        pending: Iterable[int],
        *,
        retries: int = 0,
        strikes: int = 0,
        lost_after: int = 3,
        finished: Mapping[JobState, int] | None = None,
    ) -> None:
        self.retries = retries
        self.strikes = strikes
        self.lost_after = lost_after
        self.queue = JobQueue(pending)
        self.jobs: dict[int, JobRecord] = {}  # the jobs in play
        self.finished = {state: 0 for state in JobState if state.final}
        for state, count in (finished or {}).items():
            if state.final:
                self.finished[state] += count
        self.workers: dict[str, WorkerRecord] = {}
        self.stopped = False

    # -- questions ---------------------------------------------------------

    @property
    def running(self) -> int:
        return sum(1 for worker in self.workers.values() if worker.job is not None)

    @property
    def done(self) -> bool:
        """Every job is in a final state."""
        return self.running == 0 and not self.queue

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
            job_id = self.queue.take(self._passed_over_by(worker))
            if job_id is None:
                # Only retries that failed here: another worker takes them
                # once it is free, while this one waits (if it costs nothing).
                if record.keep_idle:
                    return Wait.WAIT
                job_id = self.queue.popleft()
            self.jobs.setdefault(job_id, JobRecord()).state = JobState.RUNNING
            record.job = job_id
            return job_id
        if self.running and record.keep_idle:
            return Wait.WAIT
        return Wait.RELEASE

    def _passed_over_by(self, worker: str) -> Callable[[int], bool]:
        """Which queued jobs the worker leaves to others: those whose last
        failed attempt ran on it, if another worker is there to take them."""
        if not any(not r.retired for name, r in self.workers.items() if name != worker):
            return lambda job_id: False

        def passed_over(job_id: int) -> bool:
            job = self.jobs.get(job_id)
            return job is not None and job.failed_on == worker

        return passed_over

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
            return self._final(job_id, JobState.OK, worker_retired=False)
        record.strikes += 1
        if self.strikes and record.strikes >= self.strikes:
            record.retired = True
        if job.attempts <= self.retries:
            job.state = JobState.PENDING
            job.failed_on = worker
            self.queue.put_back(job_id)
            return Ended(JobState.PENDING, True, record.retired, job.attempts)
        final = JobState.FAILED if outcome is Outcome.FAILED else JobState.TIMEOUT
        return self._final(job_id, final, worker_retired=record.retired)

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
            return self._final(job_id, JobState.LOST, worker_retired=True)
        job.state = JobState.PENDING
        self.queue.put_front(job_id)
        return Ended(JobState.PENDING, True, True, job.attempts)

    def interrupt(self, worker: str, job_id: int) -> None:
        """The job was stopped by an abort: it is pending again, as if never run."""
        self._running(worker, job_id).job = None
        self.jobs[job_id].state = JobState.PENDING
        self.queue.put_front(job_id)

    def stop(self) -> None:
        """Start nothing new: every worker is released once its job ends."""
        self.stopped = True

    def _final(self, job_id: int, state: JobState, *, worker_retired: bool) -> Ended:
        """The job is out of play: only the count of final states remembers it."""
        job = self.jobs.pop(job_id)
        self.finished[state] += 1
        return Ended(state, False, worker_retired, job.attempts)

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
