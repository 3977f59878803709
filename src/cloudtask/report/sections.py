"""What the report says: a digest as an ordered list of sections.

This is the one place that decides what a report shows of a session: which
sections, in which order, their tables' columns and rows, their notes, how
many rows they left out. `text.py` (a terminal page, a mail body) and
`html.py` (one self-contained page) only lay the same `Report` out, so the
two cannot drift apart. (JSON is not a report of this kind: `json_form` is a
data format with a schema of its own.)

Every string here is plain, printable text (control characters escaped, no
markup): a renderer escapes it for what it writes. Layout hints stay layout:
which columns are numbers (right-aligned), which cells are commands (code in
a page; cut in text, where a page wraps them), which cells warn (`Flagged`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..console import plural
from ..output import printable
from .formats import COMMAND_SHOWN, clock, counts_text, dollars, how_ended, percent, size, span
from .model import Counts, Digest, Instance, Job, JobUse, Resources, Worker

TAIL_SHOWN = 10  # last lines of output shown with a job that is not ok
TABLE_COMMAND_SHOWN = 100  # characters of a command in a table cell, in text


class Flagged(str):
    """A cell that warns (an instance not destroyed): a page shows it in red."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    right: bool = False  # a number: right-aligned
    code: bool = False  # a command or an option's value: code in a page
    cut: int | None = None  # text cuts cells to this many characters (a page wraps them)


