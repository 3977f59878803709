"""The session report as one self-contained HTML page.

The page carries everything inline: its CSS, the timeline SVG, the digest's
parts as tables. No script and no network resource of any kind (a
Content-Security-Policy says so to the browser too), so it opens the same
from a mail attachment, a file or an air-gapped machine, and a job's output
shown in it can never run or fetch anything: every piece of session data is
escaped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from html import escape

from ..console import plural
from ..output import printable
from .formats import clock, dollars, how_ended, percent, span
from .model import Digest, Job, Worker
from .text import TAIL_SHOWN, budget_text, projection_text, state_note, undestroyed

_CSS = """
body { font-family: sans-serif; font-size: 14px; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: monospace; font-size: 12px; }
pre { margin: 0.3em 0 0; padding: 0.3em; background: #f7f7f7; white-space: pre-wrap; }
.note { color: #555; }
.more { color: #555; font-style: italic; }
.warning { border: 2px solid #d62728; color: #a00; padding: 0.5em; font-weight: bold; }
.flag { color: #d62728; font-weight: bold; }
.ok { color: #2ca02c; } .failed, .lost { color: #d62728; } .timeout { color: #e06c00; }
.timeline { overflow-x: auto; }
"""

# Nothing may load: no script, no frame, no image or font from anywhere.
_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(text: object) -> str:
    return escape(printable(str(text)), quote=True)


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = ()
) -> str:
    """A table of already-escaped cells; columns in `numeric` are right-aligned."""
    right = set(numeric)
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{cell}</td>' if c in right else f"<td>{cell}</td>"
            for c, cell in enumerate(row)
        )
        + "</tr>\n"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _more(shown: int, total: int) -> str:
    return f'<p class="more">... and {total - shown} more</p>' if total > shown else ""


def inline_svg(svg_text: str) -> str:
    """SVG text made fit for inline HTML: HTML puts <svg> in its namespace by itself."""
    return re.sub(r'\s+xmlns="[^"]*"', "", svg_text, count=1)


def html(digest: Digest, svg_text: str | None) -> str:
    """The report page: the digest's parts as tables, and the timeline picture."""
    session, counts = digest.session, digest.counts
    day = session.started
    name = f"session {session.id}" if session.id is not None else str(session.directory)
    title = f"cloudtask {name}: {session.state}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<h1>cloudtask {_e(name)}: <span class="{_e(session.state)}">{_e(session.state)}</span>'
        "</h1>",
    ]
    if note := state_note(digest):
        parts.append(f'<p class="note">{_e(note)}</p>')
    facts = [
        ("command", f"<code>{_e(session.command or '-')}</code>"),
        ("started", _e(clock(session.started))),
        ("ended", _e(clock(session.ended))),
        ("elapsed", _e(span(session.elapsed))),
        ("runs", _e(session.runs)),
        ("directory", f"<code>{_e(session.directory)}</code>"),
        ("report made", _e(clock(digest.generated))),
    ]
    parts.append(
        "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + "</table>"
    )
    parts.append(
        _table(
            ["jobs", "ok", "failed", "timeout", "lost", "pending", "running"],
            [
                [
                    _e(value)
                    for value in (
                        counts.total,
                        counts.ok,
                        counts.failed,
                        counts.timeout,
                        counts.lost,
                        counts.pending,
                        counts.running,
                    )
                ]
            ],
            numeric=range(7),
        )
    )
    if leftover := undestroyed(digest):
        items = "".join(
            f"<li>{_e(i.name)}: {_e(i.instance_id or '(no id: launch outcome unknown)')} "
            f"({_e(i.provider)} {_e(i.size or '')}), launched {_e(clock(i.launched or i.intended))}"
            "</li>"
            for i in leftover
        )
        parts.append(
            f'<div class="warning">{_e(plural(len(leftover), "launched instance"))} NOT '
            f"DESTROYED: it may still be running, and billing.<ul>{items}</ul></div>"
        )
    if svg_text:
        parts += ["<h2>Timeline</h2>", f'<div class="timeline">{inline_svg(svg_text)}</div>']
    parts += _workers(digest)
    parts += _cost(digest)
    parts.append("<h2>Configuration</h2>")
    if digest.config:
        parts.append(
            _table(
                ["option", "value"], [[_e(k), f"<code>{_e(v)}</code>"] for k, v in digest.config]
            )
        )
    else:
        parts.append('<p class="note">defaults only</p>')
    parts += _jobs(digest, day)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _workers(digest: Digest) -> list[str]:
    # Each column is its heading next to its cell, so the header and the rows
    # cannot disagree on the columns, and no column goes without a name.
    columns: list[tuple[str, Callable[[Worker], str]]] = [
        ("worker", lambda w: _e(w.name)),
        ("jobs", lambda w: _e(w.attempts)),
        ("ok", lambda w: _e(w.ok)),
        ("failed", lambda w: _e(w.failed)),
        ("timeout", lambda w: _e(w.timeout)),
        ("lost", lambda w: _e(w.lost)),
        ("work", lambda w: _e(span(w.work_seconds))),
        ("lifetime", lambda w: _e(span(w.lifetime))),
        ("efficiency", lambda w: _e(percent(w.efficiency))),
        ("instance", lambda w: _e(", ".join(i.instance_id or "?" for i in w.instances) or "-")),
        (
            "size",
            lambda w: _e(
                ", ".join(sorted({f"{i.provider} {i.size or '?'}" for i in w.instances})) or "-"
            ),
        ),
        ("address", lambda w: _e(", ".join(i.address or "-" for i in w.instances) or "-")),
        (
            "destroyed",
            lambda w: _destroyed(w.not_destroyed, "NOT DESTROYED") if w.launched else "-",
        ),
    ]
    header = [name for name, _ in columns]
    rows = [[cell(worker) for _, cell in columns] for worker in digest.workers]
    return [
        f"<h2>Workers ({len(digest.workers)})</h2>",
        _table(header, rows, numeric=range(1, 9)) if rows else "<p>none</p>",
    ]


def _destroyed(not_destroyed: bool, flag: str) -> str:
    """The "destroyed" cell of a launched worker or instance: yes, or the flag."""
    return f'<span class="flag">{_e(flag)}</span>' if not_destroyed else "yes"


def _cost(digest: Digest) -> list[str]:
    cost = digest.cost
    budget = budget_text(digest)
    after = [] if budget is None else [f"<p>{_e(budget)}</p>"]
    heading = "<h2>Cost of launched workers</h2>"
    if cost is None:  # none launched: only a budget to show, if any
        return [heading, "<p>none launched</p>", *after] if after else []
    if projected := projection_text(digest):
        after.insert(0, f"<p>projected <b>{_e(projected)}</b></p>")
    rows = [
        [
            _e(i.instance_id or "?"),
            _e(worker.name),
            _e(i.provider),
            _e(i.size or "?"),
            _e(f"{i.hours:.4f}"),
            _e("?" if i.hourly_price is None else f"{i.hourly_price:g}"),
            _e(dollars(i.cost)),
            _destroyed(i.not_destroyed, "NOT DESTROYED: counted to now"),
        ]
        for worker in digest.workers
        for i in worker.instances
    ]
    total = dollars(cost.total)
    if cost.unpriced:
        total += f" (without {plural(cost.unpriced, 'instance')} of unknown price)"
    return [
        heading,
        _table(
            ["instance", "worker", "provider", "size", "hours", "$/hour", "cost", "destroyed"],
            rows,
            numeric=(4, 5, 6),
        ),
        f"<p>total <b>{_e(total)}</b> for {cost.instance_hours:.4f} instance hours; "
        f"work {cost.work_hours:.4f} hours; efficiency (work / instance hours) "
        f"<b>{_e(percent(cost.efficiency))}</b></p>",
        *after,
    ]


def _jobs(digest: Digest, day: float | None) -> list[str]:
    counts, jobs = digest.counts, digest.jobs
    parts = []
    if counts.running:
        parts.append(f"<h2>Running jobs ({counts.running})</h2>")
        parts.append(
            _table(
                ["job", "worker", "since", "command"],
                (
                    [
                        _e(job.id),
                        _e(job.last.worker if job.last else "-"),
                        _e(clock(job.last.started, day) if job.last else "-"),
                        f"<code>{_e(job.command)}</code>",
                    ]
                    for job in jobs.running
                ),
                numeric=(0,),
            )
        )
        parts.append(_more(len(jobs.running), counts.running))
    parts.append(f"<h2>Pending jobs ({counts.pending})</h2>")
    if jobs.pending:
        parts.append(
            _table(
                ["job", "line", "command"],
                ([_e(j.id), _e(j.line), f"<code>{_e(j.command)}</code>"] for j in jobs.pending),
                numeric=(0, 1),
            )
        )
    parts.append(_more(len(jobs.pending), counts.pending))
    parts.append(
        f"<h2>Failed jobs ({counts.not_ok}: {counts.failed} failed, {counts.timeout} timeout, "
        f"{counts.lost} lost)</h2>"
    )
    if jobs.not_ok:
        parts.append(
            _table(
                ["job", "state", "how", "worker", "started", "time", "attempts", "command, output"],
                (_failed_row(job, day) for job in jobs.not_ok),
                numeric=(0, 5, 6),
            )
        )
    parts.append(_more(len(jobs.not_ok), counts.not_ok))
    parts.append(f"<h2>Succeeded jobs ({counts.ok})</h2>")
    if jobs.ok:
        parts.append(
            _table(
                ["job", "worker", "started", "time", "command"],
                (
                    [
                        _e(job.id),
                        _e(job.last.worker if job.last else "-"),
                        _e(clock(job.last.started, day) if job.last else "-"),
                        _e(span(job.last.duration) if job.last else "-"),
                        f"<code>{_e(job.command)}</code>",
                    ]
                    for job in jobs.ok
                ),
                numeric=(0, 3),
            )
        )
    parts.append(_more(len(jobs.ok), counts.ok))
    return parts


def _failed_row(job: Job, day: float | None) -> list[str]:
    last = job.last
    tail = "\n".join(last.tail.splitlines()[-TAIL_SHOWN:]) if last else ""
    output = f"<pre>{_e(tail)}</pre>" if tail else ""
    return [
        _e(job.id),
        f'<span class="{_e(job.state)}">{_e(job.state)}</span>',
        _e(how_ended(last) if last else "never run"),
        _e(last.worker if last else "-"),
        _e(clock(last.started, day) if last else "-"),
        _e(span(last.duration) if last else "-"),
        _e(len(job.attempts)),
        f"<code>{_e(job.command)}</code>{output}",
    ]
