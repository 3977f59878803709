"""Open files: the run's split must fit in what the process may open.

Every worker holds files open for the whole run: its log, its SSH connection
(or, on the local provider, its job's output pipe and a pidfd). A run that
runs out of them mid-way fails workers and loses jobs, so the limit is raised
before anything runs, and a split that cannot fit is refused with the numbers.
"""

from __future__ import annotations

import resource

from .errors import UsageError

# Open files one worker holds at once, with room for a connection or a
# process being made (measured: 2 per SSH worker, 3 per local one).
FILES_PER_WORKER = 4
# What the controller holds besides its workers: the store and its journal,
# the session log, the event loop, the libraries' own.
FILES_BESIDES = 64


def files_needed(split: int, local_slots: int = 1) -> int:
    return FILES_BESIDES + FILES_PER_WORKER * split * local_slots


def fit_open_files(split: int, local_slots: int = 1) -> None:
    """Raise the soft limit on open files as far as `split` workers need, up to
    the hard limit; a split that cannot fit is a UsageError naming both numbers.
    A local worker holds files for each of its `local_slots` jobs at once (an
    SSH worker's jobs share its connection).

    Only as far as needed: every local job inherits the limit, and some
    programs walk every descriptor up to it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = files_needed(split, local_slots)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    if hard != resource.RLIM_INFINITY and needed > hard:
        workers = f"{split} workers" + (f" of {local_slots} slots" if local_slots > 1 else "")
        raise UsageError(
            f"--split: {workers} need about {needed} open files, and this process "
            f"may open at most {hard} (ulimit -Hn): give a --split of at most "
            f"{max(1, max_split(hard) // local_slots)}, or raise the limit"
        )
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError) as exc:
        raise UsageError(
            f"--split: {split} workers need about {needed} open files; the limit is "
            f"{soft} and cannot be raised ({exc})"
        ) from None


def most_workers() -> int | None:
    """The largest split the hard limit on open files allows (None: no limit)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if hard == resource.RLIM_INFINITY else max_split(hard)


def max_split(limit: int) -> int:
    """The largest split that fits in `limit` open files."""
    return max(1, (limit - FILES_BESIDES) // FILES_PER_WORKER)
