"""The session report as one self-contained HTML page.

It lays out `sections.report(digest)`, the sections the text report has
too: what is said is decided there. Here: headings, tables, anchors (each
section's heading has its key as id), escaping, and the inline picture.
The page carries everything inline: its CSS, the timeline SVG. No script
and no network resource of any kind (a Content-Security-Policy says so to
the browser too), so it opens the same from a mail attachment, a file or an
air-gapped machine, and a job's output shown in it can never run or fetch
anything: every piece of session data is escaped.
"""

from __future__ import annotations

import re
from html import escape

from ..output import printable
from .formats import clock
from .model import Digest
from .sections import Entry, Flagged, Report, Section, Table, report

_CSS = """
body { font-family: sans-serif; font-size: 14px; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
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
dt { margin-top: 0.6em; }
dd { margin: 0.2em 0 0 1.5em; }
"""

# Nothing may load: no script, no frame, no image or font from anywhere.
_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(text: object) -> str:
    return escape(printable(str(text)), quote=True)


def inline_svg(svg_text: str) -> str:
    """SVG text made fit for inline HTML: HTML puts <svg> in its namespace by itself."""
    return re.sub(r'\s+xmlns="[^"]*"', "", svg_text, count=1)


def html(digest: Digest, svg_text: str | None) -> str:
    """The report page: `sections.report(digest)` laid out, and the timeline picture."""
    return render(report(digest), svg_text)


def render(said: Report, svg_text: str | None) -> str:
    title = f"{said.title}: {said.state}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<h1>{_e(said.title)}: <span class="{_e(said.state)}">{_e(said.state)}</span></h1>',
    ]
    if said.note:
        parts.append(f'<p class="note">{_e(said.note)}</p>')
    facts = [
        (fact.label, f"<code>{_e(fact.value)}</code>" if fact.code else _e(fact.value))
        for fact in said.facts
    ]
    # A page outlives its making (archived, mailed): it says when it was made.
    facts.append(("report made", _e(clock(said.generated))))
    parts.append(
        "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + "</table>"
    )
    warnings = [section for section in said.sections if section.warning]
    for section in warnings:
        parts.append(_warning(section))
    if svg_text:
        parts += [
            '<h2 id="timeline">Timeline</h2>',
            f'<div class="timeline">{inline_svg(svg_text)}</div>',
        ]
    for section in said.sections:
        if not section.warning:
            parts += _section(section)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _warning(section: Section) -> str:
    items = "".join(f"<li>{_e(line)}</li>" for line in section.lines)
    return f'<div class="warning">{_e(section.title)}<ul>{items}</ul></div>'


def _section(section: Section) -> list[str]:
    heading = section.title[:1].upper() + section.title[1:]
    parts = [f'<h2 id="{_e(section.key)}">{_e(heading)}</h2>']
    if section.table is not None:
        parts.append(_table(section.table))
    parts += [_table(table) for table in section.tables]
    if section.entries:
        parts.append(
            '<dl class="jobs">' + "".join(_entry(entry) for entry in section.entries) + "</dl>"
        )
    if section.table is None and not section.tables and not section.entries and section.empty:
        parts.append(f'<p class="note">{_e(section.empty)}</p>')
    if section.more:
        parts.append(f'<p class="more">{_e(section.more)}</p>')
    parts += [f"<p>{_e(line)}</p>" for line in section.lines]
    return parts


def _cell(text: str, code: bool) -> str:
    if isinstance(text, Flagged):
        return f'<span class="flag">{_e(text)}</span>'
    return f"<code>{_e(text)}</code>" if code else _e(text)


def _table(table: Table) -> str:
    """A table; columns of numbers are right-aligned."""
    head = ""
    if table.header:
        titles = "".join(f"<th>{_e(column.title)}</th>" for column in table.columns)
        head = f"<thead><tr>{titles}</tr></thead>"
    body = "".join(
        "<tr>"
        + "".join(
            ('<td class="n">' if column.right else "<td>") + _cell(cell, column.code) + "</td>"
            for cell, column in zip(row, table.columns, strict=True)
        )
        + "</tr>\n"
        for row in table.rows
    )
    caption = "" if table.caption is None else f"<caption>{_e(table.caption)}</caption>"
    return f"<table>{caption}{head}<tbody>\n{body}</tbody></table>"


def _entry(entry: Entry) -> str:
    output = "\n".join(entry.output)
    return (
        f'<dt class="{_e(entry.state)}">{_e(entry.head)}</dt>'
        f"<dd><code>{_e(entry.command)}</code>"
        + (f"<pre>{_e(output)}</pre>" if output else "")
        + "</dd>\n"
    )
