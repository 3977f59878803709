"""The --report hooks: the one thing run when a session ends (finished, halted or aborted).

A hook can only add to the session's results (a mail, whatever a command does),
never lose or hide them: running one never raises, and every failure comes back
as one line for the caller to show (runner.run_hook).

Three kinds, parsed by parse_hook from the option's text (parse.py, a leaf
module the options table imports):

    mail: FROM TO [TO...]   the digest as the body, the session's picture attached as
                            timeline.svg; sent through sendmail (-t -oi -f FROM), or
                            through SMTP when CLOUDTASK_SMTP_HOST is set (mail.py)
    sh: COMMAND             /bin/sh -c COMMAND in the session directory, with the
                            session's parameters in CLOUDTASK_* variables and no
                            secrets (shell.py)
    py: CODE | py: FILE     Python run in this process with `session`, `jobs` and
                            `config` (python.py)

What each is given is a HookContext (context.py).
"""

from __future__ import annotations

from .context import DEFAULT_TIMEOUT, SECRET_VARIABLES, HookContext
from .mail import (
    DEFAULT_SENDMAIL,
    PICTURE_NAME,
    SmtpSettings,
    build_message,
    mail_problem,
    send_mail,
    smtp_settings,
)
from .parse import CODE_NAME, KINDS, Hook, MailHook, PyHook, ShHook, parse_hook
from .python import LazyJobs, LineWriter, Record
from .runner import run_hook
from .shell import PREFIX, hook_environment, session_variables

__all__ = [
    "CODE_NAME",
    "DEFAULT_SENDMAIL",
    "DEFAULT_TIMEOUT",
    "KINDS",
    "PICTURE_NAME",
    "PREFIX",
    "SECRET_VARIABLES",
    "Hook",
    "HookContext",
    "LazyJobs",
    "LineWriter",
    "MailHook",
    "PyHook",
    "Record",
    "ShHook",
    "SmtpSettings",
    "build_message",
    "hook_environment",
    "mail_problem",
    "parse_hook",
    "run_hook",
    "send_mail",
    "session_variables",
    "smtp_settings",
]
