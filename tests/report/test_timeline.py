"""The timeline picture (report/timeline.py) and the HTML page (report/html.py)."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tests.support.report_stores import (
    ONE_IN_THE_PLURAL,
    T0,
    attempt,
    big_session,
    free_lock,
    launched_session,
    new_store,
    real_session,
)

from cloudtask.report import digest as d
from cloudtask.report import sections
from cloudtask.report.html import html
from cloudtask.report.timeline import COLOURS, svg, ticks
from cloudtask.scheduler import JobState

SVG = "{http://www.w3.org/2000/svg}"


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    return root


def rows(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-worker", ""): g for g in root.iter(f"{SVG}g") if g.get("class") == "row"}


def fills(element: ET.Element) -> list[str]:
    return [
        rect.get("fill", "")
        for rect in element.iter(f"{SVG}rect")
        if "bar" in (rect.get("class") or "") or rect.get("class") in COLOURS
    ]


def test_a_real_session_has_a_row_per_worker_and_bars_in_outcome_colours() -> None:
    path = real_session("0", "1", "0", "2", "0")
    digest = d.load(path, timeline=True)
    root = parse(svg(digest))

    found = rows(root)
    assert sorted(found) == ["local1", "local2"]
    every = [fill for row in found.values() for fill in fills(row)]
    assert every.count(COLOURS["ok"]) + every.count(COLOURS["failed"]) == len(every) > 0
    assert COLOURS["failed"] in every and COLOURS["ok"] in every
    # Each attempt has its tooltip naming the job.
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert any(title.startswith("job 2: failed") for title in titles)
    # A legend names every outcome; the axis is labelled in seconds.
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    for outcome in ("ok", "failed", "timeout", "lost", "stopped"):
        assert outcome in texts
    assert "0 s" in texts


def test_launched_workers_show_their_life_and_outcomes() -> None:
    digest = d.load(launched_session(), timeline=True)
    root = parse(svg(digest))
    found = rows(root)
    assert sorted(found) == ["hub1", "hub2"]

    hub1 = found["hub1"]
    assert fills(hub1) == [COLOURS["ok"], COLOURS["failed"]]
    assert fills(found["hub2"]) == [COLOURS["ok"], COLOURS["timeout"]]
    lives = [line for line in hub1.iter(f"{SVG}line") if line.get("class") == "life"]
    ticks_ = [line for line in hub1.iter(f"{SVG}line") if line.get("class") == "tick"]
    assert len(lives) == 1 and len(ticks_) == 2  # launched and destroyed
    # hub1 lived 30 of the session's 60 minutes: its line spans half the axis.
    width = float(lives[0].get("x2", "0")) - float(lives[0].get("x1", "0"))
    assert width == pytest.approx(500, abs=1)
    assert not [t for t in root.iter(f"{SVG}text") if t.get("class") == "flag"]
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "axis"]
    assert labels[:3] == ["0 min", "10 min", "20 min"]


def test_an_undestroyed_instance_is_flagged_on_its_row() -> None:
    path, store = new_store(jobs=2)
    store.begin_run(T0)
    store.intend_instance("a", "ec2", "ec2-1", "t3.small", 0.0208, T0)
    store.instance_launched("a", "i-left", T0)
    attempt(store, 1, "ec2-1", 10, 100, "ok", JobState.OK, 0)
    store.start_attempt(2, "ec2-1", T0 + 120)  # then the controller was killed
    store.close()
    free_lock(path)

    digest = d.load(path, timeline=True, now=T0 + 200)
    assert digest.session.state == "interrupted"
    row = rows(parse(svg(digest)))["ec2-1"]
    flags = [t.text for t in row.iter(f"{SVG}text") if t.get("class") == "flag"]
    assert flags == ["NOT DESTROYED"]
    assert COLOURS["lost"] in fills(row)  # the attempt whose end is unknown
    ticks_ = [line for line in row.iter(f"{SVG}line") if line.get("class") == "tick"]
    assert len(ticks_) == 1  # launched, never destroyed


def test_a_huge_session_gives_a_bounded_picture_that_still_shows_failures() -> None:
    path = big_session(100_000)
    digest = d.load(path, timeline=True)
    timeline = digest.timeline
    assert timeline is not None
    assert len(timeline.rows) == 4
    for row in timeline.rows:
        assert 0 < len(row.bars) <= 2 * d.TIMELINE_COLUMNS
        assert sum(bar.attempts for bar in row.bars) == 24_750
    text = svg(digest)
    assert len(text) < 2_000_000
    found = rows(parse(text))
    assert len(found) == 4
    # Every 10th job failed: local2 and local4 ran them; their bars mix red in.
    assert COLOURS["failed"] in fills(found["local2"])
    assert COLOURS["failed"] not in fills(found["local1"])


def test_many_workers_are_bounded_too() -> None:
    path, store = new_store(jobs=300)
    store.begin_run(T0)
    for n in range(1, 301):
        attempt(store, n, f"w{n}", n, n + 0.5, "ok", JobState.OK, 0)
    store.end_run(T0 + 301, "finished")
    store.close()
    digest = d.load(path, timeline=True)
    assert digest.timeline is not None
    assert digest.timeline.rows_omitted == 300 - d.TIMELINE_ROWS
    root = parse(svg(digest))
    assert len(rows(root)) == d.TIMELINE_ROWS
    assert list(rows(root))[:3] == ["w1", "w2", "w3"]  # natural order
    assert any("100 more workers not drawn" in (t.text or "") for t in root.iter(f"{SVG}text"))


def test_attempts_over_the_bar_limit_are_counted_in_the_singular_and_plural() -> None:
    digest = d.load(real_session("0", split=1), timeline=True)
    assert digest.timeline is not None
    titles = []
    for dropped in (1, 2):
        row = dataclasses.replace(digest.timeline.rows[0], bars_dropped=dropped)
        timeline = dataclasses.replace(digest.timeline, rows=(row,))
        root = parse(svg(dataclasses.replace(digest, timeline=timeline)))
        titles += [t.text for t in root.iter(f"{SVG}title") if "bar limit" in (t.text or "")]
    assert titles == [
        "1 attempt over the bar limit not drawn",
        "2 attempts over the bar limit not drawn",
    ]


def test_a_digest_without_a_timeline_is_refused() -> None:
    with pytest.raises(ValueError, match="timeline=True"):
        svg(d.load(launched_session()))


@pytest.mark.parametrize(
    ("length", "step", "label"),
    [
        (0.006, 0.001, "0.003 s"),
        (42, 10, "30 s"),
        (3600, 600, "30 min"),
        (3 * 86400, 12 * 3600, "36 h"),
        (80 * 86400, 10 * 86400, "720 h"),
    ],
)
def test_axis_steps_are_round(length: float, step: float, label: str) -> None:
    got, labels = ticks(length)
    assert got == pytest.approx(step)
    assert labels(3 * step) == label


# -- the HTML page ------------------------------------------------------------------------


RESOURCE = re.compile(r"""(?:src|href|action|data)\s*=|url\(|@import""", re.IGNORECASE)


def test_the_page_is_self_contained_and_embeds_the_picture() -> None:
    digest = d.load(launched_session(), timeline=True)
    picture = svg(digest)
    page = html(digest, picture)

    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert "http://" not in page and "https://" not in page
    assert not RESOURCE.search(page)
    assert "<svg " in page and "</svg>" in page
    assert page.count('class="row"') == 2
    for heading in ("Workers (2)", "Cost of launched workers", "Configuration", "Failed jobs"):
        assert heading in page
    assert "$0.1064" in page and "75.0%" in page
    assert "Content-Security-Policy" in page


def test_the_page_escapes_what_jobs_and_workers_print() -> None:
    path, store = new_store()
    store.add_jobs([(1, 1, "echo '<script>alert(1)</script>'")])
    store.begin_run(T0)
    attempt(
        store, 1, "<b>w</b>", 0, 1, "failed", JobState.FAILED, 1, '<img src="http://x/y">\x1b[2J'
    )
    store.end_run(T0 + 1, "finished")
    store.close()
    digest = d.load(path, timeline=True)
    page = html(digest, svg(digest))
    assert "<script" not in page
    assert "<img" not in page and "<b>w</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page
    parse(svg(digest))  # still valid XML with that worker name


def test_a_one_job_page_says_1_job() -> None:
    digest = d.load(real_session("0", split=1), timeline=True)
    page = html(digest, svg(digest))

    assert "1 job: 1 ok, 0 failed" in page  # in the picture's caption
    assert not ONE_IN_THE_PLURAL.search(page), ONE_IN_THE_PLURAL.findall(page)
    two = d.load(real_session("0", "1", split=1), timeline=True)
    assert "2 jobs: 1 ok, 1 failed" in html(two, svg(two))


def test_a_page_without_a_picture(tmp_path: Path) -> None:
    digest = d.load(launched_session())
    page = html(digest, None)
    assert "<svg" not in page and "Workers (2)" in page


class Tables(HTMLParser):
    """The page's tables, each under the heading before it: its rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.heading = ""
        self._in: str | None = None  # h2, or th/td: where text goes
        self._text = ""
        self._rows: list[list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._rows = self.tables.setdefault(self.heading, [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("h2", "th", "td"):
            self._in, self._text = tag, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._rows = None
        elif tag == "h2" and self._in == "h2":
            self.heading, self._in = self._text.strip(), None
        elif tag in ("th", "td") and self._in == tag and self._rows:
            self._rows[-1].append(self._text.strip())
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._text += data


def page_tables(page: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(page)
    parser.close()
    return parser.tables


def check_table(rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Every row as wide as the header, no column without a name: the header and body."""
    header, *body = rows
    assert all(header), header
    for row in body:
        assert len(row) == len(header), (header, row)
    return header, body


def an_undestroyed_instance() -> Path:
    path, store = new_store(jobs=2)
    store.begin_run(T0)
    store.intend_instance("tok", "ec2", "ec2-1", "t3.small", 0.0208, T0)
    store.instance_launched("tok", "i-left", T0)
    attempt(store, 1, "ec2-1", 10, 20, "ok", JobState.OK, 0)
    store.intend_instance("tok2", "ec2", "ec2-2", "t3.small", 0.0208, T0)
    store.instance_launched("tok2", "i-gone", T0)
    attempt(store, 2, "ec2-2", 10, 20, "ok", JobState.OK, 0)
    store.instance_destroyed("tok2", T0 + 3600)
    store.end_run(T0 + 100, "finished")
    store.close()
    return path


def test_the_workers_table_has_a_named_filled_cell_in_every_column() -> None:
    tables = page_tables(html(d.load(real_session("0", "1", "0")), None))

    header, body = check_table(tables["Workers (2)"])
    # The text's columns: efficiency and destroyed are there only when a worker was launched.
    assert header[0] == "worker" and header[-1] == "address"
    assert sorted(row[0] for row in body) == ["local1", "local2"]
    for row in body:
        assert all(row), row  # a local worker: "-" where nothing applies
        assert row[-1] == "-"


def test_the_page_and_the_text_show_the_same_sections_and_rows() -> None:
    digest = d.load(an_undestroyed_instance(), now=T0 + 7200)
    said = sections.report(digest)
    page, text = html(digest, None), d.to_text(digest)
    tables = page_tables(page)
    for section in said.sections:
        assert f"\n{section.title}:\n" in text
        if section.table is None or section.warning:
            continue
        heading = section.title[:1].upper() + section.title[1:]
        header, rows = check_table(tables[heading])
        if section.table.header:
            assert header == [column.title for column in section.table.columns]
            assert rows == [list(row) for row in section.table.rows]
        for row in section.table.rows:
            assert any(all(cell in line for cell in row) for line in text.splitlines()), row
    assert "efficiency" in tables["Workers (2)"][0]
    assert "line" in page_tables(html(d.load(launched_session()), None))["Pending jobs (1)"][0]


def test_the_workers_and_cost_tables_say_which_instances_were_destroyed() -> None:
    tables = page_tables(html(d.load(an_undestroyed_instance(), now=T0 + 7200), None))

    _, workers = check_table(tables["Workers (2)"])
    assert {row[0]: row[-1] for row in workers} == {"ec2-1": "NOT DESTROYED", "ec2-2": "yes"}
    header, cost = check_table(tables["Cost of launched workers"])
    assert header[-1] == "destroyed"
    assert {row[0]: row[-1] for row in cost} == {
        "i-left": "NOT DESTROYED: counted to now",
        "i-gone": "yes",
    }
    _, workers = check_table(page_tables(html(d.load(launched_session()), None))["Workers (2)"])
    assert [row[-1] for row in workers] == ["yes", "yes"]
