"""A timeline row's bars, from its attempts: bounded whatever the session.

Attempts narrower than a column of the picture gather into one bar per
column (`RowBuilder`), so a row has at most a few bars per column however
many jobs its worker ran.
"""

from __future__ import annotations

from .model import OUTCOMES, TIMELINE_COLUMNS, Bar

BARS_PER_ROW = 4 * TIMELINE_COLUMNS  # a hard bound, whatever the data


class Bucket:
    """Attempts each shorter than a column, gathered until they span one."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.end = start
        self.first_job = 0
        self.last_job = 0
        self.time: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def add(self, job: int, start: float, end: float, outcome: str) -> None:
        if not self.count:
            self.first_job = job
        self.last_job = job
        self.end = max(self.end, end)
        self.time[outcome] = self.time.get(outcome, 0.0) + (end - start)
        self.count[outcome] = self.count.get(outcome, 0) + 1

    def bar(self) -> Bar:
        # The outcome that took the most time (then the most attempts) colours it.
        outcome = max(self.count, key=lambda o: (self.time[o], self.count[o]))
        return Bar(
            self.start,
            self.end,
            outcome,
            sum(self.count.values()),
            self.first_job,
            self.last_job,
            tuple((o, self.count[o]) for o in OUTCOMES if o in self.count),
        )


class RowBuilder:
    """A worker's bars, from its attempts in start order.

    An attempt at least a column wide is its own bar. Shorter ones gather in
    a bucket until it spans a column (or an idle gap of a column ends it);
    buckets next to each other of one and the same outcome merge, so a long
    run of short ok jobs is one bar, while a column with failures among them
    keeps its mix. So a row has at most about two bars per column, whatever
    the number of jobs.
    """

    def __init__(self, column: float) -> None:
        self.column = column
        self.bars: list[Bar] = []
        self.bucket: Bucket | None = None
        self.dropped = 0

    def add(self, job: int, start: float, end: float, outcome: str) -> None:
        if end - start >= self.column:
            self._flush()
            self._append(Bar(start, end, outcome, 1, job, job, ((outcome, 1),)), merge=False)
            return
        if self.bucket is not None and start - self.bucket.end >= self.column:
            self._flush()
        if self.bucket is None:
            self.bucket = Bucket(start)
        self.bucket.add(job, start, end, outcome)
        if self.bucket.end - self.bucket.start >= self.column:
            self._flush()

    def finish(self) -> tuple[Bar, ...]:
        self._flush()
        return tuple(self.bars)

    def _flush(self) -> None:
        if self.bucket is not None:
            self._append(self.bucket.bar(), merge=True)
            self.bucket = None

    def _append(self, bar: Bar, *, merge: bool) -> None:
        previous = self.bars[-1] if self.bars else None
        if (
            merge
            and previous is not None
            and len(previous.outcomes) == len(bar.outcomes) == 1
            and previous.outcome == bar.outcome
            and bar.start - previous.end < self.column
            and (previous.attempts > 1 or previous.end - previous.start < self.column)
        ):
            counts = dict(previous.outcomes)
            for outcome, count in bar.outcomes:
                counts[outcome] = counts.get(outcome, 0) + count
            self.bars[-1] = Bar(
                previous.start,
                max(previous.end, bar.end),
                previous.outcome,
                previous.attempts + bar.attempts,
                previous.first_job,
                bar.last_job,
                tuple((o, counts[o]) for o in OUTCOMES if o in counts),
            )
            return
        if len(self.bars) >= BARS_PER_ROW:
            self.dropped += bar.attempts
            return
        self.bars.append(bar)
