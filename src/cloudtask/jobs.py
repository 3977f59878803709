"""Job input: lines of standard input become job commands.

Each line is split into words as a POSIX shell would (quotes respected), and
every word is quoted again before it is appended to the task command, so a
job runs with exactly the arguments its line spells. Lines are read as a
stream: nothing here holds more than one line.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .errors import InputError

# The characters a POSIX shell splits words on (shlex's posix whitespace).
_SHELL_BLANKS = " \t\r\n"
_BLANK_RUN = re.compile(r"[ \t\r\n]+")
# Lines without these need no shell lexer: splitting on blanks is exact.
_QUOTING = frozenset("'\"\\")


# Linux runs no single argument longer than this, with its NUL (MAX_ARG_STRLEN):
# a job's command is one, locally (sh -c) and quoted into the SSH wrapper's.
MAX_ARGUMENT = 131072
WRAPPER_ROOM = 4096  # the SSH wrapper itself, with room to spare
# Up to this many characters a command fits whatever it holds (quoting makes a
# quote 5 bytes, UTF-8 a character at most 4): only longer ones are measured.
_SURELY_FITS = (MAX_ARGUMENT - WRAPPER_ROOM) // 20


def check_length(command: str, line: int) -> str:
    """The job's command, if a worker can run it; else an InputError for its line."""
    if len(command) <= _SURELY_FITS:
        return command
    size = len(shlex.quote(command).encode("utf-8"))
    if size + WRAPPER_ROOM > MAX_ARGUMENT:
        raise InputError(
            line,
            f"the job's command is {size} bytes quoted; a worker runs at most "
            f"{MAX_ARGUMENT - WRAPPER_ROOM}",
        )
    return command


@dataclass(frozen=True, slots=True)
class Job:
    """One job: its identity is its position among the jobs (from 1)."""

    id: int
    line: int  # line number in the input, for messages
    args: tuple[str, ...]


def split_words(text: str) -> list[str]:
    """Split one line into words the way a POSIX shell does.

    Raises ValueError with a short reason for unbalanced quoting.
    """
    if _QUOTING.isdisjoint(text):
        stripped = text.strip(_SHELL_BLANKS)
        return _BLANK_RUN.split(stripped) if stripped else []
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        if "escaped" in str(exc):
            raise ValueError("backslash at end of line") from None
        raise ValueError("unbalanced quote") from None


def quote_words(words: Iterable[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


def is_skipped(text: str) -> bool:
    """Blank lines and comment lines (first non-blank is '#') are no jobs."""
    stripped = text.lstrip(_SHELL_BLANKS)
    return not stripped or stripped.startswith("#")


def parse_line(raw: bytes, line: int) -> list[str] | None:
    """The words of one raw input line, or None when the line is no job."""
    # The line ending is not part of the line: a backslash before it escapes nothing.
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    if b"\0" in raw:
        raise InputError(line, "NUL byte")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(line, f"invalid UTF-8 at byte {exc.start + 1}") from None
    if is_skipped(text):
        return None
    try:
        return split_words(text)
    except ValueError as exc:
        raise InputError(line, str(exc)) from None


def read_jobs(lines: Iterable[bytes]) -> Iterator[Job]:
    """Jobs from raw input lines (a binary file or any iterable of bytes)."""
    job_id = 0
    for number, raw in enumerate(lines, start=1):
        words = parse_line(raw, number)
        if words is None:
            continue
        job_id += 1
        yield Job(job_id, number, tuple(words))


@dataclass(frozen=True, slots=True)
class Command:
    """The task command that every job's arguments are appended to.

    `shell` is a shell string: either one argument given as is (so
    `'foo | bar'` keeps its pipe), or several arguments quoted one by one.
    """

    shell: str

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> Command:
        if len(argv) == 1:
            return cls(argv[0])
        return cls(quote_words(argv))

    def with_extra(self, argv: Sequence[str]) -> Command:
        """The command with more arguments appended (a template's extra args)."""
        if not argv:
            return self
        return Command(f"{self.shell} {quote_words(argv)}")

    def for_job(self, args: Sequence[str]) -> str:
        if not args:
            return self.shell
        return f"{self.shell} {quote_words(args)}"
