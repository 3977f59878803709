"""The `cloudtask-logalyzer` command: a session's digest, as text, JSON or an HTML page.

    cloudtask-logalyzer [--sessions=DIR] [--limit=N] SESSION          the digest (text)
    cloudtask-logalyzer [--sessions=DIR] [--limit=N|--all] --json SESSION
    cloudtask-logalyzer [--sessions=DIR] [--limit=N] --html SESSION   report.html + timeline.svg
    cloudtask-logalyzer [--sessions=DIR] --list                       one line per session

SESSION is a session id (looked for in the sessions directory) or the path
of a session directory. The sessions directory is found as cloudtask finds
it: --sessions, else CLOUDTASK_SESSIONS, else ~/.cloudtask (config.resolve
applies the same rules). It reads sessions without disturbing them, also
while a controller runs one. Every bad input is a one-line error and exit
status 2; anything else exits 0.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ..argv import scan
from ..config import BY_NAME, resolve
from ..console import plural
from ..errors import CloudtaskError, UsageError
from ..output import one_line
from ..paths import user_path, write_private
from ..report.digest import (
    DEFAULT_LIMIT,
    DigestError,
    Summary,
    check_session_dir,
    clock,
    counts_text,
    iter_jobs,
    load,
    load_summary,
    shorten,
    to_text,
    write_json,
)
from ..report.html import html
from ..report.timeline import svg
from ..session.directory import existing_ids
from ..store.reader import ReadError
from ..version import __version__
from .exits import INTERRUPTED, Program, exit_status

PROG = "cloudtask-logalyzer"
MOST_ROWS = 2**62
USAGE = f"""usage: {PROG} [--sessions=DIR] [--limit=N] [--json [--all] | --html] SESSION
       {PROG} [--sessions=DIR] --list"""

HELP = f"""{USAGE}

Show the digest of a cloudtask session: elapsed time, jobs by state, its
configuration, its workers, its pending, failed and succeeded jobs, and
the cost of launched workers. SESSION is a session id or the path of a
session directory.

options:
  --sessions=DIR  where sessions are kept (env CLOUDTASK_SESSIONS; default ~/.cloudtask)
  --json          print the digest as one JSON object (its schema:
                  cloudtask/report/digest.schema.json)
  --all           with --json: list every job with its attempts (streamed),
                  not only the first N of each kind
  --html          write SESSION/report.html and SESSION/timeline.svg (a picture
                  of the jobs on a timeline per worker); print the page's path
  --list          list the sessions: id, state, start, jobs by state, launched
                  instances that may still be running, command
  --limit=N       list at most N jobs of each kind (pending, running, failed,
                  succeeded) and N workers in text; default {DEFAULT_LIMIT}
  -h, --help      show this help and exit
  --version       show the version and exit

exit status: 0 done, 2 bad input (unknown session, not a session, a corrupt
store, a bad option)"""

REPORT_HTML = "report.html"
TIMELINE_SVG = "timeline.svg"


@dataclass
class Args:
    sessions: str | None = None
    json: bool = False
    html: bool = False
    list: bool = False
    all: bool = False
    limit: int = DEFAULT_LIMIT
    help: bool = False
    version: bool = False
    session: str | None = None


KNOWN_OPTIONS: dict[str, str | None] = {
    "sessions": "DIR",
    "limit": "N",
    "json": None,
    "html": None,
    "list": None,
    "all": None,
}


def parse_args(argv: Sequence[str]) -> Args:
    parsed = scan(argv, KNOWN_OPTIONS, interleaved=True)
    options = parsed.options
    args = Args(
        sessions=str(options["sessions"]) if "sessions" in options else None,
        json="json" in options,
        html="html" in options,
        list="list" in options,
        all="all" in options,
        help=parsed.help,
        version=parsed.version,
    )
    positional = parsed.positional
    if "limit" in options:
        value = str(options["limit"])
        try:
            args.limit = int(value)
        except ValueError:
            raise UsageError(f"--limit: not a whole number: {value!r}") from None
        if args.limit < 0:
            raise UsageError(f"--limit: must be at least 0, got {args.limit}")
        args.limit = min(args.limit, MOST_ROWS)  # SQLite's LIMIT takes 64 bits, no more
    if args.help or args.version:
        return args
    if sum((args.json, args.html, args.list)) > 1:
        raise UsageError("give one of --json, --html and --list")
    if args.all and not args.json:
        raise UsageError("--all goes with --json")
    if args.list:
        if positional:
            raise UsageError("--list takes no SESSION")
        return args
    if not positional:
        raise UsageError("give a SESSION (an id or a session directory), or --list")
    if len(positional) > 1:
        raise UsageError(f"give one SESSION, not {len(positional)}: {' '.join(positional)}")
    args.session = positional[0]
    return args


def sessions_dir(given: str | None) -> Path:
    """The sessions directory by cloudtask's own rules: option, environment, default."""
    option = BY_NAME["sessions"]
    environ = {option.env: os.environ[option.env]} if option.env in os.environ else {}
    # Only this option's variable: another CLOUDTASK_* variable that cloudtask
    # would refuse must not stop a report.
    config = resolve({} if given is None else {"sessions": given}, None, environ)
    return config.sessions


