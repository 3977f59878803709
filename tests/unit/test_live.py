"""The live view (live.py): its picture from made-up run states, and the
control sequences that keep it in the bottom rows of a terminal, played on a
small VT100 model. All pure functions.
"""

from __future__ import annotations

import re

from cloudtask import cost
from cloudtask.live import (
    clock,
    fit,
    frame,
    give_back,
    keep_rows,
    lines,
    snapshot,
)
from cloudtask.scheduler import JobState
from cloudtask.store import InstanceRecord

FINAL = {JobState.OK: 40, JobState.FAILED: 2, JobState.TIMEOUT: 1, JobState.LOST: 0}


def instance(name: str, launched: float, destroyed: float | None, price: float | None):
    return InstanceRecord(
        name,
        "hub",
        name,
        "t3.small",
        price,
        f"i-{name}",
        "198.18.0.9",
        launched,
        launched,
        launched + 1,
        destroyed,
        None,
    )


def test_counts_rate_eta_and_workers() -> None:
    doing = {"w1": "job 44: echo 44", "w2": "idle, waiting for jobs that may come back"}
    state = snapshot(3, 100, FINAL, 3, 1, 20.0, doing, [], 0.0)

    shown = lines(state, 30)

    assert shown[0] == "session 3: 43/100 done - 40 ok, 2 failed, 1 timeout, 0 lost"
    # 40 done in this run's 20 s: 2 jobs/s, 57 left: 28.5 s.
    assert shown[1] == "2.0 jobs/s, elapsed 0:20, ETA 0:28; 1 running, 56 pending"
    assert shown[2] == "2 workers"
    assert shown[3:] == ["  w1  job 44: echo 44", "  w2  idle, waiting for jobs that may come back"]


def test_more_workers_than_a_screenful_are_summed_up() -> None:
    doing = {f"w{n}": f"job {n}: true" for n in range(200)}
    doing |= {"(hub #1)": "booting", "(hub #2)": "booting"}
    state = snapshot(1, 1000, FINAL, 0, 200, 5.0, doing, [], 0.0)

    shown = lines(state, 12)

    assert len(shown) == 12
    assert shown[2] == "202 workers, booting 2 instances"
    assert shown[-1] == "  ... and 194 more (192 running a job)"


def test_cost_so_far_and_projected_for_launched_workers() -> None:
    # One instance ran an hour at $0.10 and is gone; one has run half an hour at $0.20.
    records = [instance("a", 0.0, 3600.0, 0.10), instance("b", 5400.0, None, 0.20)]
    now = 7200.0
    state = snapshot(
        1,
        100,
        {JobState.OK: 50, JobState.FAILED: 0, JobState.TIMEOUT: 0, JobState.LOST: 0},
        0,
        1,
        3600.0,
        {"b": "job 51: x"},
        records,
        now,
    )

    # $0.10 + $0.10 so far; 50 left at 50 per hour: one more hour of b at $0.20.
    assert state.cost is not None and abs(state.cost - 0.20) < 1e-9
    assert state.projected is not None and abs(state.projected - 0.40) < 1e-9
    assert lines(state, 10)[2] == "1 worker; cost $0.20 so far, $0.40 projected"
    # The figure --budget stops on (worker.Run.check_budget), from the same inputs.
    left = cost.seconds_left(100 - 50, 50, 3600.0)
    assert state.projected == cost.projected(records, now, left)


def test_the_budget_is_shown_beside_the_cost() -> None:
    records = [instance("a", 0.0, None, 0.10)]
    done = {JobState.OK: 50, JobState.FAILED: 0, JobState.TIMEOUT: 0, JobState.LOST: 0}
    state = snapshot(1, 100, done, 0, 1, 3600.0, {"a": "job 51: x"}, records, 3600.0, budget=5)

    assert lines(state, 10)[2] == "1 worker; cost $0.10 so far, $0.20 projected, budget $5"


