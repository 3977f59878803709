"""The `cloudtask` command: argv, template and environment in; a session run."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

from . import __version__, environment
from .addresses import Address
from .argv import Argv, scan
from .config import (
    BY_NAME,
    OPTIONS,
    Config,
    Option,
    TemplateValues,
    check_combinations,
    pointless_options,
    resolve,
    template_text,
)
from .console import Console, plan_text, plural, silence_stdout, summary_line
from .cost import MIN_HOURS, launch_passes_budget
from .errors import (
    CloudtaskError,
    ExitStatus,
    OutputError,
    SessionError,
    SessionWriteError,
    UsageError,
    error_text,
)
from .joblog import Joblog
from .jobs import Command, Mode, check_length, read_jobs, unit_of
from .limits import fit_open_files, most_workers
from .output import printable
from .providers import Cloud, Provider, get_cloud, is_cloud
from .providers.cloud import ProviderError
from .providers.launched import LaunchedWorkers, settled, sweep_and_close
from .providers.local import LocalProvider, usable_cpus
from .providers.prelaunched import Prelaunched
from .providers.prices import hourly_price
from .report.digest import left_running
from .report.hooks import mail_problem, parse_hook
from .report.run import report
from .runner import run_session
from .scheduler import JobState
from .session import SessionDir
from .session_keys import recorded_key, remove_left_keys, where_left, worker_id
from .ssh import (
    HostKeys,
    SessionKey,
    SSHOptions,
    Target,
    resolvable,
    resolve_target,
)
from .store import Store
from .transport.local import kill_leftovers
from .watchdog import LOG_NAME, Watchdog

T = TypeVar("T")
USAGE = "usage: {prog} [OPTIONS] {command}[ARG...] < JOBS"


# Every cloudtask option: its metavar, None for a flag.
KNOWN_OPTIONS = {option.name: None if option.flag else option.metavar for option in OPTIONS}
SHORT_FLAGS = {option.short: option.name for option in OPTIONS if option.short}
BARE_VALUES = {option.name: option.bare for option in OPTIONS if option.bare is not None}


def parse_argv(argv: Sequence[str]) -> Argv:
    """Options up to the first positional argument; everything after is the command."""
    return scan(argv, KNOWN_OPTIONS, interleaved=False, short=SHORT_FLAGS, bare=BARE_VALUES)


def help_text(
    prog: str,
    description: str | None,
    has_command: bool,
    template_values: Mapping[str, object] | None = None,
) -> str:
    """--help; a template's own values are shown where it sets an option."""
    template_values = template_values or {}
    command = "" if has_command else "COMMAND "
    lines = [USAGE.format(prog=prog, command=command), ""]
    lines.append(
        description
        or "Run COMMAND once for every line of standard input, the line's "
        "words appended as arguments, in parallel on several workers."
    )
    lines += [
        "",
        "options (each also CLOUDTASK_<NAME> in the environment, or NAME in a task template):",
    ]
    for option in OPTIONS:
        lines.append(f"  {help_flag(option)}")
        lines.append(f"      {option.help}")
        default = option.default_help or (
            None if option.default in (None, False) else str(option.default)
        )
        extra = f"env {option.env}" + (f"; default: {default}" if default else "")
        if option.attr in template_values:
            # Above the environment, below the command line (config.resolve).
            value = "(set)" if option.secret else _help_value(option, template_values[option.attr])
            extra = f"this template: {value} (the command line overrides it, {option.env} does not)"
        lines.append(f"      {extra}")
    lines += [
        "  -h, --help",
        "      show this help and exit",
        "  --version",
        "      show the version and exit",
        "",
        "exit status: 0 every job ok, 1 some job not ok or aborted, 2 usage or input error",
    ]
    return "\n".join(lines)


def help_flag(option: Option) -> str:
    """How --help names an option: --split=N, --null, -0, --replace[=STR]."""
    if option.flag:
        return option.flag_name + (f", {option.short}" if option.short else "")
    if option.bare is not None:
        return f"{option.flag_name}[={option.metavar}]"
    return f"{option.flag_name}={option.metavar}"


def _help_value(option: Option, value: object) -> str:
    try:
        return template_text(option, value) or "no"
    except ValueError:
        return repr(value)


