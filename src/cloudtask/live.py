"""Live progress on a terminal: the run at a glance, redrawn in place.

When stderr is a terminal, a few rows at the bottom of its screen show
done/total, ok/failed/timeouts/lost, the rate and the time left, what each
worker is doing (a screenful of them, then a summary), and for launched
workers what they cost so far and are projected to cost (cost.projection,
as --budget reckons it; no projection before a job has ended), and the
budget if there is one. When the run ends the last picture stays, and what
follows is printed below it. When stderr is not a terminal nothing here
runs: the event lines alone, with no control characters.

The picture lives in rows kept for it: the terminal's scrolling region (its
margins) is set to the rows above them, so whatever anyone writes there (our
own event lines, or `| tee` copying them to the same terminal at any moment)
scrolls above the picture without touching it. The picture is drawn with
absolute cursor moves between a save and a restore of the cursor, in one
write, so another writer's line is neither cut nor moved.

`snapshot()`, `lines()` and the control sequences (`keep_rows()`, `frame()`,
`after_resize()`, `give_back()`) are pure;
`LiveView` only decides when to write them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from rich.text import Text

from . import cost
from .console import Console, plural
from .output import printable
from .scheduler import JobState
from .store import InstanceRecord

REFRESH_PER_SECOND = 4
SMALLEST = 6  # rows: a terminal with fewer gets no live view


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
    projected: float | None  # dollars when the batch ends, at the present rate; None: unknown
    booting: int
    starting: int = 0  # workers asked for while none has shown up yet
    budget: float | None = None  # --budget, dollars


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
    starting: int = 0,
    budget: float | None = None,
) -> Snapshot:
    """The run now, from the scheduler's counts, the workers and the instances.

    `starting`: how many workers are on their way while none has shown up.
    `budget`: --budget, shown beside the cost."""
    done = sum(finished.values())
    done_this_run = done - finished_at_start
    left = cost.seconds_left(total - done, done_this_run, elapsed)
    booting = sum(1 for what in doing.values() if what in ("launching", "booting"))
    figures = cost.projection(instances, now, left)
    return Snapshot(
        session,
        total,
        finished,
        running,
        done_this_run,
        elapsed,
        list(doing.items()),
        None if figures is None else figures.spent,
        None if figures is None else figures.projected,
        booting,
        0 if doing else starting,
        budget,
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
        f"{counts[JobState.FAILED]} failed, {plural(counts[JobState.TIMEOUT], 'timeout')}, "
        f"{counts[JobState.LOST]} lost",
        f"{rate:.1f} jobs/s, elapsed {clock(state.elapsed)}, ETA {clock(left)}; "
        f"{state.running} running, {pending} pending",
    ]
    count = len(state.doing)
    if count:
        workers = plural(count, "worker")
    elif state.starting:
        workers = f"starting {plural(state.starting, 'worker')}"
    else:
        workers = "no worker left"
    if state.booting:
        workers += f", booting {plural(state.booting, 'instance')}"
    out.append(workers + cost_text(state))
    room = max(0, height - len(out))
    shown = state.doing if len(state.doing) <= room else state.doing[: max(0, room - 1)]
    width = max((len(name) for name, _ in shown), default=0)
    out += [f"  {name.ljust(width)}  {printable(what)}" for name, what in shown]
    if len(shown) < len(state.doing):
        rest = state.doing[len(shown) :]
        running = sum(1 for _, what in rest if what.startswith(("job ", "jobs ")))
        out.append(f"  ... and {len(rest)} more ({running} running a job)")
    return out


def cost_text(state: Snapshot) -> str:
    """The cost's part of the workers line ("; cost $0.20 so far, $0.40 projected,
    budget $5"): nothing while no instance has a known price."""
    if state.cost is None:
        return ""
    text = f"; cost ${state.cost:.2f} so far"
    if state.projected is not None:
        text += f", ${state.projected:.2f} projected"
    if state.budget is not None:
        text += f", budget ${state.budget:g}"
    return text


# Control sequences (VT100, which every terminal emulator in use understands).
SAVE = "\x1b7"  # DECSC: save the cursor (position and attributes)
RESTORE = "\x1b8"  # DECRC: put it back
INDEX = "\x1bD"  # IND: down one row, scrolling at the bottom margin; the column stays
ERASE_LINE = "\x1b[2K"
ERASE_BELOW = "\x1b[J"
ALL_ROWS = "\x1b[r"  # DECSTBM with no margins: the whole screen scrolls again


def margins(bottom: int) -> str:
    """DECSTBM: only rows 1 to `bottom` scroll (it also moves the cursor home)."""
    return f"\x1b[1;{bottom}r"


def goto(row: int) -> str:
    return f"\x1b[{row};1H"


def keep_rows(rows: int, height: int, kept: int = 0) -> str:
    """Keep the bottom `height` rows of a `rows`-row screen for the picture
    (`kept` of them are kept already, and the margins say so).

    What is below the cursor is the picture's (nobody else writes there: every
    writer writes at the cursor) and is cleared; the lines above move up only
    as far as needed for the cursor's row to be above the kept rows, the
    cursor staying on its line and column: down a row at a time (scrolling
    only at the bottom margin), then back up as many."""
    more = height - kept
    return ERASE_BELOW + INDEX * more + f"\x1b[{more}A" + SAVE + margins(rows - height) + RESTORE