@dataclass(frozen=True, slots=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    header: bool = True  # False: name and value pairs, shown without a header row
    caption: str | None = None  # what a table after a section's first one shows


@dataclass(frozen=True, slots=True)
class Entry:
    """One job told in full: how it ended, its command, the end of its output."""

    head: str
    state: str  # the job's state
    command: str
    output: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Section:
    key: str  # a stable name: "workers", "failed", ...
    title: str
    table: Table | None = None
    tables: tuple[Table, ...] = ()  # more, each under its caption, after `table`
    entries: tuple[Entry, ...] = ()
    empty: str | None = None  # what is said when nothing is listed
    more: str | None = None  # how many were left out: "... and 3 more"
    lines: tuple[str, ...] = ()  # notes, after the rest
    warning: bool = False  # a warning, not a part of the digest


@dataclass(frozen=True, slots=True)
class Fact:
    label: str
    value: str
    code: bool = False  # a command or a path: code in a page
    cut: int | None = None  # text cuts it to this many characters


@dataclass(frozen=True, slots=True)
class Report:
    title: str  # "cloudtask session 1"
    state: str  # the session's state, said after the title
    note: str | None  # what the state means, when it needs saying
    facts: tuple[Fact, ...]
    sections: tuple[Section, ...]
    generated: float  # when the digest was read


def report(digest: Digest) -> Report:
    """The digest as the report says it, in order."""
    session = digest.session
    name = f"session {session.id}" if session.id is not None else str(session.directory)
    sections = [
        _undestroyed(digest),
        _configuration(digest),
        _workers(digest),
        _running(digest),
        _pending(digest),
        _failed(digest),
        _succeeded(digest),
        _resources(digest),
        _cost(digest),
    ]
    return Report(
        title=f"cloudtask {printable(name)}",
        state=session.state,
        note=state_note(digest),
        facts=_facts(digest),
        sections=tuple(section for section in sections if section is not None),
        generated=digest.generated,
    )


# -- what is said in words -----------------------------------------------------------


def state_note(digest: Digest) -> str | None:
    """What the session's state means for the user, when it needs saying."""
    session = digest.session
    resume = "cloudtask --resume=" + (str(session.id) if session.id is not None else "ID")
    # A store older than the stop's record, whose options had both, does not tell which.
    halted_by = session.stop_reason or ("--halt or --budget" if digest.budget else "--halt")
    notes = {
        "interrupted": "its controller died while it ran; "
        f"{resume} runs the rest (and destroys what it left)",
        "incomplete": f"no worker was left to run every job; {resume} runs the rest",
        "halted": f"stopped by {halted_by}; {resume} runs the rest",
        "aborted": f"aborted; {resume} runs the rest",
        "running": "a controller is running it now: this is a snapshot",
        "starting": "a controller is starting it (reading its jobs)",
        "unstarted": "its controller stopped before running any job",
    }
    return notes.get(session.state)


def projection_text(digest: Digest) -> str | None:
    """The projection, while jobs are left and one can be made."""
    cost = digest.cost
    if cost is None or cost.projected is None or not _jobs_left(digest.counts):
        return None
    return f"{dollars(cost.projected)} when the jobs left are done at the present rate"


def budget_text(digest: Digest) -> str | None:
    """--budget against the cost: "budget $5.00; spent $3.23; ..."."""
    budget = digest.budget
    if budget is None:
        return None
    parts = [f"budget {dollars(budget.dollars)}", f"spent {dollars(budget.spent)}"]
    if budget.stopped:
        figure = "" if budget.projected is None else f" {dollars(budget.projected)}"
        parts.append(f"stopped when the projected cost{figure} passed it")
    elif budget.projected is not None and _jobs_left(digest.counts):
        parts.append(f"projected {dollars(budget.projected)}")
    elif _jobs_left(digest.counts) and digest.session.live:
        parts.append("no projection yet")
    return "; ".join(parts)


def undestroyed(digest: Digest) -> list[Instance]:
    return [i for worker in digest.workers for i in worker.instances if i.not_destroyed]


def _jobs_left(counts: Counts) -> int:
    return counts.pending + counts.running


def _more(shown: int, total: int, noun: str = "") -> str | None:
    """How many were left out: "... and 3 more", "... and 1 more worker"."""
    if total <= shown:
        return None
    left = total - shown
    return f"... and {plural(left, 'more ' + noun) if noun else f'{left} more'}"


def _price(price: float | None) -> str:
    return "?" if price is None else f"{price:g}"


# -- the sections --------------------------------------------------------------------


def _facts(digest: Digest) -> tuple[Fact, ...]:
    session = digest.session
    runs = f" over {plural(session.runs, 'run')}" if session.runs > 1 else ""
    return (
        Fact("command", printable(session.command or "-"), code=True, cut=COMMAND_SHOWN),
        Fact("started", clock(session.started)),
        Fact("ended", clock(session.ended)),
        Fact("elapsed", span(session.elapsed) + runs),
        Fact("jobs", counts_text(digest.counts)),
        Fact("directory", printable(str(session.directory)), code=True),
    )


def _undestroyed(digest: Digest) -> Section | None:
    leftover = undestroyed(digest)
    if not leftover:
        return None
    they = "it" if len(leftover) == 1 else "they"
    return Section(
        "undestroyed",
        f"WARNING: {plural(len(leftover), 'launched instance')} NOT DESTROYED "
        f"({they} may still be running, and billing)",
        lines=tuple(
            f"{printable(i.name)}  {printable(i.instance_id or '(no id: launch outcome unknown)')}"
            f"  {' '.join(filter(None, (i.provider, i.size)))}"
            f"  launched {clock(i.launched or i.intended)}"
            for i in leftover
        ),
        warning=True,
    )


def _configuration(digest: Digest) -> Section:
    rows = tuple((name, printable(value)) for name, value in digest.config)
    table = Table((Column("option"), Column("value", code=True)), rows, header=False)
    return Section("configuration", "configuration", table if rows else None, empty="defaults")


def _workers(digest: Digest) -> Section:
    workers, limit = digest.workers, digest.jobs.limit
    shown = workers if limit is None else workers[:limit]
    launched = any(worker.launched for worker in workers)
    slots = any(worker.slots > 1 for worker in workers)
    columns = [
        Column("worker"),
        Column("jobs", right=True),
        Column("ok", right=True),
        Column("not ok", right=True),
        Column("work", right=True),
        Column("lifetime", right=True),
        *([Column("slots", right=True)] if slots else []),
        Column("instance"),
        Column("size"),
        Column("$/hour"),
        Column("address"),
    ]
    if launched:  # what only launched workers have
        columns += [Column("efficiency", right=True), Column("destroyed")]
    rows = tuple(_worker_row(worker, launched, slots) for worker in shown)
    return Section(
        "workers",
        f"workers ({len(workers)})",
        Table(tuple(columns), rows) if rows else None,
        empty="none",
        more=_more(len(shown), len(workers), "worker"),
    )


def _worker_row(worker: Worker, launched: bool, slots: bool) -> tuple[str, ...]:
    """Its cells; `slots`: with its slots (some worker ran more than one job at once)."""
    instances = worker.instances
    row = (
        printable(worker.name),
        str(worker.attempts),
        str(worker.ok),
        str(worker.not_ok),
        span(worker.work_seconds),
        span(worker.lifetime),
        *([str(worker.slots)] if slots else []),
        ",".join(printable(i.instance_id or "?") for i in instances) or "-",
        ",".join(sorted({i.size or "?" for i in instances})) or "-",
        ",".join(sorted({_price(i.hourly_price) for i in instances})) or "-",
        ",".join(printable(i.address or "-") for i in instances) or "-",
    )
    if not launched:
        return row
    if not worker.launched:
        destroyed = "-"
    else:
        destroyed = Flagged("NOT DESTROYED") if worker.not_destroyed else "yes"
    return (*row, percent(worker.efficiency), destroyed)


def _command_column() -> Column:
    return Column("command", code=True, cut=TABLE_COMMAND_SHOWN)


def _running(digest: Digest) -> Section | None:
    counts, jobs, day = digest.counts, digest.jobs.running, digest.session.started
    if not counts.running:
        return None
    was = (
        " (were running when the controller died)" if digest.session.state == "interrupted" else ""
    )
    rows = tuple(
        (
            str(job.id),
            printable(job.last.worker) if job.last else "-",
            clock(job.last.started, day) if job.last else "-",
            printable(job.command),
        )
        for job in jobs
    )
    columns = (Column("job", right=True), Column("worker"), Column("since"), _command_column())
    return Section(
        "running",
        f"running jobs ({counts.running}){was}",
        Table(columns, rows) if rows else None,
        more=_more(len(jobs), counts.running),
    )


def _pending(digest: Digest) -> Section:
    counts, jobs = digest.counts, digest.jobs.pending
    rows = tuple((str(job.id), str(job.line), printable(job.command)) for job in jobs)
    columns = (Column("job", right=True), Column("line", right=True), _command_column())
    return Section(
        "pending",
        f"pending jobs ({counts.pending})",
        Table(columns, rows) if rows else None,
        more=_more(len(jobs), counts.pending),
    )


def _failed(digest: Digest) -> Section:
    counts, jobs = digest.counts, digest.jobs.not_ok
    return Section(
        "failed",
        f"failed jobs ({counts.not_ok}: {counts.failed} failed, {counts.timeout} timeout, "
        f"{counts.lost} lost)",
        entries=tuple(_failed_entry(job, digest.session.started) for job in jobs),
        more=_more(len(jobs), counts.not_ok),
    )


def _failed_entry(job: Job, day: float | None) -> Entry:
    last = job.last
    head = f"job {job.id} (line {job.line}): {job.state}, "
    if last is None:
        return Entry(head + "never run", job.state, printable(job.command), ())
    head += (
        f"{how_ended(last)} on {printable(last.worker)} at {clock(last.started, day)} "
        f"after {span(last.duration)} ({plural(len(job.attempts), 'attempt')})"
    )
    tail = last.tail.splitlines()[-TAIL_SHOWN:]
    return Entry(head, job.state, printable(job.command), tuple(map(printable, tail)))


def _succeeded(digest: Digest) -> Section:
    counts, jobs, day = digest.counts, digest.jobs.ok, digest.session.started
    rows = tuple(
        (
            str(job.id),
            printable(job.last.worker) if job.last else "-",
            clock(job.last.started, day) if job.last else "-",
            span(job.last.duration) if job.last else "-",
            printable(job.command),
        )
        for job in jobs
    )
    columns = (
        Column("job", right=True),
        Column("worker"),
        Column("started"),
        Column("time", right=True),
        _command_column(),
    )
    return Section(
        "succeeded",
        f"succeeded jobs ({counts.ok})",
        Table(columns, rows) if rows else None,
        more=_more(len(jobs), counts.ok),
    )


def _resources(digest: Digest) -> Section | None:
    """What the jobs used, and those that used the most; left out when nothing
    was measured (sessions from before cloudtask measured it)."""
    used = digest.resources
    if used is None:
        return None
    lines = []
    if unmeasured := used.measured - used.cpu_measured:
        lines.append(
            f"CPU and memory not measured for {plural(unmeasured, 'attempt')} "
            "(on workers without the agent)"
        )
    tables = (
        _most("most CPU", Column("CPU", right=True), used.most_cpu, span),
        _most("most memory", Column("peak memory", right=True), used.most_memory, _bytes),
    )
    return Section(
        "resources",
        "resources",
        Table((Column("total"), Column("used")), _use_totals(used), header=False),
        tables=tuple(table for table in tables if table.rows),
        lines=tuple(lines),
    )


def _use_totals(used: Resources) -> tuple[tuple[str, str], ...]:
    """CPU (when measured), the largest peak memory (and whose), output."""
    cpu = f"{span(used.cpu)} (user {span(used.user_cpu)}, system {span(used.system_cpu)})"
    whose = f" (job {used.most_memory[0].job})" if used.most_memory else ""
    output = size(used.output_bytes)
    if used.output_bytes >= 1024:
        output += f" ({used.output_bytes:,} bytes)"
    rows = (
        ("CPU", cpu) if used.cpu_measured else None,
        ("peak memory", size(used.max_rss) + whose) if used.max_rss is not None else None,
        ("output", output),
    )
    return tuple(row for row in rows if row is not None)


def _bytes(used: float) -> str:
    return size(int(used))


def _most(
    caption: str, column: Column, jobs: tuple[JobUse, ...], said: Callable[[float], str]
) -> Table:
    """The jobs that used the most of something, the most first."""
    rows = tuple((str(job.job), said(job.used), printable(job.command)) for job in jobs)
    return Table((Column("job", right=True), column, _command_column()), rows, caption=caption)


def _cost(digest: Digest) -> Section | None:
    cost, budget = digest.cost, budget_text(digest)
    title = "cost of launched workers"
    if cost is None:  # none launched: only a budget to show, if any
        if budget is None:
            return None
        return Section("cost", title, empty="none launched", lines=(budget,))
    columns = (
        Column("instance"),
        Column("worker"),
        Column("provider"),
        Column("size"),
        Column("hours", right=True),
        Column("$/hour", right=True),
        Column("cost", right=True),
        Column("destroyed"),
    )
    rows = tuple(_instance_row(worker, i) for worker in digest.workers for i in worker.instances)
    total = dollars(cost.total)
    if cost.unpriced:
        total += f" (without {plural(cost.unpriced, 'instance')} of unknown price)"
    lines = [f"total: {total} for {cost.instance_hours:.4f} instance hours"]
    if cost.slot_seconds == cost.instance_seconds:  # one job at a time on each
        lines.append(
            f"work: {cost.work_hours:.4f} hours; efficiency (work / instance hours): "
            f"{percent(cost.efficiency)}"
        )
    else:
        lines.append(
            f"work: {cost.work_hours:.4f} hours of {cost.slot_hours:.4f} slot hours "
            f"(instance hours x slots); efficiency (work / slot hours): "
            f"{percent(cost.efficiency)}"
        )
    if projected := projection_text(digest):
        lines.append(f"projected: {projected}")
    if budget is not None:
        lines.append(budget)
    return Section("cost", title, Table(columns, rows), lines=tuple(lines))


def _instance_row(worker: Worker, i: Instance) -> tuple[str, ...]:
    return (
        printable(i.instance_id or "?"),
        printable(worker.name),
        printable(i.provider),
        printable(i.size or "?"),
        f"{i.hours:.4f}",
        _price(i.hourly_price),
        dollars(i.cost),
        Flagged("NOT DESTROYED: counted to now") if i.not_destroyed else "yes",
    )
