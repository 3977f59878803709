"""The `cloudtask` command: argv, template and environment in; a session run."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from .argv import Argv, scan
from .config import (
    OPTIONS,
    Config,
    Option,
    TemplateValues,
    check_combinations,
    resolve,
    template_text,
)
from .console import Console, plan_text, silence_stdout
from .errors import CloudtaskError, ExitStatus, OutputError, UsageError, error_text
from .jobs import Command, check_length, read_jobs, unit_of
from .output import printable
from .providers import is_cloud
from .session.drive import resume, start
from .session.plan import Frontend, input_mode, split_default
from .store import Store
from .version import __version__

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
    # An empty --NAME= drops a stored option on resume (see plan_resume); elsewhere it is refused.
    given = {name: value for name, value in parsed.options.items() if value != ""}
    config = resolve(given, template.values if template else None)
    frontend = Frontend(
        console, out, confirm=ask_on_terminal, last_stretch=nothing_left_to_interrupt
    )
    if config.resume is not None or config.retry is not None:
        return resume(parsed.options, config, frontend, bool(parsed.positional)).exit_status
    if given != parsed.options:
        resolve(parsed.options, template.values if template else None)
    check_combinations(config)
    if config.dry_run:  # nothing is contacted: neither the workers nor the cloud
        return dry_run(config, *job_source(config, template, parsed.positional, prog, stdin))
    jobs = lambda: job_source(config, template, parsed.positional, prog, stdin)  # noqa: E731
    return start(config, jobs, frontend).exit_status


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


def ask_on_terminal(config: Config, store: Store, jobs: int, split: int) -> None:
    """The confirmation, where stderr is a terminal and --force is not given."""
    if sys.stderr is not None and sys.stderr.isatty() and not config.force:
        confirm(config, store, jobs, split)


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