@dataclass(frozen=True)
class Template:
    """A task template's contribution: option values, command, description."""

    values: TemplateValues
    command: Command | None
    description: str | None


def run(
    argv: Sequence[str],
    template: Template | None = None,
    prog: str = "cloudtask",
    stdin: IO[bytes] | None = None,
) -> int:
    """The whole command; returns its exit status. Errors are one line, never a traceback."""
    open_closed_streams()
    interrupt_on_kill()
    console = Console()
    if stdin is None and sys.stdin is not None:
        stdin = sys.stdin.buffer
    try:
        status = _run(argv, template, prog, stdin, console)
    except CloudtaskError as exc:
        say_error(error_text(prog, exc))
        return int(exc.exit_status)
    except BrokenPipeError:  # stdout closed early (| head): the rest is not wanted
        silence_stdout()
        return ExitStatus.OK
    except KeyboardInterrupt:  # before any job started: nothing to clean up
        nothing_left_to_interrupt()
        say_error(f"\n{prog}: interrupted: nothing ran\n")
        return ExitStatus.NOT_OK
    return flush_stdout(prog, status)


def interrupt_on_kill() -> None:
    """Outside the run's own handling, a kill or a hang-up is an interrupt, as
    Ctrl-C is: before the run, a session that has not run is removed, not left
    half-made; after it, the session is saved and the resume hint printed."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(signum, signal.default_int_handler)


def open_closed_streams() -> None:
    """Standard streams closed at start (`<&-`, `2>&-`) are opened on /dev/null.

    Otherwise the first files the run opens (its lock, its store) would take
    their numbers, and whatever writes to "stderr" would write into them.
    Python has already set sys.stdin/stdout/stderr to None for them: that stays,
    and says that they are closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


def say_error(text: str) -> None:
    """An error on stderr; where stderr is closed or broken, on stdout; where
    neither takes it, nowhere (the exit status still tells)."""
    for stream in (sys.stderr, sys.stdout):
        if stream is None:
            continue
        try:
            stream.write(text)
            stream.flush()
            return
        except OSError:
            continue


def out(text: str) -> None:
    """Print a line on stdout, now. A stdout that cannot take it (/dev/full) is
    an OutputError; one whose reader is gone (| head) a BrokenPipeError."""
    write_stdout(text + "\n")


def write_stdout(text: str) -> None:
    """Write on stdout, now; its errors as out() says."""
    if sys.stdout is None:
        return  # closed from the start: nobody is reading
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        silence_stdout()
        raise OutputError(f"cannot write standard output: {exc.strerror or exc}") from None


def flush_stdout(prog: str, status: int) -> int:
    """Write out what stdout still buffers now: a full stdout (/dev/full) is then
    one error line and exit status 1, not the interpreter's complaint at exit."""
    if sys.stdout is None:
        return status
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()  # the reader wanted no more
    except OSError as exc:
        silence_stdout()
        say_error(f"{prog}: cannot write standard output: {exc.strerror or exc}\n")
        return max(status, ExitStatus.NOT_OK)
    return status


def _run(
    argv: Sequence[str],
    template: Template | None,
    prog: str,
    stdin: IO[bytes] | None,
    console: Console,
) -> int:
    parsed = parse_argv(argv)
    has_command = template is not None and template.command is not None
    if parsed.help:
        out(
            help_text(
                prog,
                template.description if template else None,
                has_command,
                template.values.values if template else None,
            )
        )
        return ExitStatus.OK
    if parsed.version:
        out(f"cloudtask {__version__}")
        return ExitStatus.OK
    # An empty --NAME= drops a stored option on resume (see _resume); elsewhere it is refused.
    given = {name: value for name, value in parsed.options.items() if value != ""}
    config = resolve(given, template.values if template else None)
    if config.resume is not None or config.retry is not None:
        return _resume(parsed, config, console)
    if given != parsed.options:
        resolve(parsed.options, template.values if template else None)
    check_combinations(config)
    if config.dry_run:  # nothing is contacted: neither the workers nor the cloud
        return dry_run(config, *job_source(config, template, parsed.positional, prog, stdin))
    targets = worker_targets(config, console)
    cloud = cloud_of(config)  # an unknown provider or a bad option is refused before input
    command, stdin = job_source(config, template, parsed.positional, prog, stdin)
    session = SessionDir.create(config.sessions)
    joblog = None
    try:
        session.lock()
        store = Store.create(session.path)
        joblog = open_joblog(config)  # before the input: a bad one wastes no reading
        jobs = store_jobs(store, command, stdin, input_mode(config))
        split = split_of(config, targets, jobs)
        fit_open_files(split)
        refuse_unlaunchable(config, targets, split, store, session.id)
        refuse_unsendable_report(config)
        # Said once nothing is refused, before the question.
        warn_pointless(config, targets, split, console)
        warn_left_running(config, console)
        if sys.stderr is not None and sys.stderr.isatty() and not config.force:
            confirm(config, store, jobs, split)
    except BaseException:
        session.remove()  # nothing ran: the session never was
        if joblog is not None:
            joblog.discard()
        raise
    store.set("command", command.shell)
    store.set_config(stored_config(config))
    return _drive(Plan(config, session, store, targets, cloud, split, jobs, joblog), console)


