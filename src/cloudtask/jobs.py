"""Job input: lines (or NUL-ended records) of standard input become job commands.

Three input modes say what a job's arguments are:

- words (the default): each line is split into words as a POSIX shell would
  (quotes respected); blank lines and comment lines are no jobs;
- lines (`--lines`): each line, as it is, is one argument;
- null (`--null`): each record ended by a NUL byte, as it is, is one argument.

Every argument is quoted again before it goes into the task command (appended,
or in place of each placeholder with `--replace`), so a job runs with exactly
the arguments its input spells. Input is read as a stream: nothing here holds
more than one line or record.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from .errors import InputError, UsageError

Mode = Literal["words", "lines", "null"]

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


def check_length(command: str, line: int, unit: str = "line") -> str:
    """The job's command, if a worker can run it; else an InputError for its line."""
    if len(command) <= _SURELY_FITS:
        return command
    size = len(shlex.quote(command).encode("utf-8"))
    if size + WRAPPER_ROOM > MAX_ARGUMENT:
        raise InputError(
            line,
            f"the job's command is {size} bytes quoted; a worker runs at most "
            f"{MAX_ARGUMENT - WRAPPER_ROOM}",
            unit,
        )
    return command


class Job(NamedTuple):
    """One job: its identity is its position among the jobs (from 1).

    Immutable as a frozen dataclass is, and made in half the time: an input
    makes a million of them."""

    id: int
    line: int  # line (or record) number in the input, for messages
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
    return " ".join(map(shlex.quote, words))


def is_skipped(text: str) -> bool:
    """Blank lines and comment lines (first non-blank is '#') are no jobs."""
    stripped = text.lstrip(_SHELL_BLANKS)
    return not stripped or stripped.startswith("#")


