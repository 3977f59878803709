"""One worker's lifecycle: obtain, connect, setup, run jobs, cleanup, release.

Every kind of worker (local slot, SSH server, cloud instance) goes through
these same steps; the provider and the transport are what differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO, TypeVar

from . import cost
from .config import AUTO, Config
from .console import Console, duration, plural
from .errors import SessionWriteError, WorkerError
from .halt import Halt
from .joblog import Joblog, joblog_line
from .output import OutputLines
from .providers import Instance, Provider
from .scheduler import Ended, JobState, Outcome, Scheduler, Wait
from .session.directory import SessionDir
from .store import AttemptEnd, Store
from .transport import RunResult, Transport

T = TypeVar("T")
# A lease is renewed this many times within its duration: one lost renewal
# (a slow network) does not end a healthy worker.
LEASE_RENEWALS = 3
SPOT_POLL = 5.0  # seconds between the agent's looks for a spot interruption notice


@dataclass
class Run:
    """What the workers of one run share."""

    config: Config
    store: Store  # the jobs' commands, and where every state change is committed
    scheduler: Scheduler
    console: Console
    session: SessionDir
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once every job is in a final state: a worker still launching or
    # connecting then stops, rather than hold the run for its timeout.
    nothing_left: asyncio.Event = field(default_factory=asyncio.Event)
    joblog: Joblog | None = None
    halt: Halt | None = None
    halted: str | None = None  # why no new job starts: the --halt or --budget reached
    stopped_by: str = "the abort"  # what stops the running jobs once `stop` is set
    # Workers whose cleanup (the session key's removal) could not run yet.
    unclosed: dict[str, Transport] = field(default_factory=dict)
    # What each worker is doing now, for the live view: worker -> a few words.
    doing: dict[str, str] = field(default_factory=dict)
    # For the rate of this run: when it started, and how many jobs were final then.
    started: float = field(default_factory=time.monotonic)
    finished_at_start: int = 0
    # The final states counted when this run started: --halt counts only the
    # outcomes of this run, so a resumed halted session runs on.
    finished_before: dict[JobState, int] = field(default_factory=dict)
    total: int = 0
    attempts_started: int = 0  # in this run
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def show_status(self, worker: str, what: str | None) -> None:
        """A worker's doing in the live view, from its provider while it boots."""
        if what is None:
            self.doing.pop(worker, None)
        else:
            self.doing[worker] = what

    def changed(self) -> None:
        """Wake the workers waiting for work: the queue or the running set changed."""
        self._changed.set()
        self._changed = asyncio.Event()
        if self.scheduler.done:
            self.nothing_left.set()

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    def outcomes(self) -> dict[JobState, int]:
        """The final states this run has reached, by state."""
        finished = self.scheduler.finished
        return {state: finished[state] - self.finished_before.get(state, 0) for state in finished}

    def seconds_left(self) -> float | None:
        """Time the batch still needs at this run's rate (None: no job has ended yet)."""
        done = sum(self.scheduler.finished.values())
        elapsed = time.monotonic() - self.started
        return cost.seconds_left(self.total - done, done - self.finished_at_start, elapsed)

    def launch_blocked(self, price: float | None) -> str | None:
        """Why --budget forbids launching one more worker at `price`, or None."""
        if self.config.budget is None:
            return None
        over = cost.launch_passes_budget(
            self.config.budget, self.store.instances(), time.time(), self.seconds_left(), price
        )
        if over is None:
            return None
        return f"--budget=${self.config.budget:g}: one more worker would bring it to ${over:.2f}"

    def check_budget(self) -> None:
        """Past the budget at the present rate: start no new job (the rest stays pending)."""
        if self.config.budget is None or self.halted:
            return
        figures = cost.projection(self.store.instances(), time.time(), self.seconds_left())
        if figures is None or not figures.passes(self.config.budget):
            return
        self.halted = f"--budget=${self.config.budget:g}"
        self.store.budget_passed(figures.budget_figure)
        self.scheduler.stop()
        self.changed()
        what = "cost so far" if figures.projected is None else "projected cost"
        self.console.warn(
            f"--budget=${self.config.budget:g}: the {what} ${figures.budget_figure:.2f} passes "
            "it: no new job starts; running jobs finish and the session stays resumable"
        )

    def check_halt(self) -> None:
        """Past --halt: start no new job; with `now`, stop the running ones too
        (pending again, as by an abort, but the run is halted, not aborted)."""
        if self.halt is None or self.halted or not self.halt.reached(self.outcomes()):
            return
        self.halted = f"--halt={self.halt}"
        if not self.halt.now:
            self.scheduler.stop()
            self.console.warn(f"{self.halted} reached: no new job starts; running jobs finish")
            return
        if not self.stop.is_set():  # else an abort stops them already
            self.stopped_by = self.halted
        self.console.warn(
            f"{self.halted} reached: no new job starts; running jobs are stopped (pending again)"
        )
        self.abort()

    def abort(self) -> None:
        """Start nothing new and stop what runs; workers then clean up."""
        self.scheduler.stop()
        self.stop.set()
        self.changed()


