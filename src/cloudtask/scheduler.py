"""The scheduler: which worker runs which job next. Pure: no I/O, no clock.

The runner tells it what happened (a worker joined, a job ended, a worker
failed) and asks it what a worker should do next. Jobs wait in one
first-come, first-served queue, so a fast worker does more jobs.

A worker has `slots` job slots (1 unless told): it runs up to that many jobs
at once, and the runner asks next_job once for each free slot. Asking with no
slot free is a bug. When a slot gets no job it gets a `Wait` instead: WAIT
(ask again for this slot when something changes) or RELEASE (this slot has
nothing more to do: ask no more for it). The runner ends a worker (cleans it
up, lets it go, remove_worker) once every one of its slots got RELEASE and it
runs nothing. With one slot this is what it always was: RELEASE means the
worker goes.

Rules, each decided here and nowhere else:
- a job that fails (non-zero exit or timeout) goes back to the end of the
  queue while it has retries left; then it is final: failed or timeout;
- a worker asking for a job passes over the queued jobs whose last failed
  attempt ran on it, while another worker that is not retired is there to
  take them (a retry runs on another worker if possible, as GNU parallel's
  --retries); if every job it looks at (the first `LOOK_AHEAD`) last failed
  on it, it waits for another worker to take them if it is cheap to keep
  (or still runs another job: it stays for that anyway), else it takes the
  first; with no other worker left it takes it: no retry starves. A retired
  or drained worker is no other worker;
- a worker with `strikes` consecutive failures is retired (0: never): it
  starts no job more, and the jobs it still runs in its other slots end as
  usual. Its attempts count in the order they end, whichever slot ran them;
- a job whose worker failed under it goes back to the front of the queue
  without using a retry; after `lost_after` such worker failures in a row it
  is lost. A failed worker is retired, and every job it was running goes so,
  in job order (the first at the very front);
- a drained worker (a spot instance given notice) starts no job more; the
  jobs it runs end as usual. Draining is no failure: no strike, not retired;
- a slot with nothing to start waits while jobs run (they may come back to
  the queue) if its worker is cheap to keep, or still runs a job itself
  (it stays for that job anyway); otherwise it is released. So a slot is
  released while its worker still runs a job only if the worker is retired
  or drained, or the run stopped: when none of its slots would start a job
  again.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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
    """What a worker's free slot does when next_job has no job for it."""

    WAIT = "wait"  # nothing to start now; ask again for this slot when something changes
    # This slot has nothing more to do: ask no more for it. The worker is
    # done (clean it up, let it go) once every slot of it got RELEASE and it
    # runs nothing; with one slot, at once.
    RELEASE = "release"


@dataclass(slots=True)
class JobRecord:
    state: JobState = JobState.PENDING
    attempts: int = 0  # attempts that ended on a live worker
    worker_losses: int = 0  # consecutive attempts cut short by a failed worker
    failed_on: str | None = None  # the worker of the last failed attempt


@dataclass(slots=True)
class WorkerRecord:
    keep_idle: bool
    slots: int = 1  # jobs it may run at once
    jobs: set[int] = field(default_factory=set)  # the jobs it runs
    strikes: int = 0  # consecutive failed attempts, in the order they ended
    retired: bool = False  # for failures: it starts no job more
    draining: bool = False  # given notice: it starts no job more

    @property
    def free(self) -> int:
        """Slots without a job."""
        return self.slots - len(self.jobs)