def session_dir(session: str, sessions: Path) -> Path:
    """SESSION as an id in the sessions directory, or as a path."""
    if session.isdigit():
        path = sessions / str(int(session))
        if not path.is_dir():
            raise DigestError(f"no session {session} in {sessions}")
    else:
        try:
            path = user_path(session)
        except ValueError as exc:
            raise DigestError(f"{session}: {exc}") from None
        if not path.is_dir():
            raise DigestError(f"{session}: no such session directory")
    check_session_dir(path)
    return path


def list_sessions(sessions: Path) -> list[str]:
    if not sessions.is_dir():
        raise DigestError(f"no sessions directory {sessions}")
    lines = []
    for number in sorted(existing_ids(sessions)):
        try:
            summary = load_summary(sessions / str(number))
        except DigestError as exc:
            # One unreadable session must not hide the others.
            lines.append(f"{number:>5}  {'unreadable':<11}  {one_line(str(exc))}")
            continue
        info = summary.session
        lines.append(
            f"{number:>5}  {info.state:<11}  {clock(info.started)}  {counts_text(summary.counts)}  "
            f"{left_running(summary)}{shorten(info.command or '-', 60)}"
        )
    return lines


def left_running(summary: Summary) -> str:
    """The warning for instances nobody destroys: not recorded destroyed, and
    neither a controller nor a watchdog holds the session (both died)."""
    if summary.session.live or not summary.not_destroyed:
        return ""
    return f"WARNING: {plural(summary.not_destroyed, 'launched instance')} may still be running  "


def _run(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A job's output in any script must not stop the digest on a terminal
        # whose encoding cannot show it.
        sys.stdout.reconfigure(errors="backslashreplace")
    if args.help:
        print(HELP)
        return 0
    if args.version:
        print(f"{PROG} {__version__}")
        return 0
    sessions = sessions_dir(args.sessions)
    if args.list:
        for line in list_sessions(sessions):
            print(line)
        return 0
    assert args.session is not None
    path = session_dir(args.session, sessions)
    if args.json:
        if args.all:
            digest = load(path, limit=0)
            write_json(digest, sys.stdout, iter_jobs(digest))
        else:
            write_json(load(path, limit=args.limit), sys.stdout)
        return 0
    if args.html:
        digest = load(path, limit=args.limit, timeline=True)
        picture = svg(digest)
        page = path / REPORT_HTML
        try:
            write_private(path / TIMELINE_SVG, picture)
            write_private(page, html(digest, picture))
        except OSError as exc:
            raise DigestError(f"cannot write the report in {path}: {exc.strerror or exc}") from None
        print(page.absolute())
        return 0
    sys.stdout.write(to_text(load(path, limit=args.limit)))
    return 0


def run(argv: Sequence[str]) -> int:
    """The whole command; its exit status. Errors are one line, never a traceback."""
    try:
        return _run(argv)
    except BrokenPipeError:  # | head: the rest is not wanted
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return INTERRUPTED[Program.LOGALYZER]
    except CloudtaskError as exc:
        error = exc
    except OSError as exc:
        error = CloudtaskError(str(exc))
    except (ReadError, TypeError, ValueError) as exc:
        # A store that SQLite reads but whose values are not what cloudtask writes.
        error = DigestError(f"the session store holds unexpected data: {exc}")
    sys.stderr.write(f"{PROG}: {one_line(str(error))}\n")
    return exit_status(Program.LOGALYZER, error)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(run(sys.argv[1:] if argv is None else argv))