def test_no_projection_before_a_job_ends_nor_once_the_run_stopped_with_jobs_left() -> None:
    # An hour of a $0.10 instance, no job ended yet: the time left is unknown.
    records = [instance("a", 0.0, None, 0.10)]
    none_done = dict.fromkeys(FINAL, 0)
    early = snapshot(1, 10, none_done, 0, 1, 3600.0, {"a": "job 1: x"}, records, 3600.0)

    assert early.cost is not None and abs(early.cost - 0.10) < 1e-9
    assert early.projected is None
    assert lines(early, 10)[2] == "1 worker; cost $0.10 so far"

    # The last picture of a run --budget stopped: every instance destroyed,
    # 40 jobs still pending. The cost so far is not shown as a projection.
    gone = [instance("a", 0.0, 3600.0, 0.10)]
    some = {JobState.OK: 10, JobState.FAILED: 0, JobState.TIMEOUT: 0, JobState.LOST: 0}
    last = snapshot(1, 50, some, 0, 0, 3600.0, {}, gone, 3700.0, budget=0.05)

    assert last.projected is None
    assert lines(last, 10)[2] == "no worker left; cost $0.10 so far, budget $0.05"


def test_no_price_no_cost_and_unknown_eta_before_any_job_ends() -> None:
    records = [instance("a", 0.0, None, None)]
    state = snapshot(1, 10, dict.fromkeys(FINAL, 0), 0, 0, 3.0, {"a": "connecting"}, records, 9.0)

    assert state.cost is None
    assert "ETA ?" in lines(state, 10)[1]
    assert lines(state, 10)[2] == "1 worker"


def test_clock() -> None:
    assert clock(None) == "?"
    assert clock(59.9) == "0:59"
    assert clock(3725) == "1:02:05"


def test_starting_workers_until_one_shows_up_then_none_left_at_the_end() -> None:
    counts = dict.fromkeys(FINAL, 0)
    before = snapshot(1, 10, counts, 0, 0, 0.0, {}, [], 0.0, starting=3)
    during = snapshot(1, 10, counts, 0, 1, 1.0, {"w1": "connecting"}, [], 0.0, starting=3)
    after = snapshot(1, 10, counts, 0, 0, 2.0, {}, [], 0.0)

    assert lines(before, 10)[2] == "starting 3 workers"
    assert lines(snapshot(1, 10, counts, 0, 0, 0.0, {}, [], 0.0, starting=1), 10)[2] == (
        "starting 1 worker"
    )
    assert during.starting == 0 and lines(during, 10)[2] == "1 worker"
    assert lines(after, 10)[2] == "no worker left"


def test_a_line_is_cut_to_the_width_with_wide_characters_counted_twice() -> None:
    assert fit("short", 10) == "short"
    assert fit("0123456789abc", 10) == "012345678…"
    # 2 + 2 columns, a space where the next wide character does not fit, 1 column.
    assert fit("ab漢字漢字", 6) == "ab漢 …"
    assert fit("a\x1b[2Jb", 20) == "a\\x1b[2Jb"  # a control character is shown, not obeyed


class Terminal:
    """Just enough of a VT100 to play the live view's control sequences on:
    text, CR, LF (a tty's "\\n" is CR LF), DECSC/DECRC, IND, CUU, CUP, DECSTBM,
    EL 2 and ED 0. Lines scrolled off the top of a region at row 1 go to the
    scrollback, as in xterm and tmux."""

    SEQUENCE = re.compile(r"\x1b(\[([0-9;]*)([A-Za-z])|[78D])|[\r\n]|[^\x1b\r\n]+")

    def __init__(self, rows: int, columns: int) -> None:
        self.height, self.width = rows, columns
        self.grid = [[" "] * columns for _ in range(rows)]
        self.scrollback: list[str] = []
        self.y = self.x = 0
        self.top, self.bottom = 0, rows - 1
        self.saved = (0, 0)

    def feed(self, data: str) -> None:
        for match in self.SEQUENCE.finditer(data):
            token = match[0]
            if token == "\r":
                self.x = 0
            elif token == "\n":
                self.x = 0
                self.index()
            elif token.startswith("\x1b"):
                self.control(token[1], match[2] or "", match[3] or "")
            else:
                for char in token:
                    if self.x >= self.width:
                        self.x = 0
                        self.index()
                    self.grid[self.y][self.x] = char
                    self.x += 1

    def control(self, kind: str, params: str, final: str) -> None:
        numbers = [int(n) for n in params.split(";") if n]
        if kind == "7":
            self.saved = (self.y, self.x)
        elif kind == "8":
            self.y, self.x = self.saved
        elif kind == "D":
            self.index()
        elif final == "A":
            floor = self.top if self.y >= self.top else 0
            self.y = max(floor, self.y - (numbers[0] if numbers else 1))
        elif final == "H":
            self.y, self.x = numbers[0] - 1, numbers[1] - 1
        elif final == "r":
            self.top, self.bottom = (
                (numbers[0] - 1, numbers[1] - 1) if numbers else (0, self.height - 1)
            )
            self.y = self.x = 0
        elif final == "K":
            self.grid[self.y] = [" "] * self.width
        elif final == "J":
            self.grid[self.y][self.x :] = [" "] * (self.width - self.x)
            for row in range(self.y + 1, self.height):
                self.grid[row] = [" "] * self.width
        else:
            raise AssertionError(f"not modelled: {params}{final}")

    def index(self) -> None:
        if self.y == self.bottom:
            gone = self.grid.pop(self.top)
            if self.top == 0:
                self.scrollback.append("".join(gone).rstrip())
            self.grid.insert(self.bottom, [" "] * self.width)
        elif self.y < self.height - 1:
            self.y += 1

    def screen(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.grid]

    def everything(self) -> list[str]:
        return self.scrollback + self.screen()


