"""Drive a plan to its end: the workers it needs, the run, what is said after it.

`drive` runs every step of a run on the one event loop it is given and
returns a frozen `SessionResult`; it prints only through the frontend's
console.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from ..config import Config
from ..console import Console, plural, summary_line
from ..errors import ExitStatus
from ..providers import Provider
from ..providers.launched import LaunchedWorkers, settled
from ..providers.local import LocalProvider
from ..providers.prelaunched import Prelaunched
from ..providers.prices import hourly_price
from ..report.run import report
from ..runner import RunSummary, run_session
from ..session_keys import recorded_key, remove_left_keys, worker_id
from ..ssh import SessionKey
from ..store import Store, meta
from ..watchdog import LOG_NAME, Watchdog
from .cleanup import (
    after_the_run,
    alongside,
    earlier_keys_removal,
    resume_command,
    sessions_option,
    settle_launches,
    ssh_options,
    stop_leftover_jobs,
    watched,
)
from .directory import SessionDir, locks_released
from .frontend import Frontend
from .plan import JobSource, Plan, plan_resume, plan_start
from .result import SessionResult, job_counts


def drive(plan: Plan, frontend: Frontend, loop: asyncio.Runner) -> SessionResult:
    """Run the session's pending jobs to the end, or until aborted."""
    if not plan.pending:
        return finish_idle(plan, frontend, loop)
    console, session = frontend.console, plan.session
    try:
        return drive_run(plan, frontend, loop)
    except KeyboardInterrupt:
        # Ctrl-C outside the run's own handling (the last cleanup tries, the
        # sweep, the report): what is recorded stays, the watchdog sweeps on.
        frontend.last_stretch()
        console.log = None  # the session log was closed on the way out
        console.warn(
            f"interrupted: session {session.id} is saved; resume with: "
            + resume_command(plan.config, session)
        )
        store = plan.store
        return SessionResult(
            session.id,
            session.path,
            store.meta(meta.STATE) or "aborted",
            job_counts(store.counts()),
            ExitStatus.NOT_OK,
        )


def finish_idle(plan: Plan, frontend: Frontend, loop: asyncio.Runner) -> SessionResult:
    """A resume that has no job to run: it only cleans up what earlier runs left."""
    config, session, store, console = plan.config, plan.session, plan.store, frontend.console
    if plan.keys_left:
        loop.run(earlier_keys_removal(config, session, store, console, plan.keys_left))
    left_running: list[str] = []
    if plan.cloud is not None and not settled(store, time.time()):
        # Not all is known to be gone yet: a watchdog goes on after this process.
        with Watchdog.started(session, config):
            left_running = warn_left_running(config, session, store, console)
    if store.meta(meta.STATE) != "finished":
        # Its last controller died after the last job ended (or was stopped
        # then): the session ended when its last job did.
        ended = store.last_attempt_end() or time.time()
        store.end_run(ended, "finished")
    frontend.say(f"session {session.id} is finished: nothing to run")
    frontend.last_stretch()
    counts = store.counts()
    frontend.say(summary_line(session.id, 0, counts))
    # Every job is done, but a server that may still bill is not all ok.
    status = ExitStatus.NOT_OK if left_running else ExitStatus.OK
    return SessionResult(
        session.id,
        session.path,
        "finished",
        job_counts(counts),
        status,
        left_running=tuple(left_running),
    )


def warn_left_running(
    config: Config, session: SessionDir, store: Store, console: Console
) -> list[str]:
    """Say which launched servers are not known to be destroyed, and what
    ends them; their names."""
    left = [record.name for record in store.instances(open_only=True)]
    console.warn(
        f"{', '.join(left) or 'launched instances'} may still be running: "
        f"the watchdog's sweep is under way ({session.path / LOG_NAME}); "
        f"or run cloudtask-destroy-workers --session={session.id}" + sessions_option(config)
    )
    return left


