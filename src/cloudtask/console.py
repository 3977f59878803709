"""What the user sees: one line per event, the summary line, the confirmation.

Formatting is pure (functions that return text); Console only writes the
text to the terminal and to the session log.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, TextIO

from .output import printable
from .scheduler import JobState

Stream = Literal["stdout", "stderr"]


def plural(count: int | float, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary_line(session_id: int, elapsed: float, counts: Mapping[JobState, int]) -> str:
    """The last line of every run, in the one form scripts parse."""
    total = sum(counts.values())
    ok = counts[JobState.OK]
    pending = counts[JobState.PENDING] + counts[JobState.RUNNING]
    errors = counts[JobState.FAILED] + counts[JobState.LOST]
    return (
        f"session {session_id} ({plural(round(elapsed), 'second')}): "
        f"{total - ok}/{total} !OK - {pending} pending, {counts[JobState.TIMEOUT]} timeouts, "
        f"{errors} errors, {ok} OK"
    )


def duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def plan_text(
    *,
    jobs: int,
    first: str,
    last: str,
    workers: Sequence[str],
    split: int,
    options: Sequence[tuple[str, str, str]],
) -> list[str]:
    """What is about to run, shown before asking for confirmation."""
    where = ", ".join(workers)
    lines = [
        f"about to run {plural(jobs, 'job')} on {plural(split, 'worker')} ({where})",
        f"  first job: {printable(first)}",
        f"  last job:  {printable(last)}",
        "",
        *("  " + line for line in table([("option", "value", "from"), *options])),
        "",
    ]
    return lines


def silence(stream: TextIO | None) -> None:
    """Point a lost stream's file descriptor at /dev/null: what it still buffers
    then goes nowhere when the interpreter flushes it at exit, instead of
    failing again there."""
    with contextlib.suppress(OSError, ValueError):  # no fd (a test's stream), no fd left
        if stream is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, stream.fileno())
            finally:
                os.close(devnull)


def silence_stdout() -> None:
    """Send what is still printed to /dev/null, so exiting does not fail on flush."""
    silence(sys.stdout)


class Console:
    """Event lines to stdout, warnings to stderr, both also to the session log.

    A standard stream can go away mid-run: its reader closed the pipe, the
    disk or /dev/full has no room, the terminal hung up. The first write to it
    that fails drops it for the rest of the run (the session log still gets
    every line), is never raised, and is told once to `on_stream_lost`.
    """

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        # None: closed from the start (Python then sets sys.stdout to None), or lost.
        self.out: TextIO | None = out if out is not None else sys.stdout
        self.err: TextIO | None = err if err is not None else sys.stderr
        self.log: TextIO | None = None
        # Called once for each stream lost while writing, with "stdout" or
        # "stderr" and why ("Broken pipe"). The stream is dropped before the
        # call, so the callback may print or warn: that never reaches it again.
        self.on_stream_lost: Callable[[str, str], None] | None = None
        # The streams lost while writing so far, and why (not those closed from
        # the start): for whoever sets `on_stream_lost` after a loss.
        self.lost: dict[str, str] = {}

    def line(self, text: str) -> None:
        text = printable(text)  # a job's command or output never drives a terminal
        if self.log is not None:
            self.log.write(text + "\n")
        self.write("stdout", text + "\n")

    def warn(self, text: str) -> None:
        text = printable(text)
        if self.log is not None:
            self.log.write(f"warning: {text}\n")
        self.write("stderr", f"cloudtask: {text}\n")

    def job_output(self, worker: str, job: int | str, lines: Sequence[str]) -> None:
        """Lines a job printed, each as `WORKER job N | TEXT`: written in one go
        (one escape pass, one log write, one write to stdout), since a job may
        print millions of them and the controller's cost goes by the line."""
        if not lines:
            return
        prefix = f"{worker} {job_label(job)} | "
        # No line holds a newline, and printable() leaves newlines as they are.
        text = printable(prefix + ("\n" + prefix).join(lines)) + "\n"
        if self.log is not None:
            self.log.write(text)
        self.write("stdout", text)

    def write(self, stream: Stream, text: str) -> bool:
        """Write and flush `text` on stdout or stderr as it is (one write to the
        file, so another writer to the same terminal cannot split it); False if
        that stream is lost, now or before."""
        file = self.out if stream == "stdout" else self.err
        if file is None:
            return False
        try:
            file.write(text)
            file.flush()
        except OSError as exc:
            self._lose(stream, file, exc.strerror or str(exc) or type(exc).__name__)
            return False
        return True

    def _lose(self, stream: Stream, file: TextIO, reason: str) -> None:
        if stream == "stdout":
            self.out = None
        else:
            self.err = None
        self.lost[stream] = reason
        # Told before the descriptor is pointed at /dev/null: whoever watches
        # it (the runner, for a pipe's reader) lets go of it first.
        if self.on_stream_lost is not None:
            self.on_stream_lost(stream, reason)
        silence(file)


def job_label(job: int | str) -> str:
    return f"job {job}" if isinstance(job, int) else job