def frame(picture: Sequence[str], rows: int, columns: int, height: int) -> str:
    """The picture in the bottom `height` rows, each line cut to the screen's
    width (never wrapped), the cursor left where it was."""
    top = rows - height + 1
    drawn = [
        goto(top + number)
        + ERASE_LINE
        + (fit(picture[number], columns - 1) if number < len(picture) else "")
        for number in range(height)
    ]
    return SAVE + "".join(drawn) + RESTORE


def fit(line: str, width: int) -> str:
    """One screen row: cut with an ellipsis where it is wider (wide characters count two)."""
    text = Text(printable(line), no_wrap=True)
    text.truncate(max(1, width), overflow="ellipsis")
    return text.plain


def after_resize() -> str:
    """After the screen changed size: margins off (some terminals keep them,
    some reset them). Where the old picture went depends on the terminal, but
    it is still below the cursor, where `keep_rows()` clears."""
    return SAVE + ALL_ROWS + RESTORE


def give_back(rows: int, kept: int, used: int) -> str:
    """The end: the whole screen scrolls again and the cursor goes to the line
    below the picture's last line, so what follows is printed after it."""
    return ALL_ROWS + goto(rows - kept + max(1, used)) + "\r\n"


def terminal_size(stream: TextIO | None) -> os.terminal_size | None:
    """The size of the terminal `stream` writes to; None if it is not one (any more)."""
    try:
        if stream is None or not stream.isatty():
            return None
        return os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return None


def in_background(stream: TextIO | None) -> bool:
    """Whether another process group has the terminal: a job put in the
    background (Ctrl-Z, `bg`) must not draw on the shell's screen."""
    try:
        return stream is not None and os.tcgetpgrp(stream.fileno()) != os.getpgrp()
    except (OSError, ValueError):  # not our controlling terminal: nothing to tell
        return False


class LiveView:
    """Draws the picture in rows kept at the bottom of stderr's terminal.

    Every write goes through the console, so a terminal that hangs up or an
    stderr that fails drops stderr there (once, never raised) and the view
    stops drawing. Drawing happens on the caller's thread (the event loop):
    no thread of its own to fail unseen."""

    def __init__(self, console: Console, take: Snapshot | None = None) -> None:
        self._console = console
        self._latest = take
        self._size: os.terminal_size | None = None  # the screen the rows were kept on
        self._kept = 0  # rows kept at the bottom of the screen
        self._used = 0  # rows the last picture took
        self._frame = ""  # the last frame written
        self._on = False

    @staticmethod
    def wanted(stream: TextIO | None) -> bool:
        size = terminal_size(stream)
        return size is not None and size.lines >= SMALLEST and size.columns > 1

    @contextlib.contextmanager
    def shown(self) -> Iterator[LiveView]:
        """The picture while the block runs; the last one stays on the screen.

        In an event loop, a change of the terminal's size (SIGWINCH) redraws at
        once: the terminal drops the margins on a resize, and until the rows
        are kept again a line written at the cursor can land on the picture.
        Ctrl-Z (SIGTSTP) gives the rows back to the shell while stopped."""
        self._on = True
        self._draw()
        loop = running_loop()
        if loop is not None:
            loop.add_signal_handler(signal.SIGWINCH, self._draw)
            loop.add_signal_handler(signal.SIGTSTP, self._suspend)
        try:
            yield self
        finally:
            if loop is not None:
                loop.remove_signal_handler(signal.SIGWINCH)
                loop.remove_signal_handler(signal.SIGTSTP)
            self._draw()
            self._give_back()
            self._on = False

    def update(self, state: Snapshot) -> None:
        self._latest = state
        self._draw()

    def _picture(self, rows: int) -> list[str]:
        if self._latest is None:
            return ["starting..."]
        return lines(self._latest, max(3, rows // 2))

    def _draw(self) -> None:
        if not self._on:
            return
        size = terminal_size(self._console.err)
        if size is None or size.lines < SMALLEST or in_background(self._console.err):
            # stderr lost, a screen too small for now, or the shell's own (after
            # Ctrl-Z and `bg`): the next draw tries again.
            return
        setup = ""
        if size != self._size:
            if self._size is not None and self._kept:
                setup = after_resize()
            self._size, self._kept, self._frame = size, 0, ""
        picture = self._picture(size.lines)
        if len(picture) > self._kept:
            setup += keep_rows(size.lines, len(picture), self._kept)
            self._kept = len(picture)
        drawn = frame(picture, size.lines, size.columns, self._kept)
        if setup or drawn != self._frame:
            self._write(setup + drawn)
            self._frame, self._used = drawn, len(picture)

    def _give_back(self) -> None:
        if self._on and self._size is not None and self._kept:
            self._write(give_back(self._size.lines, self._kept, self._used))
        self._size, self._kept = None, 0

    def _suspend(self) -> None:
        """Stop as Ctrl-Z would have, the whole screen the shell's meanwhile;
        once continued, keep the rows again where the cursor is then."""
        self._give_back()
        os.kill(os.getpid(), signal.SIGSTOP)
        self._draw()

    def _write(self, text: str) -> None:
        if not self._console.write("stderr", text):
            self._on = False  # the terminal is gone: nothing more is drawn


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The loop to take the terminal's signals on: none outside the main
    thread (a program may run a session from another, through the API)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


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
