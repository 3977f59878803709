"""cloudtask from Python: start, resume and retry sessions in this process.

    import cloudtask

    result = cloudtask.run("gzip -9", ["a.log", "b.log"], split=2, sessions="/tmp/s")
    if not result.ok:
        cloudtask.retry(result.id, sessions="/tmp/s")

Options are named as on the command line, `_` for `-` (`split=4`,
`hourly_price=0.1`, `force=True`); `CLOUDTASK_*` variables count below them,
as for the command. `provider=` also takes a `Provider` object: its workers
are then the only ones. Nothing is printed unless `echo=True`; nothing is asked
(there is no confirmation). Errors are raised from the one tree the command
reports from (`cloudtask.CloudtaskError`: `UsageError`, `InputError`,
`SessionError`, ...). Call these from the main thread to have Ctrl-C and
SIGTERM abort a run the way they abort the command (running jobs pending
again, workers cleaned up).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from .config import BY_NAME, TemplateValues, check_combinations, resolve, suggest
from .console import Console
from .errors import UsageError
from .jobs import Command, Mode, command_from
from .providers.base import Provider
from .session.drive import resume as resume_session
from .session.drive import start
from .session.frontend import Frontend
from .session.result import SessionResult

# What only the command line means: here each has a function, or no sense.
NOT_HERE = {
    "resume": "use cloudtask.resume()",
    "retry": "use cloudtask.retry()",
    "dry-run": "a session is run, not shown",
}


def run(
    command: str | Sequence[str],
    jobs: Iterable[str | bytes],
    *,
    echo: bool = False,
    **options: object,
) -> SessionResult:
    """Run `command` once for every job in a new session, to the end.

    `command` is shell text, or a list of words (each quoted as it is). `jobs`
    are the input lines as standard input would give them (a trailing newline
    is optional; with `null=True` each item is one record).
    """
    return run_template(command_from(command, "command"), jobs, echo, options)


def run_template(
    command: Command,
    jobs: Iterable[str | bytes],
    echo: bool,
    options: dict[str, object],
    template: TemplateValues | None = None,
) -> SessionResult:
    """`run`, with a task template's values under the options (Task.run)."""
    if isinstance(jobs, str | bytes):
        raise UsageError("jobs: give an iterable of input lines, not one string")
    provider = given_provider(options)
    config = resolve(option_values(options), template)
    check_combinations(config)
    if config.replace is not None:
        command = command.replacing(config.replace)
    source = input_chunks(jobs, config.input_mode)
    return start(config, lambda: (command, source), frontend(echo, provider))


def resume(session_id: int, *, echo: bool = False, **options: object) -> SessionResult:
    """Run the session's unfinished jobs again (as `--resume=ID`); options given
    override the stored ones, and `NAME=None` drops a stored option."""
    return _again("resume", session_id, echo, options)


def retry(session_id: int, *, echo: bool = False, **options: object) -> SessionResult:
    """As `resume`, and the session's failed and timed-out jobs too (`--retry=ID`)."""
    return _again("retry", session_id, echo, options)


def _again(how: str, session_id: int, echo: bool, options: dict[str, object]) -> SessionResult:
    if isinstance(session_id, bool) or not isinstance(session_id, int):
        raise UsageError(f"session: expected a session number, got {session_id!r}")
    provider = given_provider(options)
    given = {**option_values(options, dropping=True), how: str(session_id)}
    config = resolve({name: value for name, value in given.items() if value != ""})
    return resume_session(given, config, frontend(echo, provider))


def given_provider(options: dict[str, object]) -> Provider | None:
    """`provider=` given as an object (a Provider of one's own, or a test's),
    taken out of the options: the jobs run only on its workers, and no cloud
    the options might name is called (the session's provider is "local")."""
    if not isinstance(options.get("provider"), Provider):
        return None
    provider = options.pop("provider")
    assert isinstance(provider, Provider)
    options["provider"] = "local"
    return provider


def option_values(options: dict[str, object], dropping: bool = False) -> dict[str, str | bool]:
    """Keyword options as the command line would give them: names with `-`,
    values as text, a flag as True. None leaves an option out, or with
    `dropping` gives it empty (a resume then drops the stored value)."""
    given: dict[str, str | bool] = {}
    for key, value in options.items():
        name = key.replace("_", "-")
        option = BY_NAME.get(name)
        if option is None:
            known = [known.replace("-", "_") for known in BY_NAME]
            raise UsageError(f"{key}=: unknown option" + suggest(key, known))
        if name in NOT_HERE:
            raise UsageError(f"{key}=: not an option of this function: {NOT_HERE[name]}")
        if value is None:
            if dropping:
                given[name] = ""
            continue
        if option.flag:
            if not isinstance(value, bool):
                raise UsageError(f"{key}=: expected True or False, got {value!r}")
            if value:
                given[name] = True
            continue
        if isinstance(value, bool):
            raise UsageError(f"{key}=: expected a value, got {value!r}")
        given[name] = option_text(value)
    return given


def option_text(value: object) -> str:
    """A value as it would be written on the command line; a list of workers
    (or of anything) as its items separated by commas."""
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    if isinstance(value, list | tuple):
        return ",".join(option_text(item) for item in value)
    return str(value)


def input_chunks(jobs: Iterable[str | bytes], mode: Mode) -> Iterator[bytes]:
    """The jobs as the input would give them: each item one line (one record
    with --null), its end added where it has none."""
    end = b"\0" if mode == "null" else b"\n"
    for number, item in enumerate(jobs, 1):
        if isinstance(item, str):
            data = item.encode("utf-8", "surrogateescape")
        elif isinstance(item, bytes):
            data = item
        else:
            raise UsageError(f"jobs: item {number}: expected a str or bytes line, got {item!r}")
        yield data if data.endswith(end) else data + end


def frontend(echo: bool, provider: Provider | None = None) -> Frontend:
    """Quiet unless asked: then event lines on stdout and warnings on stderr,
    as the command prints them (the live view too, on a terminal)."""
    console = Console()
    if not echo:
        console.out = console.err = None
    return Frontend(console, console.line, provider=provider)


__all__ = ["SessionResult", "resume", "retry", "run"]
