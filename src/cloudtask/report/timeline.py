"""A picture of a session: one row per worker, its jobs as bars on a time axis.

`svg(digest)` returns self-contained SVG text (no fonts, scripts or anything
fetched: generic font families only), for a browser, a mail attachment or
the HTML report. Bars are coloured by outcome; a launched worker's instance
life is a thin line with ticks where it was launched and destroyed, and an
instance never destroyed is flagged in red. Each bar carries a <title> (a
tooltip): the job, its outcome and its time.

The size is bounded whatever the session: the digest's timeline already
merges attempts narrower than a column (see bars.RowBuilder), so a row
has at most a few bars per pixel, and at most model.TIMELINE_ROWS workers
are drawn (the rest are counted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape

from ..console import plural
from ..output import printable
from .formats import counts_text, span
from .model import OUTCOMES, Bar, Digest, Timeline, TimelineRow

COLOURS = {
    "ok": "#2ca02c",
    "failed": "#d62728",
    "timeout": "#ff7f0e",
    "lost": "#7f7f7f",
    "stopped": "#d3d3d3",
    "running": "#1f77b4",
}
LIFE_COLOUR = "#444444"
FLAG_COLOUR = "#d62728"

PLOT_WIDTH = 1000  # pixels of the time axis
ROW_HEIGHT = 20
BAR_HEIGHT = 12
TOP = 66  # title and axis labels above the rows
NAME_CHARS = 24  # worker names longer than this are cut
CHAR_WIDTH = 7  # an estimate for 12 px sans-serif: no font metrics here
RIGHT = 110  # room for a "NOT DESTROYED" flag after the axis


def svg(digest: Digest) -> str:
    """The session's timeline as SVG text; the digest must be loaded with timeline=True."""
    timeline = digest.timeline
    if timeline is None:
        raise ValueError("the digest has no timeline: load it with timeline=True")
    names = [_name(row.worker) for row in timeline.rows]
    left = 12 + CHAR_WIDTH * max([len(name) for name in names] + [6])
    rows_bottom = TOP + ROW_HEIGHT * max(len(timeline.rows), 1)
    legend_y = rows_bottom + 28 + (16 if timeline.rows_omitted else 0)
    width = left + PLOT_WIDTH + RIGHT
    height = legend_y + 24
    scale = PLOT_WIDTH / (timeline.end - timeline.start)

    def x(when: float) -> float:
        # Clamped: an instance left running for days ends at the axis's end.
        return left + min(max(0.0, (when - timeline.start) * scale), PLOT_WIDTH)

    session = digest.session
    title = f"cloudtask session {session.id if session.id is not None else '?'}: {session.state}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img" '
        'shape-rendering="crispEdges">',
        f"<title>{_text(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="8" y="18" font-size="14" font-weight="bold">{_text(title)}</text>',
        f'<text x="8" y="36" fill="#333333">{_text(counts_text(digest.counts))}, '
        f"{_text(span(session.elapsed))}</text>",
    ]
    out += _axis(timeline, left, rows_bottom, x)
    for index, (row, name) in enumerate(zip(timeline.rows, names, strict=True)):
        out += _row(row, name, TOP + index * ROW_HEIGHT, left, x, digest.generated)
    if not timeline.rows:
        out.append(f'<text x="{left}" y="{TOP + 14}" fill="#666666">no worker ran a job</text>')
    if timeline.rows_omitted:
        out.append(
            f'<text x="8" y="{rows_bottom + 16}" fill="#666666">... and '
            f"{_text(plural(timeline.rows_omitted, 'more worker'))} not drawn</text>"
        )
    out += _legend(legend_y)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _name(worker: str) -> str:
    shown = printable(worker)
    return shown if len(shown) <= NAME_CHARS else shown[: NAME_CHARS - 3] + "..."


def _text(value: str) -> str:
    """Text for XML: control characters escaped first (XML forbids them even as &#..;)."""
    return escape(printable(value), quote=True)


