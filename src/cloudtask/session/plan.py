"""From what was asked to a checked plan: a new session (`plan_start`) or another
run of one (`plan_resume`, for --resume and --retry).

Everything that can refuse a run refuses here, before any job starts: the
input, the workers, the split against the open files allowed, a budget or a
cloud that could not launch one worker, a report that could not be sent.
A new session that is refused is removed: it never was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import environment
from ..addresses import Address
from ..config import (
    AUTO,
    BY_NAME,
    Config,
    TemplateValues,
    check_combinations,
    pointless_options,
    resolve,
)
from ..console import Console, plural
from ..cost import MIN_HOURS, launch_passes_budget
from ..errors import SessionError, UsageError
from ..joblog import Joblog
from ..jobs import Command, Mode, check_length, read_jobs, unit_of
from ..limits import fit_open_files, most_workers
from ..providers import Cloud, is_cloud
from ..providers.cloud import ProviderError
from ..providers.local import usable_cpus
from ..providers.prices import hourly_price
from ..report.digest import left_running
from ..report.hooks import mail_problem, parse_hook
from ..scheduler import JobState
from ..session_keys import where_left
from ..ssh import Target, resolvable, resolve_target
from ..store import Store, meta
from .cleanup import cloud_of, destroy_leftovers, sessions_option
from .directory import SessionDir
from .frontend import Frontend

# Options that say how the input becomes jobs: they mean nothing to a resume.
INPUT_OPTIONS = ("lines", "null", "replace")


@dataclass(frozen=True)
class Plan:
    """What a run of a session works with, once every option is checked."""

    config: Config
    session: SessionDir
    store: Store
    targets: list[Target]  # --workers, resolved
    cloud: Cloud | None  # launches the rest of the split, if any
    split: int
    pending: int  # jobs to run
    joblog: Joblog | None
    # Workers where earlier runs' session keys may be left: removed while the run goes on.
    keys_left: dict[str, tuple[Target, list[str]]] = field(default_factory=dict)
    # A resume's stored options before its own: kept again if it starts no job,
    # so options that could not run anything (a wrong --workers) do not stick.
    kept_config: dict[str, str] | None = None


# The command the jobs' arguments go into and the input they come from,
# asked for once the workers and the provider are checked.
JobSource = Callable[[], tuple[Command, Iterable[bytes]]]


def plan_start(config: Config, jobs: JobSource, frontend: Frontend, loop: asyncio.Runner) -> Plan:
    """A new session with its jobs read from the input, checked and confirmed."""
    console = frontend.console
    targets = worker_targets(config, console)
    cloud = cloud_of(config)  # an unknown provider or a bad option is refused before input
    command, source = jobs()
    session = SessionDir.create(config.sessions)
    joblog = None
    try:
        session.lock()
        store = Store.create(session.path)
        joblog = open_joblog(config)  # before the input: a bad one wastes no reading
        count = store_jobs(store, command, source, config.input_mode)
        split = split_of(config, targets, count)
        fit_open_files(split, local_slots(config))
        refuse_unlaunchable(config, targets, split, store, session.id, loop)
        refuse_unsendable_report(config)
        # Said once nothing is refused, before the question.
        warn_pointless(config, targets, split, console)
        warn_left_running(config, console)
        if frontend.confirm is not None:
            frontend.confirm(config, store, count, split)
    except BaseException:
        session.remove()  # nothing ran: the session never was
        if joblog is not None:
            joblog.discard()
        raise
    store.write(meta.COMMAND, command.shell)
    store.set_config(stored_config(config))
    return Plan(config, session, store, targets, cloud, split, count, joblog)


def plan_resume(
    options: Mapping[str, str | bool],
    given: Config,
    frontend: Frontend,
    loop: asyncio.Runner,
    command_given: bool = False,
) -> Plan:
    """Another run of a session: its unfinished jobs (--resume), and its failed
    ones too (--retry). `options` as given now (an empty value drops a stored
    one) override the session's stored configuration. A plan with nothing
    pending only cleans up what earlier runs left."""
    console = frontend.console
    if given.resume is not None and given.retry is not None:
        raise UsageError("--resume and --retry: give one of them")
    option, session_id = ("--retry", given.retry) if given.retry else ("--resume", given.resume)
    assert session_id is not None
    if command_given:
        raise UsageError(f"{option}: the session has its command; give no other")
    for name in ("dry-run", *INPUT_OPTIONS):
        if name in options or (name == "dry-run" and given.dry_run):
            raise UsageError(
                f"--{name}: {option} runs the jobs the session made from its input when it "
                "started; give it to a new session"
            )
    session = SessionDir.find(given.sessions, session_id, f"{option}={session_id}")
    session.lock()
    store = Store.open(session.path)
    if store.meta(meta.COMMAND) is None:  # set once every input line was stored
        raise SessionError(
            f"{option}={session_id}: session {session_id} never started: its controller died "
            "while reading its input; start it again"
        )
    config = resumed_config(options, store)
    check_combinations(config)
    targets = worker_targets(config, console)
    cloud = cloud_of(config)
    again = [JobState.RUNNING, JobState.LOST]
    if option == "--retry":
        again += [JobState.FAILED, JobState.TIMEOUT]
    counts = store.counts()
    # Refused now, before any job is made pending again; not opened when nothing will run.
    to_run = counts[JobState.PENDING] + sum(counts[state] for state in again)
    joblog = open_joblog(config) if to_run else None
    store.reset(again)
    keys_left = where_left(store, targets, target_resolver(config), console)
    destroy_leftovers(config, session, store, cloud_of(config), console, loop)
    pending = to_run  # what reset made pending, with what was; nothing else changed jobs
    if not pending:
        return Plan(config, session, store, targets, cloud, 0, 0, None, keys_left)
    split = split_of(config, targets, pending)
    fit_open_files(split, local_slots(config))
    refuse_unlaunchable(config, targets, split, store, session.id, loop)
    refuse_unsendable_report(config)
    warn_pointless(config, targets, split, console)
    warn_left_running(config, console)  # of other sessions: this one is held now
    kept = store.config()
    store.set_config(stored_config(config))
    return Plan(config, session, store, targets, cloud, split, pending, joblog, keys_left, kept)


def resumed_config(options: Mapping[str, str | bool], store: Store) -> Config:
    """The options given now over the session's stored ones; `--NAME=` with
    nothing after it drops a stored option (back to its default)."""
    given = {name: value for name, value in options.items() if name not in ("resume", "retry")}
    dropped = {name for name, value in given.items() if value == ""}
    stored = TemplateValues(
        {
            # A flag is stored as it is shown: True.
            BY_NAME[name].attr: value == "True" if BY_NAME[name].flag else value
            for name, value in store.config().items()
            if name in BY_NAME and name not in dropped
        },
        None,
        stored_in=store.path,
    )
    return resolve({name: value for name, value in given.items() if name not in dropped}, stored)


def open_joblog(config: Config) -> Joblog | None:
    return Joblog(Path(config.joblog)) if config.joblog else None


def worker_targets(config: Config, console: Console) -> list[Target]:
    """Where each --workers address leads. A host name not known here leaves
    its worker out, said once; when no worker is left, nothing runs."""
    resolve_one = target_resolver(config)
    targets = [resolve_one(address) for address in config.workers or ()]
    known = [target for target in targets if resolvable(target)]
    unknown = [target for target in targets if target not in known]
    if not unknown:
        return targets
    names = list(dict.fromkeys(target.address.host for target in unknown))
    if known:
        for name in names:
            console.warn(f"--workers: unknown host {name!r}: its worker is left out")
        return known
    (first, *_) = unknown
    if len(targets) == 1 and first.address.user is None and first.address.port is None:
        # A lone word may be a workers file's name, mistyped.
        raise UsageError(
            f"--workers: no file named {first.address.host!r} and no host by that name"
        )
    raise UsageError(f"--workers: unknown host {', '.join(map(repr, names))}: no worker is left")


def target_resolver(config: Config) -> Callable[[Address], Target]:
    user_given = "user" in config.sources
    return lambda address: resolve_target(address, config.user, user_given)


def store_jobs(store: Store, command: Command, source: Iterable[bytes], mode: Mode) -> int:
    """Stream the jobs into the store, every line validated before anything runs."""
    unit = unit_of(mode)
    count = store.add_jobs(
        (job.id, job.line, check_length(command.for_job(job.args), job.line, unit))
        for job in read_jobs(source, mode)
    )
    if not count:
        raise UsageError(f"no jobs: standard input has no job {unit}s")
    return count


def stored_config(config: Config) -> dict[str, str]:
    """The effective options as stored with the session: never a secret."""
    return config.given(secrets=False)


def split_of(config: Config, targets: Sequence[Target], jobs: int) -> int:
    """--split, else the default that fits the provider; never more workers
    than the jobs fill (at --slots=N, N jobs each)."""
    split = config.split or len(targets) or local_split(config) or 1
    slots = config.slots if isinstance(config.slots, int) else 1
    return min(split, -(-jobs // slots))


def local_slots(config: Config) -> int:
    """Jobs at once on each local worker (auto: the CPUs here); 1 for SSH workers,
    whose jobs share a connection."""
    if config.provider != "local" or config.workers:
        return 1
    return usable_cpus() if config.slots == AUTO else int(config.slots)


def local_split(config: Config) -> int | None:
    """With no --split nor --workers, the local provider runs a job per CPU
    (as many as the open files allow: a default is never refused)."""
    if config.provider != "local" or config.workers:
        return None
    return min(usable_cpus(), most_workers() or usable_cpus())


def split_default(config: Config) -> str:
    """Where a split that was not given comes from, for the confirmation."""
    if config.workers:
        return "default: the number of --workers"
    if (cpus := local_split(config)) is not None:
        return f"default: the {plural(cpus, 'CPU')} this process may use, at most the jobs"
    return "default"


def warn_left_running(config: Config, console: Console) -> None:
    """Say so when earlier sessions here launched servers that may still run
    with nobody left to destroy them (their controller and watchdog died)."""
    for session_id, count in left_running(config.sessions):
        console.warn(
            f"session {session_id}: {plural(count, 'launched server')} may still be running, "
            "and no controller or watchdog is left to destroy them: "
            f"cloudtask-destroy-workers --session={session_id}" + sessions_option(config)
        )


def refuse_unsendable_report(config: Config) -> None:
    """A mail report that could not be sent at all is refused before the batch,
    not found after it."""
    if config.report is None:
        return
    problem = mail_problem(parse_hook(config.report), environment.full())
    if problem is not None:
        raise UsageError(f"--report: mail: {problem}")


def warn_pointless(config: Config, targets: Sequence[Target], split: int, console: Console) -> None:
    """One warning naming the options given that do nothing for this run."""
    launching = is_cloud(config.provider) and split > len(targets)
    kinds = {"ssh"} if targets or launching else set()
    if launching:
        kinds |= {"launch", config.provider}
        run = f"its servers are launched by {config.provider}"
    elif targets:
        run = "it launches no server"
    else:
        run = "its jobs run on this machine"
    names = pointless_options(config, kinds)
    if names:
        verb = "does" if len(names) == 1 else "do"
        console.warn(f"{', '.join(names)} {verb} nothing for this run ({run}): ignored")


def refuse_unlaunchable(
    config: Config,
    targets: Sequence[Target],
    split: int,
    store: Store,
    session_id: int,
    loop: asyncio.Runner,
) -> None:
    """A run that only launched workers could run refused before it starts, when
    none can be launched: a budget below one worker, or a cloud that refuses
    the credentials. (With --workers, the run goes on on those.)"""
    if targets or split <= len(targets) or not is_cloud(config.provider):
        return
    cloud = cloud_of(config)
    assert cloud is not None
    price = hourly_price(cloud.name, cloud.size, config.hourly_price)
    budget = config.budget
    if budget is not None and price is not None:
        over = launch_passes_budget(budget, store.instances(), time.time(), None, price)
        if over is not None:
            raise UsageError(
                f"--budget=${budget:g}: even one {cloud.name} worker (${price:g} an hour, "
                f"judged on at least {MIN_HOURS:g} hour) would bring the session to "
                f"${over:.2f}: nothing can be launched"
            )
    refused = loop.run(refusal_of(cloud, session_id))
    if refused is not None:
        raise UsageError(f"--provider={config.provider}: {refused}: nothing can be launched")


async def refusal_of(cloud: Cloud, session_id: int) -> str | None:
    """Why the cloud refuses to be used (bad credentials, say), from one cheap
    call; None when it answers, or fails in a way a retry may mend."""
    try:
        await cloud.instances(session_id)
    except ProviderError as exc:
        return None if exc.transient else str(exc)
    finally:
        await cloud.close()
    return None