def drive_run(plan: Plan, frontend: Frontend, loop: asyncio.Runner) -> SessionResult:
    config, session, store, console = plan.config, plan.session, plan.store, frontend.console
    split = plan.split
    # A provider given as an object is the only source of workers.
    given = frontend.provider
    targets, cloud = (plan.targets, plan.cloud) if given is None else ([], None)
    sources: list[tuple[Provider, int]] = [] if given is None else [(given, split)]
    if targets:
        # Every run's key is recorded before it is used, and each worker it is
        # sent to: if this controller is killed, the next run removes it.
        key = recorded_key(session.id, store)
        prelaunched = Prelaunched(targets, ssh_options(config, session), key)
        sources.append((prelaunched, min(split, len(targets))))
    else:
        key = SessionKey(session.id)  # for launched workers, injected at boot only
    launched: LaunchedWorkers | None = None
    if cloud is not None and split > len(targets):
        price = hourly_price(cloud.name, cloud.size, config.hourly_price)
        if config.budget is not None and price is None:
            console.warn(
                f"--budget: no price known for {cloud.name} size {cloud.size}: give "
                "--hourly-price, or the budget cannot be kept"
            )
        launched = LaunchedWorkers(
            cloud,
            store,
            session,
            ssh_options(config, session),
            key,
            config.user,
            price,
            console.warn,
            boot_limit=config.boot_timeout,
        )
        launched.note = console.line
        sources.append((launched, split - len(targets)))
    local = None
    if not sources:
        local = LocalProvider.from_config(config)
        sources.append((local, split))
    watchdog_config = watched(config, launched is not None)
    with (
        session.open_log(session.log_path) as log,
        Watchdog.started(session, watchdog_config) as dog,
    ):
        console.log = log
        if local is not None:
            stop_leftover_jobs(local, session, store, console)
        names = " + ".join(f"{provider.name} x{count}" for provider, count in sources)
        console.line(
            f"session {session.id}: {plural(plan.pending, 'job')} to run, "
            f"split {split} ({names}), log {session.log_path}"
        )
        store.begin_run(time.time())
        running = run_session(config, store, sources, console, session, plan.joblog)
        removal = (
            earlier_keys_removal(config, session, store, console, plan.keys_left, key.line)
            if plan.keys_left
            else None
        )
        summary = loop.run(alongside(running, removal, session))
        # Recorded now: an interrupt in what follows leaves the jobs' outcome read right.
        after_the_run(session, lambda: store.end_run(time.time(), summary.state, summary.halted))
        kept = plan.kept_config
        if kept is not None and not summary.started and kept != store.config():
            after_the_run(session, lambda: store.set_config(kept))
            console.warn(
                "no job started: the options given with this resume are not kept; "
                "the session's next run starts from the ones it had before"
            )
        if targets:
            # Where adding the key failed midway, a copy may be there unseen:
            # every copy is removed from those workers.
            maybe = {worker_id(target): (target, [key.line]) for target in key.maybe_left.values()}
            after_the_run(
                session,
                lambda: loop.run(
                    remove_left_keys(
                        maybe,
                        ssh_options(config, session),
                        store,
                        console,
                        "this run's",
                        resume_command(config, session),
                    )
                ),
            )
            if still := sorted(set(store.key_workers().get(key.line, []))):
                console.warn(
                    f"this run's session key is left on {', '.join(still)}: "
                    f"{resume_command(config, session)} removes it once they can be reached"
                )
        left_running: list[str] = []
        if launched is not None:
            if not summary.aborted:  # after an abort, waiting on the cloud is the watchdog's
                settle_launches(config, session, store, console, loop)
            if settled(store, time.time()):
                dog.release()  # every launched instance is destroyed: nothing left to watch
            else:
                left_running = warn_left_running(config, session, store, console)
        say_how_it_ended(plan, summary, console)
        if config.report:
            report(config.report, session, summary.elapsed, console.line, console.warn)
        frontend.last_stretch()
        last_word(console, summary_line(session.id, summary.elapsed, summary.counts))
        console.log = None
    all_ok = summary.all_ok and not left_running
    return SessionResult(
        session.id,
        session.path,
        summary.state,
        job_counts(summary.counts),
        ExitStatus.OK if all_ok else ExitStatus.NOT_OK,
        summary.elapsed,
        summary.halted,
        tuple(left_running),
    )


def say_how_it_ended(plan: Plan, summary: RunSummary, console: Console) -> None:
    """What stopped a run that left jobs undone, and how to go on."""
    session = plan.session
    resume = resume_command(plan.config, session)
    state = summary.state
    if session.trouble.reason is not None and summary.unfinished:
        last_word(
            console,
            f"session {session.id} stopped: {session.trouble.reason}; "
            f"once there is space again, resume with: {resume}",
        )
    elif session.trouble.reason is not None:
        console.warn(f"{session.trouble.reason}; every job had ended, so nothing was lost")
    elif state == "halted":
        last_word(
            console,
            f"session {session.id} halted ({summary.halted}): the rest is pending; "
            f"resume with: {resume}",
        )
    elif state == "aborted":
        last_word(
            console,
            f"session {session.id} aborted: unfinished jobs are pending; resume with: {resume}",
        )
    elif state == "incomplete":
        last_word(
            console,
            f"session {session.id} incomplete: the rest is pending; resume with: {resume}",
        )


def last_word(console: Console, text: str) -> None:
    """A line that ends the run (how to resume, the summary), on stdout; on
    stderr too when stdout was lost, so whoever watches still learns it."""
    console.line(text)
    if "stdout" in console.lost:
        console.write("stderr", text + "\n")


def start(config: Config, jobs: JobSource, frontend: Frontend) -> SessionResult:
    """A new session, run to the end on one event loop (see `plan_start`)."""
    with asyncio.Runner() as loop, locks_released():
        plan = plan_start(config, jobs, frontend, loop)
        try:
            return drive(plan, frontend, loop)
        finally:
            plan.store.close()


def resume(
    options: Mapping[str, str | bool],
    config: Config,
    frontend: Frontend,
    command_given: bool = False,
) -> SessionResult:
    """Another run of the session `config` names, on one event loop (see `plan_resume`)."""
    with asyncio.Runner() as loop, locks_released():
        plan = plan_resume(options, config, frontend, loop, command_given)
        try:
            return drive(plan, frontend, loop)
        finally:
            plan.store.close()