def _n(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _row(
    row: TimelineRow,
    name: str,
    top: int,
    left: int,
    x: Callable[[float], float],
    now: float,
) -> list[str]:
    middle = top + ROW_HEIGHT / 2
    flagged = any(life.end is None for life in row.lives)
    out = [f'<g class="row" data-worker="{_text(row.worker)}">']
    colour = FLAG_COLOUR if flagged else "#000000"
    out.append(
        f'<text x="{left - 6}" y="{_n(middle + 4)}" text-anchor="end" fill="{colour}">'
        f"{_text(name)}<title>{_text(row.worker)}</title></text>"
    )
    for life in row.lives:
        start = x(life.start)
        end = x(now) if life.end is None else x(life.end)
        what = f"instance {life.instance_id or '(no id)'}"
        out.append(
            f'<line class="life" x1="{_n(start)}" y1="{_n(middle)}" x2="{_n(end)}" '
            f'y2="{_n(middle)}" stroke="{LIFE_COLOUR}" stroke-width="1">'
            f"<title>{_text(what)}</title></line>"
        )
        out.append(_tick(start, top, f"{what} launched"))
        if life.end is not None:
            out.append(_tick(end, top, f"{what} destroyed"))
    for bar in row.bars:
        out.append(_bar(bar, top, x))
    if flagged:
        out.append(
            f'<text class="flag" x="{left + PLOT_WIDTH + 6}" y="{_n(middle + 4)}" '
            f'fill="{FLAG_COLOUR}" font-weight="bold">NOT DESTROYED</text>'
        )
    if row.bars_dropped:
        dropped = plural(row.bars_dropped, "attempt")
        out.append(f"<title>{dropped} over the bar limit not drawn</title>")
    out.append("</g>")
    return out


def _tick(at: float, top: int, what: str) -> str:
    return (
        f'<line class="tick" x1="{_n(at)}" y1="{top + 2}" '
        f'x2="{_n(at)}" y2="{top + ROW_HEIGHT - 2}" '
        f'stroke="{LIFE_COLOUR}" stroke-width="1.5"><title>{_text(what)}</title></line>'
    )


def _bar(bar: Bar, top: int, x: Callable[[float], float]) -> str:
    start = x(bar.start)
    width = max(1.0, x(bar.end) - start)  # a bar too short to see still shows
    if bar.attempts == 1:
        what = f"job {bar.first_job}: {bar.outcome}, {span(bar.end - bar.start)}"
    else:
        each = ", ".join(f"{count} {outcome}" for outcome, count in bar.outcomes)
        what = (
            f"jobs {bar.first_job}..{bar.last_job}: {bar.attempts} attempts ({each}), "
            f"{span(bar.end - bar.start)}"
        )
    y = top + (ROW_HEIGHT - BAR_HEIGHT) // 2
    if len(bar.outcomes) == 1:
        return (
            f'<rect class="bar {bar.outcome}" x="{_n(start)}" y="{y}" '
            f'width="{_n(width)}" height="{BAR_HEIGHT}" fill="{_colour(bar.outcome)}">'
            f"<title>{_text(what)}</title></rect>"
        )
    # Mixed outcomes: a stack, each outcome's share of the attempts in its colour.
    out = [f'<g class="bar mixed {bar.outcome}"><title>{_text(what)}</title>']
    top_of = float(y)
    for outcome, count in bar.outcomes:
        height = BAR_HEIGHT * count / bar.attempts
        out.append(
            f'<rect class="{outcome}" x="{_n(start)}" y="{_n(top_of)}" width="{_n(width)}" '
            f'height="{_n(height)}" fill="{_colour(outcome)}"/>'
        )
        top_of += height
    out.append("</g>")
    return "".join(out)


def _colour(outcome: str) -> str:
    return COLOURS.get(outcome, "#000000")


def _axis(timeline: Timeline, left: int, bottom: int, x: Callable[[float], float]) -> list[str]:
    length = timeline.end - timeline.start
    step, label = ticks(length)
    out = [
        f'<line x1="{left}" y1="{TOP - 4}" x2="{left + PLOT_WIDTH}" y2="{TOP - 4}" '
        'stroke="#000000" stroke-width="1"/>'
    ]
    count = math.floor(length / step + 1e-9)
    for number in range(count + 1):
        offset = number * step
        at = x(timeline.start + offset)
        out.append(
            f'<line x1="{_n(at)}" y1="{TOP - 8}" x2="{_n(at)}" y2="{bottom}" '
            'stroke="#e0e0e0" stroke-width="1"/>'
        )
        out.append(
            f'<text class="axis" x="{_n(at)}" y="{TOP - 12}" text-anchor="middle">'
            f"{_text(label(offset))}</text>"
        )
    return out


def ticks(length: float) -> tuple[float, Callable[[float], str]]:
    """A round step for about eight ticks over `length` seconds, and its labels."""
    target = length / 8
    if length <= 120:
        magnitude = 10 ** math.floor(math.log10(target))
        step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= target)
        return step, lambda offset: f"{round(offset, 6):g} s"
    if length <= 4 * 3600:
        step = next(s for s in (60, 120, 300, 600, 900, 1200, 1800, 3600) if s >= target)
        return step, lambda offset: f"{round(offset / 60, 6):g} min"
    hours = (1, 2, 3, 6, 12, 24)
    step = next((h * 3600 for h in hours if h * 3600 >= target), 0)
    if not step:  # days: a round number of them
        days = target / 86400
        magnitude = 10 ** math.floor(math.log10(days))
        step = 86400 * next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= days)
    return step, lambda offset: f"{round(offset / 3600, 6):g} h"


def _legend(y: int) -> list[str]:
    out = []
    at = 8
    for outcome in OUTCOMES:
        out.append(
            f'<rect x="{at}" y="{y - 10}" width="12" height="12" fill="{COLOURS[outcome]}"/>'
            f'<text x="{at + 16}" y="{y}">{outcome}</text>'
        )
        at += 24 + CHAR_WIDTH * len(outcome)
    out.append(
        f'<line x1="{at}" y1="{y - 4}" x2="{at + 30}" y2="{y - 4}" stroke="{LIFE_COLOUR}"/>'
        f'<line x1="{at}" y1="{y - 10}" x2="{at}" y2="{y + 2}" stroke="{LIFE_COLOUR}" '
        'stroke-width="1.5"/>'
        f'<line x1="{at + 30}" y1="{y - 10}" x2="{at + 30}" y2="{y + 2}" '
        f'stroke="{LIFE_COLOUR}" stroke-width="1.5"/>'
        f'<text x="{at + 36}" y="{y}">instance: launched to destroyed</text>'
    )
    return out