def picture(n: int, height: int = 3) -> list[str]:
    return [f"picture {n} line {row}" for row in range(height)]


def test_lines_written_at_the_cursor_scroll_above_the_kept_rows() -> None:
    term = Terminal(10, 40)
    term.feed("$ cloudtask ...\n")
    term.feed(keep_rows(10, 3) + frame(picture(0), 10, 40, 3))
    for n in range(1, 25):
        term.feed(f"event {n}\n")  # another writer (tee), at any moment
        if n % 4 == 0:
            term.feed(frame(picture(n), 10, 40, 3))
    term.feed(frame(picture(25), 10, 40, 3) + give_back(10, 3, 3))
    term.feed("summary\n")

    shown = [line for line in term.everything() if line]
    assert shown == [
        "$ cloudtask ...",
        *(f"event {n}" for n in range(1, 25)),
        *picture(25),
        "summary",
    ]


def test_the_cursor_keeps_its_line_and_column_through_every_redraw() -> None:
    term = Terminal(12, 40)
    term.feed("a partial")
    term.feed(keep_rows(12, 3) + frame(picture(0), 12, 40, 3) + " line\n")
    term.feed("half")
    term.feed(keep_rows(12, 5, 3) + frame(picture(1, 5), 12, 40, 5))
    term.feed(" and half\n")
    for n in range(12):
        term.feed(f"event {n}\n")
    term.feed("end of")  # the cursor at the bottom margin, the screen full
    term.feed(keep_rows(12, 6, 5) + frame(picture(2, 6), 12, 40, 6) + " a line\n")
    term.feed(frame(picture(3, 5), 12, 40, 6))  # a shorter picture: its last row is blank

    assert [line for line in term.everything() if line] == [
        "a partial line",
        "half and half",
        *(f"event {n}" for n in range(12)),
        "end of a line",
        *picture(3, 5),
    ]
    assert term.screen()[-7:] == ["", *picture(3, 5), ""]
    assert (term.top, term.bottom) == (0, 5)


def test_giving_the_rows_back_leaves_the_cursor_below_the_picture() -> None:
    term = Terminal(10, 40)
    term.feed(keep_rows(10, 4) + frame(picture(0, 2), 10, 40, 4) + give_back(10, 4, 2))
    term.feed("after")

    assert term.screen()[6:9] == [*picture(0, 2), "after"]
    assert (term.top, term.bottom) == (0, 9)


def test_a_frame_never_scrolls_and_never_wraps() -> None:
    drawn = frame(["x" * 200, "short"], 10, 40, 3)

    assert "\n" not in drawn and "\r" not in drawn
    term = Terminal(10, 40)
    term.feed(drawn)
    assert term.screen()[7:] == ["x" * 38 + "…", "short", ""]
    assert (term.y, term.x) == (0, 0)


def test_workers_running_several_jobs_count_as_running_in_the_summary() -> None:
    doing = {f"w{n}": f"jobs {n}, {n + 200}" for n in range(100)}
    doing |= {f"v{n}": f"job {n}: true" for n in range(100)}
    doing |= {"idle": "idle, waiting for jobs that may come back"}
    state = snapshot(1, 1000, FINAL, 0, 300, 5.0, doing, [], 0.0)

    shown = lines(state, 12)

    assert shown[-1] == "  ... and 193 more (192 running a job)"
