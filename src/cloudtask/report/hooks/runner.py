"""run_hook: the one entry that runs a hook of any kind, and never raises.

A hook runs after the session's results are committed, so it can only add to them
(a mail, whatever a command does); it must never lose or hide them. That is why
running a hook never raises and never prints a traceback: every failure (bad Python,
a command that exits non-zero or runs too long, a mail server that cannot be reached
or refuses) comes back as one line for the caller to show, secrets masked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path

from ... import environment
from ...output import one_line, scrub
from .context import DEFAULT_TIMEOUT, SECRET_VARIABLES, HookContext, exception_text
from .mail import DEFAULT_SENDMAIL, send_mail
from .parse import Hook, MailHook, ShHook
from .python import run_py
from .shell import run_sh

# Secret values shorter than this are not scrubbed from problem lines: they would
# mangle the line and hide nothing worth hiding.
SCRUB_MINIMUM = 4


def run_hook(
    hook: Hook,
    context: HookContext,
    output: Callable[[str], None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    sendmail: Path = DEFAULT_SENDMAIL,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Run hook for the ended session: None when it worked, else one line saying why not.

    output receives what the hook prints, a line at a time. environ (default
    os.environ) gives the SMTP settings and the base of an sh hook's environment.
    Never raises, except that KeyboardInterrupt is reported too.
    """
    # The secrets are in environment.HIDDEN, not os.environ: the SMTP password
    # comes from there; hook_environment strips every secret again for sh.
    environ = environment.full() if environ is None else environ
    say = _guarded(output)
    try:
        if isinstance(hook, MailHook):
            problem = send_mail(hook, context, environ, sendmail=sendmail, timeout=timeout)
        elif isinstance(hook, ShHook):
            problem = run_sh(hook, context, say, environ, timeout)
        else:
            problem = run_py(hook, context, say)
    except KeyboardInterrupt:
        problem = "interrupted"
    except Exception as exc:  # the last guard: a hook never takes the session down
        problem = exception_text(exc)
    if problem is None:
        return None
    return one_line(scrub(f"--report: {_kind(hook)}: {problem}", _secrets(environ)))


def _kind(hook: Hook) -> str:
    return str(hook).partition(":")[0]


def _guarded(output: Callable[[str], None]) -> Callable[[str], None]:
    """output, made harmless: a failing logger must not fail the hook."""

    def say(line: str) -> None:
        with contextlib.suppress(Exception):
            output(line)

    return say


def _secrets(environ: Mapping[str, str]) -> list[str]:
    """The secret values in environ worth scrubbing from a problem line."""
    values = (environ.get(name, "") for name in SECRET_VARIABLES)
    return [value for value in values if len(value) >= SCRUB_MINIMUM]
