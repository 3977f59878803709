"""Live progress on a terminal: the run at a glance, redrawn in place.

When stderr is a terminal, a few lines at the bottom of the screen show
done/total, ok/failed/timeouts/lost, the rate and the time left, what each
worker is doing (a screenful of them, then a summary), and for launched
workers what they cost so far and are projected to cost. Event lines and job
output scroll above it. When the run ends the last picture stays, then the
summary line. When stderr is not a terminal nothing here runs: the event
lines alone, with no control characters.

`snapshot()` and `lines()` are pure; `LiveView` only redraws them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from rich.console import Console as RichConsole
from rich.live import Live
from rich.text import Text

from . import cost
from .output import printable
from .scheduler import JobState
from .store import InstanceRecord

REFRESH_PER_SECOND = 4


@dataclass(frozen=True, slots=True)
class Snapshot:
    session: int
    total: int
    counts: Mapping[JobState, int]  # final states, the session's whole history
    running: int
    done_this_run: int
    elapsed: float
    doing: Sequence[tuple[str, str]]  # (worker, what it does), in start order
    cost: float | None  # dollars so far, launched workers with a known price
    projected: float | None  # dollars when the batch ends, at the present rate
    booting: int


def snapshot(
    session: int,
    total: int,
    finished: Mapping[JobState, int],
    finished_at_start: int,
    running: int,
    elapsed: float,
    doing: Mapping[str, str],
    instances: Sequence[InstanceRecord],
    now: float,
) -> Snapshot:
    """The run now, from the scheduler's counts, the workers and the instances."""
    done = sum(finished.values())
    done_this_run = done - finished_at_start
    left = cost.seconds_left(total - done, done_this_run, elapsed)
    booting = sum(1 for what in doing.values() if what in ("launching", "booting"))
    return Snapshot(
        session,
        total,
        finished,
        running,
        done_this_run,
        elapsed,
        list(doing.items()),
        cost.spent(instances, now),
        cost.projected(instances, now, left),
        booting,
    )


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def lines(state: Snapshot, height: int) -> list[str]:
    """The picture, in at most `height` lines (at least the three summary lines)."""
    counts = state.counts
    done = sum(counts.values())
    rate = state.done_this_run / state.elapsed if state.elapsed > 0 else 0.0
    left = cost.seconds_left(state.total - done, state.done_this_run, state.elapsed)
    pending = state.total - done - state.running
    out = [
        f"session {state.session}: {done}/{state.total} done - {counts[JobState.OK]} ok, "
        f"{counts[JobState.FAILED]} failed, {counts[JobState.TIMEOUT]} timeouts, "
        f"{counts[JobState.LOST]} lost",
        f"{rate:.1f} jobs/s, elapsed {clock(state.elapsed)}, ETA {clock(left)}; "
        f"{state.running} running, {pending} pending",
    ]
    count = len(state.doing)
    workers = f"{count} worker{'s' if count != 1 else ''}" if count else "no worker left"
    if state.booting:
        workers += f", booting {state.booting} instance{'s' if state.booting != 1 else ''}"
    if state.cost is not None:
        workers += f"; cost ${state.cost:.2f} so far, ${state.projected or 0:.2f} projected"
    out.append(workers)
    room = max(0, height - len(out))
    shown = state.doing if len(state.doing) <= room else state.doing[: max(0, room - 1)]
    width = max((len(name) for name, _ in shown), default=0)
    out += [f"  {name.ljust(width)}  {printable(what)}" for name, what in shown]
    if len(shown) < len(state.doing):
        rest = state.doing[len(shown) :]
        running = sum(1 for _, what in rest if what.startswith("job "))
        out.append(f"  ... and {len(rest)} more ({running} running a job)")
    return out


class LiveView:
    """Redraws the picture on the terminal (stderr) while the run goes on."""

    def __init__(self, take: Snapshot | None = None) -> None:
        self.console = RichConsole(stderr=True, highlight=False, soft_wrap=False)
        self._live: Live | None = None
        self._latest = take

    @staticmethod
    def wanted(stream: object) -> bool:
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty()) and shutil.get_terminal_size().lines >= 6

    @contextlib.contextmanager
    def shown(self) -> Iterator[LiveView]:
        self._live = Live(
            self._render(),
            console=self.console,
            refresh_per_second=REFRESH_PER_SECOND,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        with self._live:
            try:
                yield self
            finally:
                self._live.update(self._render(), refresh=True)
        self._live = None

    def update(self, state: Snapshot) -> None:
        self._latest = state
        if self._live is not None:
            self._live.update(self._render())

    def print(self, text: str) -> None:
        """A line above the picture (it scrolls, the picture stays)."""
        if self._live is not None:
            self._live.console.print(Text(printable(text)), soft_wrap=True)

    def _render(self) -> Text:
        if self._latest is None:
            return Text("starting...")
        height = max(3, self.console.size.height // 2)
        # One screen line per line: a long command is cut, never wrapped.
        return Text("\n".join(lines(self._latest, height)), no_wrap=True, overflow="ellipsis")


async def keep_drawing(view: LiveView, take: object, stop: asyncio.Event) -> None:
    """Update the view from `take()` a few times a second until stop is set."""
    assert callable(take)
    while not stop.is_set():
        view.update(take())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / REFRESH_PER_SECOND)
    view.update(take())


def now() -> float:
    return time.time()
