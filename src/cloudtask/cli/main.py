"""The `cloudtask` command: argv, template and environment in; a session run."""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn

from ..argv import Argv, scan
from ..config import (
    OPTIONS,
    Config,
    Option,
    check_combinations,
    resolve,
    template_text,
)
from ..console import Console, plan_text, silence_stdout
from ..errors import CloudtaskError, ExitStatus, UsageError, error_text
from ..jobs import Command, check_length, read_jobs, unit_of
from ..output import printable
from ..providers.registry import is_cloud
from ..session.frontend import Frontend
from ..template import Template
from ..version import __version__
from .exits import INTERRUPTED, NotConfirmed, Program, exit_status
from .streams import (
    flush_stdout,
    interrupt_on_kill,
    nothing_left_to_interrupt,
    open_closed_streams,
    out,
    say_error,
    write_stdout,
)

if TYPE_CHECKING:
    from ..store import Store

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
        return exit_status(Program.CLOUDTASK, exc)
    except BrokenPipeError:  # stdout closed early (| head): the rest is not wanted
        silence_stdout()
        return ExitStatus.OK
    except KeyboardInterrupt:  # before any job started: nothing to clean up
        nothing_left_to_interrupt()
        say_error(f"\n{prog}: interrupted: nothing ran\n")
        return INTERRUPTED[Program.CLOUDTASK]
    return flush_stdout(prog, status)


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
    # The session layer (and the engine under it: asyncssh, the clouds) is
    # loaded only when a session is started: errors and --help come at once.
    from ..session.drive import resume, start

    if config.resume is not None or config.retry is not None:
        return resume(parsed.options, config, frontend, bool(parsed.positional)).exit_status
    if given != parsed.options:
        resolve(parsed.options, template.values if template else None)
    check_combinations(config)
    if config.dry_run:  # nothing is contacted: neither the workers nor the cloud
        return dry_run(config, *job_source(config, template, parsed.positional, prog, stdin))
    # Read once the workers and the provider are checked: their errors come first.
    jobs = functools.partial(job_source, config, template, parsed.positional, prog, stdin)
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
    mode = config.input_mode
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
        from ..session.plan import split_default  # loaded already: the plan asks

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


def main(argv: Sequence[str] | None = None) -> NoReturn:
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "cloudtask"
    sys.exit(run(sys.argv[1:] if argv is None else argv, prog=prog))