def decode(raw: bytes, number: int, unit: str = "line") -> str:
    """One line or record as text: no NUL byte, valid UTF-8."""
    if b"\0" in raw:
        raise InputError(number, "NUL byte", unit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(number, f"invalid UTF-8 at byte {exc.start + 1}", unit) from None


def parse_line(raw: bytes, line: int) -> list[str] | None:
    """The words of one raw input line, or None when the line is no job."""
    # The line ending is not part of the line: a backslash before it escapes nothing.
    text = decode(raw.removesuffix(b"\n").removesuffix(b"\r"), line)
    if is_skipped(text):
        return None
    try:
        return split_words(text)
    except ValueError as exc:
        raise InputError(line, str(exc)) from None


# What is read from a NUL-separated input at a time.
CHUNK = 65536


def null_records(source: Iterable[bytes]) -> Iterator[bytes]:
    """The records of a NUL-separated input, each without its NUL; a last one
    without a NUL counts. `source` is a binary file, read a chunk at a time
    (what is there, so records come as they are written), or chunks of bytes.

    A record that passes MAX_ARGUMENT bytes could never run: it is refused
    then, so an input without NULs is not read into memory whole."""
    read1 = getattr(source, "read1", None)  # a binary file iterates by lines: read it so
    chunks: Iterable[bytes] = source if read1 is None else iter(lambda: read1(CHUNK), b"")
    pending = bytearray()
    number = 1
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\0", start)) >= 0:
            if pending:
                pending += chunk[start:end]
                yield bytes(pending)
                pending.clear()
            else:
                yield chunk[start:end]
            number += 1
            start = end + 1
        pending += chunk[start:]
        if len(pending) > MAX_ARGUMENT:
            raise InputError(
                number,
                f"over {MAX_ARGUMENT} bytes without a NUL; a worker runs commands of "
                f"at most {MAX_ARGUMENT - WRAPPER_ROOM} (is the input NUL-separated?)",
                "record",
            )
    if pending:
        yield bytes(pending)


def read_jobs(source: Iterable[bytes], mode: Mode = "words") -> Iterator[Job]:
    """Jobs from raw input: a binary file, or lines (chunks in mode null) of bytes."""
    if mode == "null":
        for number, raw in enumerate(null_records(source), start=1):
            yield Job(number, number, (decode(raw, number, "record"),))
        return
    if mode == "lines":
        for number, raw in enumerate(source, start=1):
            # Only the newline ends the line: whatever else it holds is the argument.
            yield Job(number, number, (decode(raw.removesuffix(b"\n"), number),))
        return
    job_id = 0
    for number, raw in enumerate(source, start=1):
        words = parse_line(raw, number)
        if words is None:
            continue
        job_id += 1
        yield Job(job_id, number, tuple(words))


def unit_of(mode: Mode) -> str:
    """What a job's input is called in messages: a line, or a record."""
    return "record" if mode == "null" else "line"


# A piece of a command: (text, True) a word, quoted on its own; (text, False)
# shell text, given as it is.
Part = tuple[str, bool]


@dataclass(frozen=True, slots=True)
class Command:
    """The task command that every job's arguments go into.

    Its parts are shell text (a single argument given as is, so `'foo | bar'`
    keeps its pipe; a template's string) or words quoted one by one (several
    arguments). `shell` is the command as a shell string. The job's quoted
    arguments are appended to it; with a `placeholder` (--replace), they take
    the place of every occurrence of it instead, in shell text and in words
    alike (in a word, the text around it is quoted and the arguments are not,
    so `{}.bak` gives `'a b'.bak`), and nothing is appended.
    """

    parts: tuple[Part, ...]
    placeholder: str | None = None
    shell: str = field(init=False, compare=False)
    # The command cut at each placeholder, in shell text: the arguments join them.
    cut: tuple[str, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        shell = " ".join(shlex.quote(text) if word else text for text, word in self.parts)
        object.__setattr__(self, "shell", shell)
        cut = (shell,) if self.placeholder is None else _cut(self.parts, self.placeholder)
        object.__setattr__(self, "cut", cut)

    @classmethod
    def from_shell(cls, text: str) -> Command:
        return cls(((text, False),))

    @classmethod
    def from_words(cls, words: Sequence[str]) -> Command:
        return cls(tuple((word, True) for word in words))

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> Command:
        if len(argv) == 1:
            return cls.from_shell(argv[0])
        return cls.from_words(argv)

    def with_extra(self, argv: Sequence[str]) -> Command:
        """The command with more arguments appended (a template's extra args)."""
        if not argv:
            return self
        return Command((*self.parts, *((word, True) for word in argv)), self.placeholder)

    def replacing(self, placeholder: str) -> Command:
        """The command whose `placeholder`s the job's arguments replace; a
        UsageError if it has none."""
        command = Command(self.parts, placeholder)
        if len(command.cut) == 1:
            raise UsageError(
                f"--replace: the command has no {placeholder} for the job's arguments "
                f"to go in: {command.shell}"
            )
        return command

    def for_job(self, args: Sequence[str]) -> str:
        # One argument (--lines, --null) is the common case of a million jobs.
        quoted = shlex.quote(args[0]) if len(args) == 1 else quote_words(args)
        if self.placeholder is not None:
            return quoted.join(self.cut)
        return f"{self.shell} {quoted}" if args else self.shell


def _cut(parts: Sequence[Part], placeholder: str) -> tuple[str, ...]:
    """The shell text of `parts` cut at every placeholder."""
    cut: list[str] = []
    current = ""
    for index, (text, word) in enumerate(parts):
        if index:
            current += " "
        if not word:
            pieces = text.split(placeholder)
        elif placeholder in text:
            pieces = [shlex.quote(piece) if piece else "" for piece in text.split(placeholder)]
        else:
            pieces = [shlex.quote(text)]
        current += pieces[0]
        for piece in pieces[1:]:
            cut.append(current)
            current = piece
    cut.append(current)
    return tuple(cut)


def command_from(value: object, where: str) -> Command:
    """A command given in Python (a template's COMMAND, the API's `command`):
    shell text, or a list of words, each kept as one word."""
    if isinstance(value, str) and value.strip():
        return Command.from_shell(value)
    if isinstance(value, list | tuple) and value and all(isinstance(word, str) for word in value):
        return Command.from_words(value)
    raise UsageError(f"{where}: expected shell text or a list of words, got {value!r}")
