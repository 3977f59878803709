"""The session loop: workers, scheduler, console and signals wired together."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .console import Console
from .errors import WorkerError
from .halt import Halt
from .joblog import Joblog
from .providers import Provider
from .scheduler import JobState, Scheduler
from .session import SessionDir
from .store import Store
from .worker import Run, Worker


@dataclass(frozen=True)
class RunSummary:
    counts: dict[JobState, int]
    elapsed: float
    aborted: bool
    halted: bool = False
    # Every worker was cleaned up (session key removed): nothing is left for a
    # later run of the session to clean.
    cleaned: bool = True

    @property
    def all_ok(self) -> bool:
        return not self.aborted and self.counts[JobState.OK] == sum(self.counts.values())


async def run_session(
    config: Config,
    store: Store,
    provider: Provider,
    split: int,
    console: Console,
    session: SessionDir,
) -> RunSummary:
    started = time.monotonic()
    scheduler = Scheduler(
        store.pending_ids(),
        retries=config.retries,
        strikes=config.strikes,
        finished=store.counts(),
    )
    joblog = Joblog(Path(config.joblog)) if config.joblog else None
    halt = Halt.parse(config.halt) if config.halt else None
    run = Run(config, store, scheduler, console, session, joblog=joblog, halt=halt)
    tasks = [asyncio.create_task(Worker(run, provider).lifecycle()) for _ in range(split)]
    aborted = cancelled = False

    def on_signal(signum: int) -> None:
        nonlocal aborted
        if not aborted:
            aborted = True
            console.warn(
                f"{signal.Signals(signum).name}: aborting; running jobs are stopped "
                "(again to skip the workers' cleanup)"
            )
            run.abort()
            return
        nonlocal cancelled
        cancelled = True
        console.warn(f"{signal.Signals(signum).name} again: stopping now")
        for task in tasks:
            task.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
    await close_again(run)
    if joblog is not None:
        joblog.close()
    counts = store.counts()
    left = counts[JobState.PENDING]
    if left and not aborted and not run.halted:
        console.warn(f"no worker is left to run the {left} pending jobs")
    cleaned = not cancelled and not run.unclosed
    return RunSummary(counts, time.monotonic() - started, aborted, run.halted, cleaned)


# Pauses before the last tries at a failed cleanup: a worker that was just
# restarted or reconnected gets a few seconds to answer again.
CLEANUP_RETRY_PAUSES = (0.0, 2.0, 5.0)


async def close_again(run: Run) -> None:
    """The last tries at the cleanups that failed (a worker unreachable then)."""
    failures: dict[str, str] = {}
    for pause in CLEANUP_RETRY_PAUSES:
        if not run.unclosed:
            return
        await asyncio.sleep(pause)
        for name, transport in list(run.unclosed.items()):
            try:
                await transport.close()
            except WorkerError as exc:
                failures[name] = str(exc)
            else:
                run.console.line(f"{name} cleaned up")
                del run.unclosed[name]
    for name in run.unclosed:
        run.console.warn(f"{name}: cleanup failed, the session key is left there: {failures[name]}")
