"""Secrets in the environment are kept out of every child process.

Secret variables (API keys, cloud credentials, the SMTP password) are taken
out of `os.environ` the moment the package is imported, before anything can
start a process: importing asyncssh alone runs the compiler to look for a
library, and every child inherits the environment, where
/proc/PID/environ shows it. They are kept here; the options (config.resolve)
and the mail hook read them through `full()`.
"""

from __future__ import annotations

import os

# Every option the table marks secret, by its variable (a unit test keeps the
# two in step), and the SMTP password of the mail hook.
SECRET_NAMES = frozenset(
    {
        "CLOUDTASK_HUB_APIKEY",
        "CLOUDTASK_LIBCLOUD_KEY",
        "CLOUDTASK_LIBCLOUD_SECRET",
        "CLOUDTASK_LIBCLOUD_OPTIONS",
        "CLOUDTASK_SMTP_PASSWORD",
    }
)

HIDDEN: dict[str, str] = {}


def hide_secrets() -> None:
    for name in SECRET_NAMES:
        if name in os.environ:
            HIDDEN[name] = os.environ.pop(name)


def full() -> dict[str, str]:
    """The environment as it was given, secrets included (for reading, never passing on)."""
    return {**os.environ, **HIDDEN}
