"""Paths the user gives: `~` expanded, failures as ValueError with a reason."""

from __future__ import annotations

from pathlib import Path


def user_path(text: str) -> Path:
    """`text` with `~` or `~user` expanded; an unknown user is a ValueError."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # what pathlib raises for ~nosuchuser or no home at all
        user = text[1:].split("/", 1)[0]
        raise ValueError(f"no home directory for ~{user}") from None


def named_file(text: str) -> Path | None:
    """The existing regular file `text` names, or None when it names none.

    A value that may be a path or something else (a `--workers` list, Python
    code) is a path only when such a file exists: a name too long for the
    system, or one it refuses to look at, names no file."""
    try:
        path = user_path(text)
        return path if path.is_file() else None
    except (OSError, ValueError):
        return None


def os_reason(exc: OSError, path: object = None) -> str:
    """An OSError as one line: the file (the error's own, else `path`) and the reason.

    Long names are cut: the point of the message is the reason."""
    reason = exc.strerror or str(exc)
    name = exc.filename if exc.filename is not None else path
    if name is None:
        return reason
    shown = str(name)
    if len(shown) > 80:
        shown = shown[:60] + "..." + shown[-17:]
    return f"{shown}: {reason}"


def cannot_write(directory: Path, name: str, reason: str) -> str:
    """A failed write under a session directory, as one line that names the
    directory in full (which disk is full is the point) and the file in it."""
    return f"cannot write in {directory} ({name}): {reason}"
