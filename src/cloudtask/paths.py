"""Paths and files: `~` expanded in the paths the user gives, failures as
ValueError with a reason; OSErrors as one line; private files written whole."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600  # a file only its owner may read: sessions hold commands and output


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


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) at once, readable by the user only.

    Written to a temporary file beside it, then renamed over it: a reader sees
    the old file or the new one, never part of one, a failed write leaves the
    old file as it was, and the mode is 0600 whatever the old file's was."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, PRIVATE_FILE)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
