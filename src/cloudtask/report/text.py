"""The report as text: a terminal page, and the body of the mail report.

It lays out `sections.report(digest)`: what is said is decided there. Here:
two-space indents, a section's title and a colon, columns padded to line up,
and commands cut to a width a terminal shows (a page wraps them instead).
"""

from __future__ import annotations

from collections.abc import Sequence

from .formats import COMMAND_SHOWN
from .model import Digest
from .sections import Entry, Fact, Report, Section, Table, report


def to_text(digest: Digest) -> str:
    """The digest for people: a terminal page, and the body of the mail report."""
    return render(report(digest))


def render(said: Report) -> str:
    out = [f"{said.title}: {said.state}"]
    if said.note:
        out.append(f"  ({said.note})")
    out += _facts(said.facts)
    for section in said.sections:
        out += ["", *_section(section)]
    return "\n".join(out) + "\n"


def _cut(text: str, width: int | None) -> str:
    return text if width is None or len(text) <= width else text[: width - 3] + "..."


def _facts(facts: Sequence[Fact]) -> list[str]:
    width = max(len(fact.label) for fact in facts) + 1
    return [f"  {fact.label + ':':<{width}} {_cut(fact.value, fact.cut)}" for fact in facts]


def _section(section: Section) -> list[str]:
    out = [f"{section.title}:"]
    if section.table is not None:
        out += _table(section.table)
    for table in section.tables:  # each under its caption
        if table.caption:
            out.append(f"  {table.caption}:")
        out += _table(table, "    " if table.caption else "  ")
    for entry in section.entries:
        out += _entry(entry)
    if section.table is None and not section.tables and not section.entries and section.empty:
        out.append(f"  ({section.empty})")
    if section.more:
        out.append(f"  {section.more}")
    out += [f"  {line}" for line in section.lines]
    return out


def _table(table: Table, indent: str = "  ") -> list[str]:
    columns = table.columns
    rows = [
        tuple(_cut(cell, c.cut) for cell, c in zip(row, columns, strict=True)) for row in table.rows
    ]
    if table.header:
        rows.insert(0, tuple(column.title for column in columns))
    widths = [max(len(row[c]) for row in rows) for c in range(len(columns))]
    return [
        indent
        + "  ".join(
            cell.rjust(width) if column.right else cell.ljust(width)
            for cell, width, column in zip(row, widths, columns, strict=True)
        ).rstrip()
        for row in rows
    ]


def _entry(entry: Entry) -> list[str]:
    return [
        f"  {entry.head}",
        f"    $ {_cut(entry.command, COMMAND_SHOWN)}",
        *(f"    | {line}" for line in entry.output),
    ]