def _resume(parsed: Argv, given: Config, console: Console) -> int:
    """--resume=ID / --retry=ID: run a session's unfinished (and failed) jobs again.

    Options given now override the session's stored configuration.
    """
    if given.resume is not None and given.retry is not None:
        raise UsageError("--resume and --retry: give one of them")
    option, session_id = ("--retry", given.retry) if given.retry else ("--resume", given.resume)
    assert session_id is not None
    if parsed.positional:
        raise UsageError(f"{option}: the session has its command; give no other")
    for name in ("dry-run", *INPUT_OPTIONS):
        if name in parsed.options or (name == "dry-run" and given.dry_run):
            raise UsageError(
                f"--{name}: {option} runs the jobs the session made from its input when it "
                "started; give it to a new session"
            )
    session = SessionDir.find(given.sessions, session_id, f"{option}={session_id}")
    session.lock()
    store = Store.open(session.path)
    if store.get("command") is None:  # set once every input line was stored
        raise SessionError(
            f"{option}={session_id}: session {session_id} never started: its controller died "
            "while reading its input; start it again"
        )
    cli_options = {
        name: value for name, value in parsed.options.items() if name not in ("resume", "retry")
    }
    # --NAME= with nothing after it drops a stored option: back to its default.
    dropped = {name for name, value in cli_options.items() if value == ""}
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
    cli_options = {name: value for name, value in cli_options.items() if name not in dropped}
    config = resolve(cli_options, stored)
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
    destroy_leftovers(config, session, store, cloud_of(config), console)
    pending = to_run  # what reset made pending, with what was; nothing else changed jobs
    if not pending:
        if keys_left:
            asyncio.run(earlier_keys_removal(config, session, store, console, keys_left))
        if is_cloud(config.provider) and not settled(store, time.time()):
            # Not all is known to be gone yet: a watchdog goes on after this process.
            with Watchdog.started(session, config):
                console.warn(
                    "launched instances may still be running: the watchdog's sweep is under way"
                )
        if store.get("state") != "finished":
            # Its last controller died after the last job ended (or was stopped
            # then): the session ended when its last job did.
            ended = store.last_attempt_end() or time.time()
            store.end_run(ended, "finished")
        out(f"session {session.id} is finished: nothing to run")
        nothing_left_to_interrupt()
        out(summary_line(session.id, 0, store.counts()))
        return ExitStatus.OK
    split = split_of(config, targets, pending)
    fit_open_files(split)
    refuse_unlaunchable(config, targets, split, store, session.id)
    refuse_unsendable_report(config)
    warn_pointless(config, targets, split, console)
    warn_left_running(config, console)  # of other sessions: this one is held now
    kept = store.config()
    store.set_config(stored_config(config))
    plan = Plan(config, session, store, targets, cloud, split, pending, joblog, keys_left, kept)
    return _drive(plan, console)


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


def _drive(plan: Plan, console: Console) -> int:
    """Run the session's pending jobs to the end, or until aborted; the exit status."""
    config, session = plan.config, plan.session
    try:
        return _drive_run(plan, console)
    except KeyboardInterrupt:
        # Ctrl-C outside the run's own handling (the last cleanup tries, the
        # sweep, the report): what is recorded stays, the watchdog sweeps on.
        nothing_left_to_interrupt()
        console.log = None  # the session log was closed on the way out
        console.warn(
            f"interrupted: session {session.id} is saved; resume with: "
            f"cloudtask --resume={session.id}" + sessions_option(config)
        )
        return ExitStatus.NOT_OK


