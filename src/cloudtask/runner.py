"""The session loop: workers, scheduler, console and signals wired together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .config import Config
from .console import Console, plural
from .errors import SessionWriteError, WorkerError
from .halt import Halt
from .joblog import Joblog
from .live import LiveView, Snapshot, keep_drawing, snapshot
from .providers import Provider
from .providers.launched import LaunchedWorkers
from .scheduler import JobState, Scheduler
from .session.directory import SessionDir
from .store import Store
from .worker import Run, Worker

# What aborts a run: Ctrl-C, a kill, and a hang-up (the terminal closed, the
# login dropped), which would otherwise end the controller with no cleanup.
ABORT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class RunSummary:
    counts: dict[JobState, int]
    elapsed: float
    aborted: bool
    halted: str | None = None  # what halted the run: --halt=... or --budget=...
    started: int = 0  # attempts started in this run
    # Why the run stopped early if a write under the session directory failed.
    write_error: str | None = None

    @property
    def unfinished(self) -> int:
        return self.counts[JobState.PENDING] + self.counts[JobState.RUNNING]

    @property
    def state(self) -> str:
        """How the run ended, as the store records it (see Store.end_run).

        An abort that came once every job had ended (during the cleanup)
        stopped nothing: the session is finished all the same."""
        if self.aborted and self.unfinished:
            return "aborted"
        if self.halted:
            return "halted"
        if self.unfinished:
            return "incomplete"  # no worker was left to run the rest
        return "finished"

    @property
    def all_ok(self) -> bool:
        return self.counts[JobState.OK] == sum(self.counts.values())


async def run_session(
    config: Config,
    store: Store,
    sources: Sequence[tuple[Provider, int]],
    console: Console,
    session: SessionDir,
    joblog: Joblog | None = None,
) -> RunSummary:
    """Run the pending jobs on `count` workers from each provider, to the end or an abort."""
    started = time.monotonic()
    counts = store.counts()  # one count of every job: it reads the whole state index
    scheduler = Scheduler(
        store.pending_ids(), retries=config.retries, strikes=config.strikes, finished=counts
    )
    halt = Halt.parse(config.halt) if config.halt else None
    run = Run(config, store, scheduler, console, session, joblog=joblog, halt=halt)
    run.total = sum(counts.values())
    run.finished_before = dict(scheduler.finished)
    run.finished_at_start = sum(scheduler.finished.values())
    for provider, _ in sources:
        if isinstance(provider, LaunchedWorkers):
            provider.admit = run.launch_blocked
            provider.status = run.show_status
    if not LiveView.wanted(console.err):
        return await _run_workers(run, sources, started)
    # Until a worker shows up (or a job starts), the workers are starting;
    # once the run is over, none is.
    starting = sum(count for _, count in sources)

    def take() -> Snapshot:
        nonlocal starting
        ended = sum(scheduler.finished.values()) - run.finished_at_start
        if run.doing or scheduler.running or ended:
            starting = 0
        return snapshot(
            session.id,
            run.total,
            scheduler.finished,
            run.finished_at_start,
            scheduler.running,
            time.monotonic() - started,
            run.doing,
            store.instances(),
            time.time(),
            starting,
            run.config.budget,
        )

    view = LiveView(console, take())
    done = asyncio.Event()
    with view.shown():
        drawing = asyncio.create_task(keep_drawing(view, take, done))
        try:
            return await _run_workers(run, sources, started)
        finally:
            starting = 0
            done.set()
            await drawing


async def _run_workers(
    run: Run, sources: Sequence[tuple[Provider, int]], started: float
) -> RunSummary:
    store, console = run.store, run.console
    joblog = run.joblog
    tasks: dict[asyncio.Task[None], Worker] = {}

    def start(provider: Provider) -> None:
        worker = Worker(run, provider)
        tasks[asyncio.create_task(worker.lifecycle())] = worker

    for provider, count in sources:
        for _ in range(count):
            start(provider)
    # A worker that fails is replaced while jobs wait, as far as its provider
    # has spares: launched workers up to their share, listed workers beyond the split.
    replacements = {provider: provider.spares(count) for provider, count in sources}
    aborted = signalled = cancelled = False
    listening = True  # until every worker is done: a loss after that aborts nothing
    loop = asyncio.get_running_loop()
    watched: int | None = None  # stdout, while its reader is watched

    def abort(why: str, again: str = " (again to skip the workers' cleanup)") -> None:
        """Start nothing new, stop the running jobs (pending again), clean up."""
        nonlocal aborted
        if not aborted and listening:
            aborted = True
            console.warn(f"{why}: aborting; running jobs are stopped{again}")
            run.abort()

    def on_signal(signum: int) -> None:
        nonlocal signalled, cancelled
        name = signal.Signals(signum).name
        if not signalled:
            signalled = True
            if aborted:  # by a lost stdout or a full disk: this is no second signal
                console.warn(f"{name}: the run is stopping already (again to skip the cleanup)")
            abort(name)
            return
        if signum == signal.SIGHUP:
            # A hang-up comes more than once (the kernel, then the shell): it
            # never cuts the cleanup short.
            console.warn("SIGHUP again: the cleanup goes on")
            return
        cancelled = True
        console.warn(f"{name} again: stopping now")
        for task in tasks:
            task.cancel()

    def on_stream_lost(stream: str, reason: str) -> None:
        # Nobody reads the run's output any more (| head, a closed terminal):
        # as with a hang-up, the run stops and stays resumable.
        nonlocal watched
        if stream == "stdout":
            if watched is not None:  # before the console points the descriptor elsewhere
                loop.remove_reader(watched)
                watched = None
            abort(f"standard output: {reason}", again="")
        elif console.log is not None:
            console.log.write(f"warning: standard error: {reason}: warnings are in this log only\n")

    def on_write_trouble(reason: str) -> None:
        # A full disk under the session directory: what is committed stays,
        # nothing new starts, and the session is resumed once there is space.
        abort(reason, again="")

    console.on_stream_lost = on_stream_lost
    run.session.trouble.listen(on_write_trouble)
    if "stdout" in console.lost:  # lost before the run began (> /dev/full)
        on_stream_lost("stdout", console.lost["stdout"])
    if run.session.trouble.reason is not None:
        on_write_trouble(run.session.trouble.reason)
    errors: list[BaseException] = []
    try:
        with signals_handled(loop, on_signal):
            watched = watch_stdout_reader(console, loop)
            try:
                await _until_every_worker_is_done(run, tasks, replacements, start, errors)
            finally:
                listening = False
                if watched is not None:
                    loop.remove_reader(watched)
    finally:
        for provider, _ in sources:
            await provider.close()
    if errors:
        raise errors[0]
    if not cancelled and not await skippable(close_again(run), console):
        for name in run.unclosed:
            console.warn(f"{name}: cleanup skipped, the session key is left there")
    if joblog is not None and (joblog_error := joblog.close()) is not None:
        console.warn(f"--joblog: cannot write {joblog_error}: the lines from then on are missing")
    counts = store.counts()
    left = counts[JobState.PENDING]
    if left and not aborted and not run.halted:
        console.warn(f"no worker is left to run the {plural(left, 'pending job')}")
    return RunSummary(
        counts,
        time.monotonic() - started,
        aborted,
        run.halted,
        run.attempts_started,
        run.session.trouble.reason,
    )


async def _until_every_worker_is_done(
    run: Run,
    tasks: dict[asyncio.Task[None], Worker],
    replacements: dict[Provider, int],
    start: Callable[[Provider], None],
    errors: list[BaseException],
) -> None:
    """Wait for the workers' lifecycles; a launched worker that failed is
    replaced while jobs wait. What a worker raised goes to `errors`."""
    scheduler, console = run.scheduler, run.console
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            worker = tasks[task]
            if task.cancelled():
                continue
            if isinstance(error := task.exception(), SessionWriteError):
                run.session.trouble.report(str(error))  # the worker cleaned up on its way out
                continue
            if error is not None:
                errors.append(error)
                continue
            provider = worker.provider
            wanted = scheduler.queue and not scheduler.stopped
            failed = worker.failed or (worker.unready and provider.replace_unready)
            if failed and replacements.get(provider) and wanted:
                replacements[provider] -= 1
                console.line(f"{worker.name} failed: {provider.replacing}")
                start(provider)
                pending |= {t for t in tasks if not t.done()}


def watch_stdout_reader(console: Console, loop: asyncio.AbstractEventLoop) -> int | None:
    """When stdout is a pipe, notice its reader going away (`| head -1`) even
    while nothing is written: the pipe then polls as an error. The write that
    follows fails, and the console drops stdout and says so (on_stream_lost).
    The descriptor watched, or None."""
    try:
        fd = console.out.fileno() if console.out is not None else -1
        if fd < 0 or not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
    except (OSError, ValueError):  # no descriptor (a test's stream), or a closed one
        return None

    def reader_gone() -> None:
        loop.remove_reader(fd)
        console.write("stdout", "\n")

    loop.add_reader(fd, reader_gone)
    return fd


async def skippable(step: Coroutine[Any, Any, None], console: Console) -> bool:
    """Run a last step that may take a while; SIGINT or SIGTERM skips it (False)."""
    running = asyncio.ensure_future(step)

    def skip(signum: int) -> None:
        console.warn(f"{signal.Signals(signum).name}: skipping the last cleanup tries")
        running.cancel()

    with signals_handled(asyncio.get_running_loop(), skip):
        try:
            await running
            return True
        except asyncio.CancelledError:
            if not running.cancelled():
                raise
            return False


@contextlib.contextmanager
def signals_handled(
    loop: asyncio.AbstractEventLoop, handler: Callable[[int], None]
) -> Iterator[None]:
    """handler(signum) for each abort signal that the process does not ignore
    (`nohup` ignores SIGHUP: that stays so); on the way out, the handlers from
    before, where asyncio would leave the defaults (which end the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread takes signals (an API call from another)
        return
    taken = {
        signum: signal.getsignal(signum)
        for signum in ABORT_SIGNALS
        if signal.getsignal(signum) != signal.SIG_IGN
    }
    for signum in taken:
        loop.add_signal_handler(signum, handler, signum)
    try:
        yield
    finally:
        for signum, before in taken.items():
            loop.remove_signal_handler(signum)
            if before is not None:
                signal.signal(signum, before)


# Pauses before the last tries at a failed cleanup: a worker that was just
# restarted or reconnected gets a few seconds to answer again.
CLEANUP_RETRY_PAUSES = (0.0, 2.0, 5.0)


async def close_again(run: Run) -> None:
    """The last tries at the cleanups that failed (a worker unreachable then)."""
    failures: dict[str, str] = {}
    if run.unclosed:
        run.console.line(f"trying again to clean up {', '.join(run.unclosed)} (Ctrl-C skips it)")
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
