"""What every hook is given (HookContext), what none may see (SECRET_VARIABLES),
and how its problems are worded, one line each."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import environment

DEFAULT_TIMEOUT = 600.0  # seconds a hook (command, sendmail, SMTP exchange) may take

# Secrets the controller may hold in its environment. No hook inherits them. Every
# option the table marks secret is among them (a unit test keeps the two in step),
# so hooks need not import the options table, which imports the hook parser.
SECRET_VARIABLES = environment.SECRET_NAMES


@dataclass(frozen=True)
class HookContext:
    """The ended session, as the hooks see it. Nothing in it is secret."""

    session_id: int
    session_dir: Path
    state: str  # finished, halted, aborted
    subject: str  # the mail's subject, e.g. "cloudtask session 7 finished: 98/100 OK"
    digest_text: str  # the session report (logalyzer): the mail's body
    picture: Path | None  # the timeline SVG, attached to the mail when given
    environment: Mapping[str, str]  # CLOUDTASK_* variables for sh, over the derived ones
    session: Mapping[str, object]  # counts (state -> number), elapsed (seconds), ...
    jobs: Callable[[], Iterable[Any]]  # called only when a py hook iterates `jobs`
    config: Mapping[str, str]  # stored options by name, no secrets
    job_count: Callable[[], int]  # how many jobs `jobs` gives, counted without reading them


def exception_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def signal_problem(returncode: int) -> str:
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"
