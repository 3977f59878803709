"""What the user sees: one line per event, the summary line, the confirmation.

Formatting is pure (functions that return text); Console only writes the
text to the terminal and to the session log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

from .output import printable
from .scheduler import JobState

if TYPE_CHECKING:
    from .live import LiveView


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


def silence_stdout() -> None:
    """Send what is still printed to /dev/null, so exiting does not fail on flush."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class Console:
    """Writes event lines to the terminal (stdout) and to the session log."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out: TextIO | None = out or sys.stdout
        self.err = err or sys.stderr
        self.log: TextIO | None = None
        # The live view (live.py) while it is on the terminal: lines that go
        # to the terminal then scroll above it rather than through it.
        self.live: LiveView | None = None

    def _to_terminal(self, stream: TextIO | None) -> bool:
        return self.live is not None and stream is not None and stream.isatty()

    def line(self, text: str) -> None:
        text = printable(text)  # a job's command or output never drives a terminal
        if self._to_terminal(self.out):
            assert self.live is not None
            self.live.print(text)
        elif self.out is not None:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except BrokenPipeError:
                # Nobody reads stdout any more (| head): the run and its log go on.
                self.out = None
                silence_stdout()
        if self.log is not None:
            self.log.write(text + "\n")

    def warn(self, text: str) -> None:
        text = printable(text)
        if self._to_terminal(self.err):
            assert self.live is not None
            self.live.print(f"cloudtask: {text}")
        else:
            self.err.write(f"cloudtask: {text}\n")
            self.err.flush()
        if self.log is not None:
            self.log.write(f"warning: {text}\n")

    def job_output(self, worker: str, job: int | str, line: str) -> None:
        self.line(f"{worker} {job_label(job)} | {printable(line)}")


def job_label(job: int | str) -> str:
    return f"job {job}" if isinstance(job, int) else job
