"""The digest for people as text: a terminal page, and the body of the mail report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..console import plural
from ..output import printable
from .formats import clock, counts_text, dollars, how_ended, percent, shorten, span
from .model import Counts, Digest, Instance, Job

TAIL_SHOWN = 10  # last lines of output shown with a job that is not ok


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


def _table(rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> list[str]:
    aligned = set(right)
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            cell.rjust(width) if c in aligned else cell.ljust(width)
            for c, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _more(shown: int, total: int, noun: str = "") -> list[str]:
    """The line that says how many were left out: "... and 3 more", "... and 1 more worker"."""
    if total <= shown:
        return []
    left = total - shown
    return [f"  ... and {plural(left, 'more ' + noun) if noun else f'{left} more'}"]


WORKER_COLUMNS = (
    "worker",
    "jobs",
    "ok",
    "not ok",
    "work",
    "lifetime",
    "instance",
    "size",
    "$/hour",
    "address",
    "",
)


def undestroyed(digest: Digest) -> list[Instance]:
    return [i for worker in digest.workers for i in worker.instances if i.not_destroyed]


def to_text(digest: Digest) -> str:
    """The digest for people: a terminal page, and the body of the mail report."""
    session, counts = digest.session, digest.counts
    limit = digest.jobs.limit
    day = session.started  # times on the session's first day are shown as times of day
    title = f"session {session.id}" if session.id is not None else str(session.directory)
    out = [f"cloudtask {printable(title)}: {session.state}"]
    if note := state_note(digest):
        out.append(f"  ({note})")
    out += [
        f"  command:   {shorten(session.command or '-')}",
        f"  started:   {clock(session.started)}",
        f"  ended:     {clock(session.ended)}",
        f"  elapsed:   {span(session.elapsed)}"
        + (f" over {plural(session.runs, 'run')}" if session.runs > 1 else ""),
        f"  jobs:      {counts_text(counts)}",
        f"  directory: {printable(str(session.directory))}",
    ]
    if leftover := undestroyed(digest):
        out += [
            "",
            f"WARNING: {plural(len(leftover), 'launched instance')} NOT DESTROYED "
            "(it may still be running, and billing):",
        ]
        out += [
            f"  {printable(i.name)}  {printable(i.instance_id or '(no id: outcome unknown)')}"
            f"  {i.provider} {i.size or ''}  launched {clock(i.launched or i.intended)}"
            for i in leftover
        ]

    out += ["", "configuration:"]
    if digest.config:
        out += _table([(name, printable(value)) for name, value in digest.config])
    else:
        out.append("  (defaults)")

    out += ["", f"workers ({len(digest.workers)}):"]
    shown_workers = digest.workers if limit is None else digest.workers[:limit]
    if digest.workers:
        rows: list[Sequence[str]] = [WORKER_COLUMNS]
        for worker in shown_workers:
            instances = worker.instances
            rows.append(
                (
                    printable(worker.name),
                    str(worker.attempts),
                    str(worker.ok),
                    str(worker.not_ok),
                    span(worker.work_seconds),
                    span(worker.lifetime),
                    ",".join(printable(i.instance_id or "?") for i in instances) or "-",
                    ",".join(sorted({i.size or "?" for i in instances})) or "-",
                    ",".join(sorted({_price(i.hourly_price) for i in instances})) or "-",
                    ",".join(printable(i.address or "-") for i in instances) or "-",
                    "NOT DESTROYED" if worker.not_destroyed else "",
                )
            )
        out += _table(rows, right=(1, 2, 3, 4, 5))
        out += _more(len(shown_workers), len(digest.workers), "worker")
    else:
        out.append("  (none)")

    jobs = digest.jobs
    if counts.running:
        was = " (were running when the controller died)" if session.state == "interrupted" else ""
        out += ["", f"running jobs ({counts.running}){was}:"]
        for job in jobs.running:
            last = job.last
            where = f" on {printable(last.worker)} since {clock(last.started, day)}" if last else ""
            out.append(f"  job {job.id}{where}: {shorten(job.command)}")
        out += _more(len(jobs.running), counts.running)

    out += ["", f"pending jobs ({counts.pending}):"]
    out += [f"  job {job.id}: {shorten(job.command)}" for job in jobs.pending]
    out += _more(len(jobs.pending), counts.pending)

    out += [
        "",
        f"failed jobs ({counts.not_ok}: {counts.failed} failed, {counts.timeout} timeout, "
        f"{counts.lost} lost):",
    ]
    for job in jobs.not_ok:
        out += _failed_job(job, day)
    out += _more(len(jobs.not_ok), counts.not_ok)

    out += ["", f"succeeded jobs ({counts.ok}):"]
    if jobs.ok:
        done: list[Sequence[str]] = [("job", "worker", "started", "time", "command")]
        for job in jobs.ok:
            last = job.last
            done.append(
                (
                    str(job.id),
                    printable(last.worker) if last else "-",
                    clock(last.started, day) if last else "-",
                    span(last.duration) if last else "-",
                    shorten(job.command, 100),
                )
            )
        out += _table(done, right=(0, 3))
    out += _more(len(jobs.ok), counts.ok)

    if digest.cost is not None or digest.budget is not None:
        out += ["", *_cost_text(digest)]
    return "\n".join(out) + "\n"


def _price(price: float | None) -> str:
    return "?" if price is None else f"{price:g}"


def _failed_job(job: Job, day: float | None) -> list[str]:
    last = job.last
    if last is None:
        return [f"  job {job.id} (line {job.line}): {job.state}, never run: {shorten(job.command)}"]
    lines = [
        f"  job {job.id} (line {job.line}): {job.state}, {how_ended(last)} on "
        f"{printable(last.worker)} at {clock(last.started, day)} after {span(last.duration)} "
        f"({plural(len(job.attempts), 'attempt')})",
        f"    $ {shorten(job.command)}",
    ]
    tail = last.tail.splitlines()[-TAIL_SHOWN:]
    lines += [f"    | {printable(line)}" for line in tail]
    return lines


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


def _jobs_left(counts: Counts) -> int:
    return counts.pending + counts.running


def _cost_text(digest: Digest) -> list[str]:
    cost = digest.cost
    out = ["cost of launched workers:"]
    if cost is None:
        return [*out, "  (none launched)", f"  {budget_text(digest)}"]
    rows = [("instance", "worker", "provider", "size", "hours", "$/hour", "cost", "")]
    for worker in digest.workers:
        for i in worker.instances:
            rows.append(
                (
                    printable(i.instance_id or "?"),
                    printable(worker.name),
                    i.provider,
                    i.size or "?",
                    f"{i.hours:.4f}",
                    _price(i.hourly_price),
                    dollars(i.cost),
                    "NOT DESTROYED: counted to now" if i.not_destroyed else "",
                )
            )
    out += _table(rows, right=(4, 5, 6))
    total = dollars(cost.total)
    if cost.unpriced:
        total += f" (without {plural(cost.unpriced, 'instance')} of unknown price)"
    out += [
        f"  total: {total} for {cost.instance_hours:.4f} instance hours",
        f"  work: {cost.work_hours:.4f} hours; efficiency (work / instance hours): "
        f"{percent(cost.efficiency)}",
    ]
    if projected := projection_text(digest):
        out.append(f"  projected: {projected}")
    if budget := budget_text(digest):
        out.append(f"  {budget}")
    return out