def _drive_run(plan: Plan, console: Console) -> int:
    config, session, store, targets = plan.config, plan.session, plan.store, plan.targets
    cloud, split = plan.cloud, plan.split
    sources: list[tuple[Provider, int]] = []
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
    # A run that launches nothing has nothing for a watchdog to watch.
    watched = config if launched is not None else None
    with session.open_log(session.log_path) as log, Watchdog.started(session, watched) as dog:
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
        summary = asyncio.run(alongside(running, removal, session))
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
                lambda: asyncio.run(
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
                settle_launches(config, session, store, console)
            if settled(store, time.time()):
                dog.release()  # every launched instance is destroyed: nothing left to watch
            else:
                left_running = [record.name for record in store.instances(open_only=True)]
                console.warn(
                    f"{', '.join(left_running) or 'launched instances'} may still be running: "
                    f"the watchdog's sweep is under way ({session.path / LOG_NAME}); "
                    f"or run cloudtask-destroy-workers --session={session.id}"
                    + sessions_option(config)
                )
        resume = f"cloudtask --resume={session.id}" + sessions_option(config)
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
        if config.report:
            report(config.report, session, summary.elapsed, console.line, console.warn)
        nothing_left_to_interrupt()
        last_word(console, summary_line(session.id, summary.elapsed, summary.counts))
        console.log = None
    return ExitStatus.OK if summary.all_ok and not left_running else ExitStatus.NOT_OK


def last_word(console: Console, text: str) -> None:
    """A line that ends the run (how to resume, the summary), on stdout; on
    stderr too when stdout was lost, so whoever watches still learns it."""
    console.line(text)
    if "stdout" in console.lost:
        console.write("stderr", text + "\n")


def after_the_run(session: SessionDir, write: Callable[[], None]) -> None:
    """A store write once the run is over. On a full disk it is reported, not
    raised: the store then still says what a resume needs to know (jobs running
    or pending, keys that may be on workers), so the session stays resumable."""
    try:
        write()
    except SessionWriteError as exc:
        session.trouble.report(str(exc))


def open_joblog(config: Config) -> Joblog | None:
    return Joblog(Path(config.joblog)) if config.joblog else None


def settle_launches(config: Config, session: SessionDir, store: Store, console: Console) -> None:
    """Launches whose outcome is unknown (the call failed midway) are looked for by
    the session's tag, and what they made destroyed; else the watchdog tries later."""
    if settled(store, time.time()):
        return
    cloud = cloud_of(config)
    assert cloud is not None
    try:
        asyncio.run(sweep_and_close(cloud, store, session.id, console.warn))
    except CloudtaskError as exc:
        console.warn(f"cannot check the session's instances now ({exc}): the watchdog will")


def cloud_of(config: Config) -> Cloud | None:
    """The cloud that launches workers, when the provider is one; its options checked.

    Each event loop (asyncio.run) gets a cloud of its own: API clients are
    bound to the loop that first used them.
    """
    if not is_cloud(config.provider):
        return None
    return get_cloud(config.provider).from_config(config)


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
    config: Config, targets: Sequence[Target], split: int, store: Store, session_id: int
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
    refused = asyncio.run(refusal_of(cloud, session_id))
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


def destroy_leftovers(
    config: Config, session: SessionDir, store: Store, cloud: Cloud | None, console: Console
) -> None:
    """Destroy what earlier runs of the session launched and left (a killed controller)."""
    records = store.instances(open_only=True)
    if settled(store, time.time()) or (cloud is None and not records):
        return  # every instance the session launched is recorded as destroyed
    if cloud is None or any(record.provider != cloud.name for record in records):
        names = sorted({record.provider for record in records})
        raise SessionError(
            f"session {session.id} has instances of {', '.join(names)} that may still run; "
            f"give that --provider (and its options) to destroy them first"
        )

    try:
        destroyed = asyncio.run(sweep_and_close(cloud, store, session.id, console.warn))
    except CloudtaskError as exc:
        console.warn(f"cannot destroy what earlier runs left now ({exc}): they stay recorded")
        return
    for instance_id in destroyed:
        console.line(f"destroyed {instance_id}, left by an earlier run of session {session.id}")


def ssh_options(config: Config, session: SessionDir) -> SSHOptions:
    return SSHOptions(
        identity=config.ssh_identity,
        keepalive=config.keepalive,
        host_keys=HostKeys(session.known_hosts_path),
        connect_timeout=config.connect_timeout,
    )


def target_resolver(config: Config) -> Callable[[Address], Target]:
    user_given = "user" in config.sources
    return lambda address: resolve_target(address, config.user, user_given)


def resume_command(config: Config, session: SessionDir) -> str:
    return f"cloudtask --resume={session.id}" + sessions_option(config)


def earlier_keys_removal(
    config: Config,
    session: SessionDir,
    store: Store,
    console: Console,
    left: dict[str, tuple[Target, list[str]]],
    keep: str | None = None,
) -> Coroutine[Any, Any, None]:
    """Remove the keys that earlier runs (killed, or stopped before their
    cleanup) may have left on the session's workers, whether this run uses
    them or not; `keep` is this run's own key."""
    options = ssh_options(config, session)
    resume = resume_command(config, session)
    return remove_left_keys(left, options, store, console, "an earlier run's", resume, keep)


async def alongside(
    main: Awaitable[T], chore: Coroutine[Any, Any, None] | None, session: SessionDir
) -> T:
    """`main`'s result; `chore` goes on beside it and is cancelled if it is
    still going when `main` is done (nothing waits on it then)."""
    if chore is None:
        return await main
    task = asyncio.ensure_future(chore)
    try:
        return await main
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except SessionWriteError as exc:
            session.trouble.report(str(exc))


def stop_leftover_jobs(
    provider: LocalProvider, session: SessionDir, store: Store, console: Console
) -> None:
    """Local jobs of an earlier, killed controller run on in sessions of their own:
    stop them before their jobs run again. This run's tag is recorded first."""
    stale = store.local_runs()
    tag = f"{session.id}-{secrets.token_hex(8)}"
    store.add_local_run(tag)
    provider.tag_jobs(tag)
    stopped = kill_leftovers(stale)
    if stopped:
        console.line(f"stopped {plural(stopped, 'job')} that an earlier run of the session left")


def sessions_option(config: Config) -> str:
    """--sessions for the resume command, when it is not the default."""
    if config.sources.get("sessions", "default") == "default":
        return ""
    return f" --sessions={shlex.quote(str(config.sessions))}"


def worker_targets(config: Config, console: Console) -> list[Target]:
    """Where each --workers address leads. A host name not known here leaves
    its worker out, said once; when no worker is left, nothing runs."""
    user_given = "user" in config.sources
    targets = [resolve_target(address, config.user, user_given) for address in config.workers or ()]
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


def job_source(
    config: Config,
    template: Template | None,
    positional: list[str],
    prog: str,
    stdin: IO[bytes] | None,
) -> tuple[Command, IO[bytes]]:
    """The command the jobs' arguments go into, and the input they come from."""
    has_command = template is not None and template.command is not None
    command = task_command(template, positional)
    if command is None:
        raise UsageError("no command given", USAGE.format(prog=prog, command="COMMAND "))
    if config.replace is not None:
        command = command.replacing(config.replace)
    if stdin is None:
        raise UsageError(
            "no jobs: standard input is closed; give the jobs on it, one per line",
            USAGE.format(prog=prog, command="" if has_command else "COMMAND "),
        )
    if stdin.isatty():
        raise UsageError(
            "no jobs: give them on standard input, one per line",
            USAGE.format(prog=prog, command="" if has_command else "COMMAND "),
        )
    return command, stdin


# Options that say how the input becomes jobs: they mean nothing to a resume.
INPUT_OPTIONS = ("lines", "null", "replace")


def input_mode(config: Config) -> Mode:
    return "null" if config.null else "lines" if config.lines else "words"


DRY_RUN_BATCH = 1000  # lines


def dry_run(config: Config, command: Command, stdin: IO[bytes]) -> int:
    """--dry-run: each job's command line on stdout, in input order, as the input
    is read (a bad line stops it there, exit status 2); nothing runs, no session.

    Control characters (a newline in a --null record too) are shown escaped, as
    in the session's output: each job is one line."""
    mode = input_mode(config)
    unit = unit_of(mode)
    # Written a batch at a time (stdout may be unbuffered: PYTHONUNBUFFERED), a
    # line at a time to a terminal.
    batch = 1 if sys.stdout is not None and sys.stdout.isatty() else DRY_RUN_BATCH
    lines: list[str] = []
    count = 0
    try:
        for job in read_jobs(stdin, mode):
            line = printable(check_length(command.for_job(job.args), job.line, unit))
            lines.append(line.replace("\n", "\\x0a") + "\n")
            count += 1
            if len(lines) >= batch:
                write_stdout("".join(lines))
                lines.clear()
    finally:  # before a bad line's error too: the lines before it were good
        write_stdout("".join(lines))
    if not count:
        raise UsageError(f"no jobs: standard input has no job {unit}s")
    return ExitStatus.OK


def task_command(template: Template | None, positional: list[str]) -> Command | None:
    for number, word in enumerate(positional, 1):
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:  # a byte the locale could not decode, kept as a surrogate
            raise UsageError(f"command word {number}: not valid UTF-8: {word!r}") from None
    if template is not None and template.command is not None:
        return template.command.with_extra(positional)
    if positional and not positional[0].strip():
        # `cloudtask ''` would run every job's words as a command of their own.
        raise UsageError("the command is empty: give the command the jobs' words are added to")
    return Command.from_argv(positional) if positional else None


def store_jobs(store: Store, command: Command, stdin: Iterable[bytes], mode: Mode) -> int:
    """Stream the jobs into the store, every line validated before anything runs."""
    unit = unit_of(mode)
    count = store.add_jobs(
        (job.id, job.line, check_length(command.for_job(job.args), job.line, unit))
        for job in read_jobs(stdin, mode)
    )
    if not count:
        raise UsageError(f"no jobs: standard input has no job {unit}s")
    return count


def stored_config(config: Config) -> dict[str, str]:
    """The effective options as stored with the session: never a secret."""
    # Secrets are never stored; nor what only this invocation means.
    secret = {option.name for option in OPTIONS if option.secret}
    secret |= {"force", "dry-run", "resume", "retry"}
    # Defaults are not stored, so the environment of a resumed run still counts.
    return {
        name: value
        for name, value, source in config.shown()
        if name not in secret and source != "default"
    }


def split_of(config: Config, targets: Sequence[Target], jobs: int) -> int:
    """--split, else the default that fits the provider; never more than the jobs."""
    return min(config.split or len(targets) or local_split(config) or 1, jobs)


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


def confirm(config: Config, store: Store, jobs: int, split: int) -> None:
    """Show what will run and ask for an explicit yes, on the terminal."""
    given = [str(address) for address in (config.workers or ())[:split]]
    workers = given
    if split > len(given):
        what = "to launch on" if is_cloud(config.provider) else "on"
        workers = [*given, f"{split - len(given)} {what} {config.provider}"]
    options = [
        row
        for row in config.shown()
        # An SSH run launches nothing: "provider local" would say it runs here.
        if not (row[0] == "provider" and config.workers and not is_cloud(config.provider))
    ]
    if config.split is None:
        options.insert(0, ("split", str(split), split_default(config)))
    text = plan_text(
        jobs=jobs,
        first=store.command(1),
        last=store.command(jobs),
        workers=workers,
        split=split,
        options=options,
    )
    try:
        with (
            open("/dev/tty", "w", encoding="utf-8") as out,
            open("/dev/tty", encoding="utf-8") as tty,
        ):
            out.write("\n".join(text) + "\nType yes or y to run it (or use --force): ")
            out.flush()
            answer = tty.readline().strip().lower()
    except OSError:
        raise UsageError("cannot ask for confirmation without a terminal; use --force") from None
    if answer not in ("yes", "y"):
        raise NotConfirmed("not confirmed: nothing ran")


class NotConfirmed(CloudtaskError):
    exit_status = ExitStatus.NOT_OK


def nothing_left_to_interrupt() -> None:
    """From here to the exit there is nothing a Ctrl-C could stop: it is ignored,
    so that the exit status stays the one the summary line gives (a
    KeyboardInterrupt at interpreter exit would end the process by SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "cloudtask"
    sys.exit(run(sys.argv[1:] if argv is None else argv, prog=prog))