def outcome_of(result: RunResult) -> Outcome:
    if result.timed_out:
        return Outcome.TIMEOUT
    return Outcome.OK if result.ok else Outcome.FAILED


def ended_text(result: RunResult, ended: Ended, elapsed: float, attempts: int, retries: int) -> str:
    how = f"{result.describe()} after {duration(elapsed)}"
    if ended.requeued:
        return f"{outcome_of(result).value} ({how}); queued again, retry {attempts} of {retries}"
    return f"{ended.state.value} ({how})"


class Worker:
    def __init__(self, run: Run, provider: Provider) -> None:
        self.run = run
        self.provider = provider
        self.name = "?"
        self.log: TextIO | None = None
        # The worker stopped answering while it ran jobs (not a setup failure).
        self.failed = False
        # It never took a job: it could not be reached, or its setup failed.
        self.unready = False
        self._slots: list[asyncio.Future[None]] = []  # a task per job slot
        self._running: dict[int, str] = {}  # job -> command, in its slots now
        self._attempts: dict[int, int] = {}  # job -> its attempt's id in the store

    async def lifecycle(self) -> None:
        instance = await self._obtain()
        if instance is None:
            return
        self.name = instance.name
        self._doing("connecting")
        log = self.run.session.worker_log(self.name)
        self.log = log
        try:
            await self._connected(instance, log)
        finally:
            try:
                if instance.token is not None:
                    self._doing("destroying")
                # Said only once the cloud confirmed it; one left running is
                # named at the run's end (its record stays open).
                gone = await self.provider.destroy(instance)
                if instance.token is not None and gone:
                    self.run.console.line(f"{self.name} destroyed ({instance.id})")
            finally:
                self.run.doing.pop(self.name, None)
                log.close()

    def _env(self, **more: str) -> dict[str, str]:
        """What a command on this worker finds in its environment: the session
        and the worker (and for a job, its number and attempt)."""
        return {
            "CLOUDTASK_SESSION": str(self.run.session.id),
            "CLOUDTASK_WORKER": self.name,
            **more,
        }

    def _doing(self, what: str) -> None:
        self.run.doing[self.name] = what

    async def _obtain(self) -> Instance | None:
        """Launch (or take) the worker; None if that failed or the run was aborted first."""
        try:
            return await self._unless_aborted(self.provider.launch())
        except WorkerError as exc:
            self.run.console.warn(f"{self.provider.name}: {exc}; the session goes on without it")
            return None

    async def _unless_aborted(self, step: Awaitable[T]) -> T | None:
        """The step's result; None if the run is aborted first, or every job
        has ended meanwhile (the step is cancelled: a launch then destroys what
        it launched, a connection attempt stops)."""
        task = asyncio.ensure_future(step)
        aborted = asyncio.ensure_future(self.run.stop.wait())
        unneeded = asyncio.ensure_future(self.run.nothing_left.wait())
        try:
            await asyncio.wait({task, aborted, unneeded}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
            unneeded.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WorkerError):
            await task
        return None

    async def _connected(self, instance: Instance, log: TextIO) -> None:
        try:
            transport = await self._unless_aborted(self.provider.connect(instance))
        except WorkerError as exc:
            self._warn(f"{self.name}: cannot connect: {exc}")
            self.unready = True
            return
        if transport is None:
            return
        lease: asyncio.Task[None] | None = None
        try:
            slots = await self._setup(transport, log)
            if slots is None:
                self.unready = True
                return
            lease = self._keep_lease(transport, instance)
            self._watch_spot(transport)
            try:
                self.run.store.worker_slots(self.name, slots)
            except SessionWriteError as exc:  # a full disk: the run stops, as for a job
                self.run.session.trouble.report(str(exc))
            self.run.scheduler.add_worker(self.name, keep_idle=self.provider.keep_idle, slots=slots)
            try:
                alive = await self._run_slots(transport, log, slots)
            finally:
                if self.name in self.run.scheduler.workers and not self._busy():
                    self.run.scheduler.remove_worker(self.name)
                self.run.changed()
            if alive:
                try:
                    await self._step(transport, log, "post", self.run.config.post)
                except WorkerError as exc:
                    self._warn(f"{self.name}: --post failed: {exc}")
        finally:
            if lease is not None:
                # Its last renewal stands until the instance is destroyed
                # (moments from now), or runs out if that fails.
                lease.cancel()
            await self._close(transport)

    def _keep_lease(self, transport: Transport, instance: Instance) -> asyncio.Task[None] | None:
        """Renew a launched worker's lease while it works; None when it gets none."""
        action = self.provider.lease_action
        if action is None:
            return None
        seconds = self.run.config.lease
        # Its launch token: unique to this instance, whichever session or machine.
        key = instance.token or f"{self.run.session.id}-{self.name}"

        async def renew() -> None:
            with contextlib.suppress(WorkerError):  # its channel is gone: the jobs say so
                while transport.keep_lease(seconds, action, key):
                    await asyncio.sleep(seconds / LEASE_RENEWALS)
                self._note(f"{self.name}: no agent to keep a lease; the watchdog covers it")

        return asyncio.ensure_future(renew())

    def _watch_spot(self, transport: Transport) -> None:
        url = self.provider.spot_metadata()
        if url is None:
            return

        def notice() -> None:
            if self.name not in self.run.scheduler.workers:
                return
            self._warn(
                f"{self.name}: spot interruption notice: it takes no new job; "
                "its running jobs go back to the queue if it goes first"
            )
            self.run.scheduler.drain(self.name)
            self.run.changed()

        if not transport.watch_spot(url, SPOT_POLL, notice):
            self._note(f"{self.name}: no agent to watch for a spot interruption notice")

    async def _close(self, transport: Transport) -> None:
        """Undo what connecting set up; if that fails now, the run tries again at its end."""
        self._doing("cleaning up")
        try:
            await transport.close()
        except WorkerError as exc:
            self._warn(f"{self.name}: cleanup failed, tried again at the end: {exc}")
            self.run.unclosed[self.name] = transport

    def _warn(self, text: str) -> None:
        """A problem of this worker: a warning on the console, and in its own log."""
        self._note(text, warning=True)

    def _note(self, text: str, *, warning: bool = False) -> None:
        """Something worth knowing of this worker: on the console and in its own log."""
        (self.run.console.warn if warning else self.run.console.line)(text)
        if self.log is not None:
            self.log.write(f"== {text}\n")

    def _busy(self) -> bool:
        return bool(self.run.scheduler.workers[self.name].jobs)

    async def _setup(self, transport: Transport, log: TextIO) -> int | None:
        """Copy the overlay, start the agent, then run --pre (the session key
        is authorized on connect): the worker's job slots, or None if it failed."""
        overlay = self.run.config.overlay
        try:
            if overlay is not None:
                self.run.console.line(f"{self.name} overlay: {overlay}")
                await transport.put_overlay(overlay)
            started = await transport.start_agent()
            if started.without_agent is not None:
                self._note(
                    f"{self.name}: no agent ({started.without_agent}): "
                    "each job runs on an SSH channel of its own"
                )
            slots = self.run.config.slots
            slots = started.cpus if slots == AUTO else int(slots)
            if not await self._step(transport, log, "pre", self.run.config.pre):
                return None
            return slots
        except WorkerError as exc:
            self._warn(f"{self.name}: setup failed: {exc}; it gets no jobs")
            return None

    async def _step(
        self, transport: Transport, log: TextIO, label: str, command: str | None
    ) -> bool:
        """Run --pre or --post; True when there was none or it succeeded."""
        if not command:
            return True
        console = self.run.console
        self._doing(f"--{label}: {command}")
        console.line(f"{self.name} {label}: {command}")
        # An abort stops --pre (the worker gets no jobs then); --post, the
        # cleanup, runs to its end.
        stop = self.run.stop if label == "pre" else None
        result = await self._execute(transport, log, label, command, stop, env=self._env())
        if result.ok:
            return True
        self._warn(
            f"{self.name}: --{label} {result.describe()}"
            + ("; it gets no jobs" if label == "pre" else "")
        )
        return False

    async def _run_slots(self, transport: Transport, log: TextIO, slots: int) -> bool:
        """Run jobs in each slot until there is no work for this worker; False
        if it failed (then every slot has stopped and its jobs are settled)."""
        self._slots = [asyncio.ensure_future(self._run_jobs(transport, log)) for _ in range(slots)]
        try:
            ended = await asyncio.gather(*self._slots, return_exceptions=True)
        finally:
            for slot in self._slots:
                slot.cancel()
        for outcome in ended:  # a slot cancelled by _fail is no news; anything else is
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, asyncio.CancelledError
            ):
                raise outcome
        return not self.failed

    async def _run_jobs(self, transport: Transport, log: TextIO) -> None:
        """One slot: run jobs until there is no more work for it, or the worker failed."""
        scheduler, store = self.run.scheduler, self.run.store
        while not self.failed:
            decision = scheduler.next_job(self.name)
            if decision is Wait.RELEASE:
                return
            if decision is Wait.WAIT:
                if not self._running:
                    self._doing("idle, waiting for jobs that may come back")
                await self.run.wait_for_change()
                continue
            try:
                attempt = store.start_attempt(decision, self.name, time.time())
            except SessionWriteError as exc:
                # Not started: pending again, and the run stops (a full disk).
                scheduler.interrupt(self.name, decision)
                self.run.session.trouble.report(str(exc))
                continue
            self.run.attempts_started += 1
            self._attempts[decision] = attempt
            try:
                await self._run_job(transport, log, decision, attempt)
            except SessionWriteError as exc:
                # Its end could not be recorded: the store has it running still,
                # and the session's resume runs it again.
                self.run.session.trouble.report(str(exc))
            except Exception as exc:
                if not isinstance(exc, WorkerError):
                    exc = WorkerError(f"unexpected {type(exc).__name__}: {exc}")
                self._fail(exc)
                return
            finally:
                self._attempts.pop(decision, None)
                self._running.pop(decision, None)
                self._show_doing()
                self.run.changed()

    def _fail(self, exc: WorkerError) -> None:
        """The worker stopped answering: every job it ran goes back to the
        queue (or is lost), and its other slots stop."""
        if self.failed:
            return  # another slot saw it first and settled every job
        self.failed = True
        scheduler, store = self.run.scheduler, self.run.store
        running = sorted(self.run.scheduler.workers[self.name].jobs)
        ended_jobs = scheduler.fail_worker(self.name)
        now = time.time()
        for job_id, ended in zip(running, ended_jobs, strict=True):
            store.end_attempt(self._attempts[job_id], job_id, ended.state, AttemptEnd("lost"), now)
        self._warn(f"{self.name} failed: {exc}")
        for job_id, ended in zip(running, ended_jobs, strict=True):
            what = "queued again" if ended.requeued else "lost"
            self.run.console.line(f"{self.name} job {job_id} {what}")
        current = asyncio.current_task()
        for slot in self._slots:
            if slot is not current:
                slot.cancel()

    def _show_doing(self) -> None:
        """The live view's line for this worker: its job, or how many it runs."""
        if len(self._running) == 1:
            ((job_id, command),) = self._running.items()
            self._doing(f"job {job_id}: {command}")
        elif self._running:
            self._doing("jobs " + ", ".join(str(job_id) for job_id in sorted(self._running)))

    async def _run_job(self, transport: Transport, log: TextIO, job_id: int, attempt: int) -> None:
        run, console = self.run, self.run.console
        command = run.store.command(job_id)
        self._running[job_id] = command
        self._show_doing()
        console.line(f"{self.name} job {job_id} started: {command}")
        started_at = time.time()
        started = time.monotonic()
        lines = OutputLines()
        env = self._env(
            CLOUDTASK_JOB=str(job_id),
            CLOUDTASK_ATTEMPT=str(run.store.attempt_number(job_id, attempt)),
        )
        result = await self._execute(transport, log, job_id, command, run.stop, lines, env)
        elapsed = time.monotonic() - started
        tail = lines.tail_text()
        if result.stopped:
            run.scheduler.interrupt(self.name, job_id)
            end = AttemptEnd("stopped", result.exit_status, result.signal, tail, result.usage)
            run.store.end_attempt(attempt, job_id, JobState.PENDING, end, time.time())
            console.line(f"{self.name} job {job_id} stopped by {run.stopped_by}: pending again")
            return
        outcome = outcome_of(result)
        ended = run.scheduler.end_attempt(self.name, job_id, outcome)
        end = AttemptEnd(outcome.value, result.exit_status, result.signal, tail, result.usage)
        run.store.end_attempt(attempt, job_id, ended.state, end, time.time())
        if run.joblog is not None:
            run.joblog.write(
                joblog_line(
                    job_id,
                    self.name,
                    started_at,
                    elapsed,
                    result.exit_status,
                    result.signal,
                    command,
                )
            )
        console.line(
            f"{self.name} job {job_id} "
            + ended_text(result, ended, elapsed, ended.attempts, run.config.retries)
        )
        run.check_budget()
        run.check_halt()
        if ended.worker_retired:
            console.line(
                f"{self.name} retired after {plural(run.config.strikes, 'failure')} in a row"
            )

    async def _execute(
        self,
        transport: Transport,
        log: TextIO,
        job: int | str,
        command: str,
        stop: asyncio.Event | None,
        lines: OutputLines | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run one command, its output streamed to the console and the worker log.

        `lines` keeps the tail of the output, for the job's record.
        """
        lines = lines or OutputLines()
        label = f"job {job}" if isinstance(job, int) else job
        log.write(f"== {label} started {datetime.now().isoformat(timespec='seconds')}: {command}\n")

        def show(completed: list[str]) -> None:
            # The lines one chunk completes (a bounded amount: a long line
            # comes in pieces) go to the worker log in one write, not one each.
            if completed:
                self.run.console.job_output(self.name, job, completed)
                log.write("\n".join(completed) + "\n")

        result = await transport.run(
            command,
            timeout=self.run.config.timeout,
            output=lambda data: show(lines.feed(data)),
            stop=stop,
            env=env,
        )
        show(lines.flush())
        if result.held_open:
            # Out of reach: it left the group that a timeout or abort kills.
            self.run.console.line(
                f"{self.name} {label}: a process it started outside its process group "
                "still holds its output open; not waited for"
            )
            log.write(f"== {label}: its output was still held open; not read further\n")
        log.write(f"== {label} {result.describe()}\n")
        return result