@dataclass(frozen=True, slots=True)
class Ended:
    """What ending an attempt did: the job's state and the worker's fate."""

    state: JobState
    requeued: bool
    # end_attempt: this end retired the worker (an earlier one did not);
    # fail_worker: always (a failed worker is retired).
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
        if not self._front and not self._back:  # only fresh jobs: the first it is
            return self._fresh.popleft() if self._fill(1) else None
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
        """The jobs running, on every slot of every worker."""
        return sum(len(worker.jobs) for worker in self.workers.values())

    @property
    def done(self) -> bool:
        """Every job is in a final state."""
        return self.running == 0 and not self.queue

    # -- workers -----------------------------------------------------------

    def add_worker(self, worker: str, *, keep_idle: bool = True, slots: int = 1) -> None:
        """A worker joins, to run up to `slots` jobs at once."""
        if worker in self.workers:
            raise SchedulerError(f"worker {worker} added twice")
        if slots < 1:
            raise SchedulerError(f"worker {worker} added with {slots} slots")
        self.workers[worker] = WorkerRecord(keep_idle=keep_idle, slots=slots)

    def remove_worker(self, worker: str) -> None:
        """A worker leaves (released, or its setup failed): it runs no job."""
        record = self._worker(worker)
        if record.jobs:
            raise SchedulerError(
                f"worker {worker} leaves while running jobs {_listed(record.jobs)}"
            )
        del self.workers[worker]

    def next_job(self, worker: str) -> int | Wait:
        """The job a free slot of this worker runs next, or what it does instead."""
        record = self._worker(worker)
        if not record.free:
            raise SchedulerError(
                f"worker {worker} asks for a job with no slot free: it runs {_listed(record.jobs)}"
            )
        if record.retired or record.draining or self.stopped:
            return Wait.RELEASE
        # A slot may wait if that costs nothing: its worker is cheap to keep
        # idle, or stays anyway for a job it runs in another slot.
        may_wait = record.keep_idle or bool(record.jobs)
        if self.queue:
            job_id = self.queue.take(self._passed_over_by(worker))
            if job_id is None:
                # Only retries that failed here: another worker takes them
                # once it is free, while this slot waits (if it costs nothing).
                if may_wait:
                    return Wait.WAIT
                job_id = self.queue.popleft()
            self.jobs.setdefault(job_id, JobRecord()).state = JobState.RUNNING
            record.jobs.add(job_id)
            return job_id
        if self.running and may_wait:
            return Wait.WAIT
        return Wait.RELEASE

    def _passed_over_by(self, worker: str) -> Callable[[int], bool]:
        """Which queued jobs the worker leaves to others: those whose last
        failed attempt ran on it, if another worker is there to take them."""
        if not any(
            not (r.retired or r.draining) for name, r in self.workers.items() if name != worker
        ):
            return lambda job_id: False

        def passed_over(job_id: int) -> bool:
            job = self.jobs.get(job_id)
            return job is not None and job.failed_on == worker

        return passed_over

    # -- events ------------------------------------------------------------

    def end_attempt(self, worker: str, job_id: int, outcome: Outcome) -> Ended:
        """The job's command ended on a live worker."""
        record = self._running(worker, job_id)
        record.jobs.remove(job_id)
        job = self.jobs[job_id]
        job.attempts += 1
        job.worker_losses = 0
        if outcome is Outcome.OK:
            record.strikes = 0
            return self._final(job_id, JobState.OK, worker_retired=False)
        record.strikes += 1
        retired = bool(self.strikes) and record.strikes >= self.strikes and not record.retired
        record.retired |= retired
        if job.attempts <= self.retries:
            job.state = JobState.PENDING
            job.failed_on = worker
            self.queue.put_back(job_id)
            return Ended(JobState.PENDING, True, retired, job.attempts)
        final = JobState.FAILED if outcome is Outcome.FAILED else JobState.TIMEOUT
        return self._final(job_id, final, worker_retired=retired)

    def fail_worker(self, worker: str) -> list[Ended]:
        """The worker stopped answering; it is retired and its jobs put back.

        Returns what happened to each job it was running, in job order (that
        of sorted(jobs) before the call); none if it ran none.
        """
        record = self._worker(worker)
        record.retired = True
        job_ids, record.jobs = sorted(record.jobs), set()
        ended = []
        put_back = []
        for job_id in job_ids:
            job = self.jobs[job_id]
            job.worker_losses += 1
            if job.worker_losses >= self.lost_after:
                ended.append(self._final(job_id, JobState.LOST, worker_retired=True))
            else:
                job.state = JobState.PENDING
                put_back.append(job_id)
                ended.append(Ended(JobState.PENDING, True, True, job.attempts))
        for job_id in reversed(put_back):
            self.queue.put_front(job_id)
        return ended

    def drain(self, worker: str) -> None:
        """The worker starts no job more (a spot instance got its notice).

        The jobs it runs end as usual; it is not retired and gets no strike.
        Each of its slots gets RELEASE when it asks. Other workers may now
        take the retries they left to it: tell the slots that wait.
        """
        self._worker(worker).draining = True

    def interrupt(self, worker: str, job_id: int) -> None:
        """The job was stopped by an abort: it is pending again, as if never run."""
        self._running(worker, job_id).jobs.remove(job_id)
        self.jobs[job_id].state = JobState.PENDING
        self.queue.put_front(job_id)

    def stop(self) -> None:
        """Start nothing new: every slot is released once its job ends."""
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
        if job_id not in record.jobs:
            raise SchedulerError(f"worker {worker} is not running job {job_id}")
        return record


def _listed(job_ids: Iterable[int]) -> str:
    return ", ".join(map(str, sorted(job_ids)))
