"""The session digest (report/digest.py) of real and crafted sessions."""

from __future__ import annotations

import fcntl
import io
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support.helpers import sessions_dir
from tests.support.report_stores import (
    JOB,
    LONG_COMMAND,
    MIB,
    ONE_IN_THE_PLURAL,
    T0,
    attempt,
    big_session,
    free_lock,
    halted_session,
    launched_session,
    new_store,
    real_session,
    used_session,
    validate,
)

from cloudtask.report import digest as d
from cloudtask.report.html import html
from cloudtask.scheduler import JobState
from cloudtask.session import SessionDir
from cloudtask.store import Store
from cloudtask.store import meta as keys
from cloudtask.store import schema as store_schema
from cloudtask.store.reader import StoreReader

# -- a real session, run by the cloudtask command --------------------------------------


def test_a_real_session_is_counted_and_described() -> None:
    path = real_session("0", "1", "0", "2")
    digest = d.load(path)

    assert digest.session.state == "finished"
    assert digest.session.live is False
    assert digest.session.id == int(path.name)
    assert digest.session.runs == 1
    assert digest.session.command is not None and "exit $1" in digest.session.command
    assert digest.session.started is not None and digest.session.ended is not None
    assert digest.session.elapsed == digest.session.ended - digest.session.started
    assert digest.counts == d.Counts(ok=2, failed=2)
    assert dict(digest.config)["split"] == "2"
    assert [w.name for w in digest.workers] == ["local1", "local2"]
    assert sum(w.attempts for w in digest.workers) == 4
    assert sum(w.ok for w in digest.workers) == 2
    assert sum(w.failed for w in digest.workers) == 2
    assert all(not w.launched and w.lifetime is not None for w in digest.workers)
    assert digest.cost is None
    assert [j.id for j in digest.jobs.not_ok] == [2, 4]
    assert [j.id for j in digest.jobs.ok] == [1, 3]
    failed = digest.jobs.not_ok[0]
    assert failed.last is not None
    assert (failed.last.outcome, failed.last.exit_status) == ("failed", 1)
    assert "out 1" in failed.last.tail

    text = d.to_text(digest)
    assert f"cloudtask session {path.name}: finished" in text
    assert "4 jobs: 2 ok, 2 failed, 0 timeout, 0 lost, 0 pending, 0 running" in text
    assert "failed jobs (2: 2 failed, 0 timeout, 0 lost):" in text
    assert "exit 2 on local" in text
    assert "| out 2" in text  # the last lines of its output
    assert "succeeded jobs (2):" in text
    assert "pending jobs (0):" in text
    assert "NOT DESTROYED" not in text
    assert "cost of launched workers" not in text

    data = d.to_json(digest)
    validate(data)
    assert data["counts"] == {
        "total": 4,
        "pending": 0,
        "running": 0,
        "ok": 2,
        "failed": 2,
        "timeout": 0,
        "lost": 0,
    }
    assert [job["id"] for job in data["jobs"]] == [1, 2, 3, 4]
    assert data["jobs"][1]["attempts"][0]["exit_status"] == 1
    assert data["session"]["started"].endswith("Z")
    assert data["jobs_listed"] == {"limit": d.DEFAULT_LIMIT, "complete": True}


def test_a_one_job_session_says_1_job() -> None:
    text = d.to_text(d.load(real_session("0", split=1)))

    assert "  jobs:      1 job: 1 ok, 0 failed, 0 timeout, 0 lost, 0 pending, 0 running\n" in text
    assert not ONE_IN_THE_PLURAL.search(text), text


def three_workers() -> Path:
    path, store = new_store(jobs=3)
    store.begin_run(T0)
    for n in (1, 2, 3):
        attempt(store, n, f"w{n}", n, n + 1, "ok", JobState.OK, 0)
    store.end_run(T0 + 10, "finished")
    store.close()
    return path


def test_workers_left_out_of_the_table_are_counted_in_the_singular_and_plural() -> None:
    path = three_workers()

    assert "  ... and 1 more worker\n" in d.to_text(d.load(path, limit=2))
    assert "  ... and 2 more workers\n" in d.to_text(d.load(path, limit=1))
    # Jobs left out are counted under their own heading, with no noun.
    assert "succeeded jobs (3):\n" in d.to_text(d.load(path, limit=2))
    assert "  ... and 1 more\n" in d.to_text(d.load(path, limit=2))


def test_loading_leaves_the_store_as_it_was() -> None:
    path = real_session("0", "1")
    with StoreReader.open(path) as store:
        before = store.jobs()
    d.load(path, timeline=True)
    # A reader never writes: the rows are the same, and no lock was taken (a
    # controller could take it right now).
    with StoreReader.open(path) as store:
        assert store.jobs() == before
    fd = os.open(path / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


# -- launched workers: cost and efficiency ------------------------------------------------


def test_cost_and_efficiency_of_launched_workers_are_exact() -> None:
    digest = d.load(launched_session())

    hub1, hub2 = digest.workers
    assert (hub1.name, hub2.name) == ("hub1", "hub2")
    assert hub1.launched and hub2.launched
    assert hub1.work_seconds == 1350.0
    assert hub1.lifetime == 1800.0
    assert hub1.efficiency == 0.75
    assert hub2.work_seconds == 2700.0
    assert hub2.lifetime == 3600.0
    assert hub2.efficiency == 0.75
    (i1,), (i2,) = hub1.instances, hub2.instances
    assert (i1.instance_id, i1.size, i1.hourly_price, i1.address) == (
        "i-0001",
        "t3.small",
        0.0208,
        "10.0.0.1",
    )
    assert i1.hours == 0.5 and i1.cost == 0.5 * 0.0208
    assert i2.hours == 1.0 and i2.cost == 0.096
    assert not i1.not_destroyed and not i2.not_destroyed

    cost = digest.cost
    assert cost is not None
    assert cost.instances == 2
    assert cost.instance_hours == 1.5
    assert cost.work_hours == 1.125
    assert cost.efficiency == 0.75
    assert cost.total == 0.5 * 0.0208 + 0.096
    assert cost.unpriced == 0

    assert digest.session.state == "incomplete"
    assert digest.counts == d.Counts(pending=1, ok=2, failed=1, timeout=1)

    text = d.to_text(digest)
    assert "cost of launched workers:" in text
    assert "total: $0.1064 for 1.5000 instance hours" in text
    assert "efficiency (work / instance hours): 75.0%" in text
    assert "i-0001" in text and "t3.small" in text and "10.0.0.1" in text
    assert "timed out on hub2" in text
    assert "| boom" in text
    assert "cloudtask --resume=" in text  # an incomplete session says how to go on

    data = d.to_json(digest)
    validate(data)
    assert data["cost"] == {
        "instances": 2,
        "instance_hours": 1.5,
        "slot_hours": 1.5,
        "work_hours": 1.125,
        "efficiency": 0.75,
        "total": 0.5 * 0.0208 + 0.096,
        "unpriced": 0,
        # A job is left and no instance is alive: the batch does not end at this rate.
        "projected": None,
    }
    assert data["budget"] is None
    worker = data["workers"][0]
    assert worker["instances"][0]["instance_id"] == "i-0001"
    assert worker["instances"][0]["launched"] == "2027-01-15T08:00:00.000Z"
    assert worker["instances"][0]["cost"] == 0.5 * 0.0208
    assert worker["efficiency"] == 0.75
    assert worker["not_destroyed"] is False


def test_efficiency_counts_slot_time_a_4_slot_worker_has_4_times_the_room() -> None:
    digest = d.load(launched_session(slots={"hub2": 4}))

    hub1, hub2 = digest.workers
    assert (hub1.slots, hub1.capacity, hub1.efficiency) == (1, 1800.0, 0.75)
    # 2700 s of work in an hour of 4 slots: 14400 slot-seconds.
    assert (hub2.slots, hub2.capacity, hub2.efficiency) == (4, 14400.0, 0.1875)
    cost = digest.cost
    assert cost is not None
    assert (cost.instance_hours, cost.slot_hours, cost.work_hours) == (1.5, 4.5, 1.125)
    assert cost.efficiency == 0.25

    text = d.to_text(digest)
    assert (
        "  work: 1.1250 hours of 4.5000 slot hours (instance hours x slots); "
        "efficiency (work / slot hours): 25.0%\n"
    ) in text
    (head, first, second) = text.split("workers (2):\n")[1].splitlines()[:3]
    assert " lifetime  slots  instance " in head
    assert first.startswith("  hub1 ") and " 30 min 00 s      1  i-0001 " in first
    assert first.endswith("75.0%  yes")
    assert " 1 h 00 min      4  i-0002 " in second and second.endswith("18.8%  yes")

    page = html(digest, None)
    workers = page.split("Workers (2)")[1].split("</table>")[0]
    assert "<th>lifetime</th><th>slots</th><th>instance</th>" in workers
    assert '<td class="n">4</td>' in workers and "18.8%" in workers
    assert "efficiency (work / slot hours): 25.0%</p>" in page

    data = d.to_json(digest)
    validate(data)
    assert [(w["slots"], w["efficiency"]) for w in data["workers"]] == [(1, 0.75), (4, 0.1875)]
    assert (data["cost"]["slot_hours"], data["cost"]["efficiency"]) == (4.5, 0.25)


def test_an_undestroyed_instance_is_flagged_and_costs_until_now() -> None:
    path, store = new_store(jobs=1)
    store.begin_run(T0)
    store.intend_instance("tok", "ec2", "ec2-1", "t3.small", 0.0208, T0)
    store.instance_launched("tok", "i-left", T0)
    attempt(store, 1, "ec2-1", 10, 20, "ok", JobState.OK, 0)
    store.intend_instance("tok2", "ec2", "ec2-2", "x9.huge", None, T0)  # no price known
    store.instance_launched("tok2", "i-gone", T0)
    store.instance_destroyed("tok2", T0 + 3600)
    store.end_run(T0 + 100, "finished")
    store.close()

    digest = d.load(path, now=T0 + 7200)
    left = digest.workers[0]
    assert left.name == "ec2-1"
    assert left.not_destroyed
    assert left.instances[0].hours == 2.0  # launched to now
    assert left.lifetime == 7200.0
    assert [i.instance_id for i in d.undestroyed(digest)] == ["i-left"]
    cost = digest.cost
    assert cost is not None
    # The unpriced instance is counted in hours, not in dollars.
    assert cost.total == 2.0 * 0.0208
    assert cost.unpriced == 1
    assert cost.instance_hours == 3.0

    text = d.to_text(digest)
    assert "WARNING: 1 launched instance NOT DESTROYED" in text
    assert "i-left" in text
    table = text.split("workers (2):\n")[1]
    worker_line = next(line for line in table.splitlines() if line.startswith("  ec2-1 "))
    assert worker_line.endswith("NOT DESTROYED")
    assert "without 1 instance of unknown price" in text

    data = d.to_json(digest)
    validate(data)
    assert data["workers"][0]["not_destroyed"] is True
    assert data["workers"][0]["instances"][0]["destroyed"] is None
    assert data["workers"][1]["instances"][0]["cost"] is None


# -- what the jobs used: the resources section --------------------------------------------


def test_what_the_jobs_used_is_totalled_with_the_jobs_that_used_most() -> None:
    digest = d.load(used_session())

    used = digest.resources
    assert used is not None
    assert (used.measured, used.cpu_measured) == (5, 4)
    assert (used.user_cpu, used.system_cpu, used.cpu) == (13.75, 3.0, 16.75)
    assert (used.max_rss, used.output_bytes) == (512 * MIB, 3_148_900)
    assert [(j.job, j.used) for j in used.most_cpu] == [(2, 12.0), (1, 4.5), (4, 0.25)]
    assert [(j.job, j.used) for j in used.most_memory] == [(2, 512 * MIB), (1, 96 * MIB), (4, MIB)]

    text = d.to_text(digest)
    section = text.split("\nresources:\n")[1]
    shown = LONG_COMMAND[:97] + "..."  # cut as the other tables cut a command
    assert section.startswith(
        "  CPU          17 s (user 14 s, system 3.00 s)\n"
        "  peak memory  512.0 MiB (job 2)\n"
        "  output       3.0 MiB (3,148,900 bytes)\n"
        "  most CPU:\n"
        "    job     CPU  command\n"
        f"      2    12 s  {shown}\n"
        f"      1  4.50 s  {JOB} 1\n"
        f"      4  0.25 s  {JOB} 4\n"
        "  most memory:\n"
        "    job  peak memory  command\n"
        f"      2    512.0 MiB  {shown}\n"
        f"      1     96.0 MiB  {JOB} 1\n"
        f"      4      1.0 MiB  {JOB} 4\n"
        "  CPU and memory not measured for 1 attempt (on workers without the agent)\n"
    )

    page = html(digest, None)
    resources = page.split('<h2 id="resources">Resources</h2>')[1]
    assert "<tr><td>CPU</td><td>17 s (user 14 s, system 3.00 s)</td></tr>" in resources
    assert "<tr><td>output</td><td>3.0 MiB (3,148,900 bytes)</td></tr>" in resources
    most_cpu = resources.split("<caption>most CPU</caption>")[1].split("</table>")[0]
    assert '<tr><td class="n">2</td><td class="n">12 s</td><td><code>render --scene=' in most_cpu
    assert LONG_COMMAND in most_cpu  # a page wraps it whole
    most_memory = resources.split("<caption>most memory</caption>")[1].split("</table>")[0]
    assert '<td class="n">96.0 MiB</td>' in most_memory
    assert "<p>CPU and memory not measured for 1 attempt" in resources

    data = d.to_json(digest)
    validate(data)
    totals = data["resources"]
    assert (totals["cpu_seconds"], totals["user_cpu_seconds"], totals["system_cpu_seconds"]) == (
        16.75,
        13.75,
        3.0,
    )
    assert (totals["max_rss_bytes"], totals["output_bytes"]) == (512 * MIB, 3_148_900)
    assert [(j["job"], j["cpu_seconds"]) for j in totals["most_cpu"]] == [
        (2, 12.0),
        (1, 4.5),
        (4, 0.25),
    ]
    assert totals["most_memory"][0] == {
        "job": 2,
        "max_rss_bytes": 512 * MIB,
        "command": LONG_COMMAND,
    }
    first, second = (a["usage"] for a in data["jobs"][0]["attempts"])
    assert first == {
        "user_cpu_seconds": 1.5,
        "system_cpu_seconds": 0.5,
        "max_rss_bytes": 64 * MIB,
        "wall_seconds": 2.0,
        "output_bytes": 2048,
    }
    assert second["max_rss_bytes"] == 96 * MIB
    # A worker without the agent: its bytes, and the wall time the store keeps.
    assert data["jobs"][2]["attempts"][0]["usage"] == {
        "user_cpu_seconds": None,
        "system_cpu_seconds": None,
        "max_rss_bytes": None,
        "wall_seconds": 1.0,
        "output_bytes": 100,
    }


def version_2_session() -> Path:
    """A session as cloudtask 2 left it (no usage columns, no workers table), made with SQL."""
    path = SessionDir.create(sessions_dir()).path
    db = sqlite3.connect(path / "store.sqlite")
    db.executescript(store_schema.SCHEMA + store_schema.MIGRATIONS[1])
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("schema_version", "2"), ("state", "finished"), ("started", str(T0))],
    )
    db.execute("INSERT INTO jobs VALUES (1, 1, 'echo 1', 'ok', 1)")
    db.execute(
        "INSERT INTO attempts (job, worker, started, ended, outcome, exit_status, tail) "
        f"VALUES (1, 'local1', {T0}, {T0 + 2}, 'ok', 0, '1')"
    )
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("made", [version_2_session, launched_session])
def test_a_session_with_nothing_measured_has_no_resources_section(made: Callable[[], Path]) -> None:
    digest = d.load(made())

    assert digest.resources is None
    assert all(w.slots == 1 for w in digest.workers)
    assert "resources" not in d.to_text(digest)
    assert 'id="resources"' not in html(digest, None)
    data = d.to_json(digest)
    validate(data)
    assert data["resources"] is None
    usage = data["jobs"][0]["attempts"][0]["usage"]
    assert usage["user_cpu_seconds"] is usage["max_rss_bytes"] is usage["output_bytes"] is None
    assert usage["wall_seconds"] == data["jobs"][0]["attempts"][0]["duration_seconds"]


# -- why a session stopped, and --budget ---------------------------------------------------


def test_a_budget_stop_says_so_with_the_budget_the_cost_and_the_figure_it_stopped_on() -> None:
    path = halted_session("--budget=$5", {"budget": "5.0"}, figure=7306.97)

    digest = d.load(path)

    assert digest.session.state == "halted"
    assert digest.session.stop_reason == "--budget=$5"
    assert digest.budget == d.Budget(dollars=5.0, spent=2.0, projected=7306.97, stopped=True)
    assert digest.cost is not None and digest.cost.total == 2.0
    assert digest.cost.projected is None  # stopped with jobs left: no projection now
    text = d.to_text(digest)
    assert f"(stopped by --budget=$5; cloudtask --resume={path.name} runs the rest)" in text
    assert "--halt" not in text
    assert "  budget $5.00; spent $2.00; stopped when the projected cost $7,306.97 passed it\n" in (
        text
    )
    data = d.to_json(digest)
    validate(data)
    assert data["session"]["stop_reason"] == "--budget=$5"
    assert data["budget"] == {"dollars": 5.0, "spent": 2.0, "projected": 7306.97, "stopped": True}
    assert data["cost"]["projected"] is None
    page = html(digest, None)
    assert "stopped by --budget=$5;" in page
    assert "stopped when the projected cost $7,306.97 passed it" in page


def test_a_halt_stop_names_its_spec_and_the_budget_beside_it_did_not_stop_it() -> None:
    path = halted_session("--halt=fail=1", {"halt": "fail=1", "budget": "5.0"})

    digest = d.load(path)

    assert digest.session.stop_reason == "--halt=fail=1"
    assert digest.budget == d.Budget(dollars=5.0, spent=2.0, projected=None, stopped=False)
    text = d.to_text(digest)
    assert "(stopped by --halt=fail=1; " in text
    assert "  budget $5.00; spent $2.00\n" in text
    data = d.to_json(digest)
    validate(data)
    assert data["budget"]["stopped"] is False
    assert "stopped by --halt=fail=1;" in html(digest, None)


@pytest.mark.parametrize(
    ("config", "reason", "said"),
    [
        ({"budget": "5.0"}, "--budget=$5", "stopped by --budget=$5;"),
        ({"halt": "fail=10%"}, "--halt=fail=10%", "stopped by --halt=fail=10%;"),
        ({"halt": "fail=1", "budget": "5.0"}, None, "stopped by --halt or --budget;"),
        ({}, None, "stopped by --halt;"),  # the wording from before the reason was kept
    ],
)
def test_a_store_older_than_the_stop_reason_still_reads(
    config: dict[str, str], reason: str | None, said: str
) -> None:
    path = halted_session(None, config)

    digest = d.load(path)

    assert digest.session.stop_reason == reason
    assert said in d.to_text(digest)
    data = d.to_json(digest)
    validate(data)
    assert data["session"]["stop_reason"] == reason
    if digest.budget is not None:
        # Only --budget could have halted it, but the figure it stopped on was not kept.
        stopped = reason is not None and reason.startswith("--budget")
        assert digest.budget == d.Budget(5.0, 2.0, None, stopped)


def live_launched_session(jobs_done: int) -> Path:
    """A first run that a controller drives now: hub1 ($4/h) alive since T0,
    `jobs_done` of 4 jobs ended by T0+1800 s; --budget=$5."""
    path, store = new_store(config={"split": "1", "provider": "hub", "budget": "5.0"}, jobs=4)
    store.begin_run(T0)
    store.intend_instance("tok1", "hub", "hub1", "t3.small", 4.0, T0)
    store.instance_launched("tok1", "i-0001", T0)
    for job in range(1, jobs_done + 1):
        attempt(store, job, "hub1", 900 * (job - 1), 900 * job, "ok", JobState.OK, 0)
    store.close()
    return path


def held(path: Path) -> int:
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live controller holds it
    return fd


def test_a_live_session_is_projected_as_the_live_view_and_the_budget_reckon_it() -> None:
    path = live_launched_session(jobs_done=2)
    fd = held(path)
    try:
        digest = d.load(path, now=T0 + 3600)
    finally:
        os.close(fd)

    # An hour at $4 so far; 2 jobs done in that hour, 2 left: an hour more.
    assert digest.session.state == "running"
    assert digest.cost is not None
    assert (digest.cost.total, digest.cost.projected) == (4.0, 8.0)
    assert digest.budget == d.Budget(dollars=5.0, spent=4.0, projected=8.0, stopped=False)
    text = d.to_text(digest)
    assert "  projected: $8.00 when the jobs left are done at the present rate\n" in text
    assert "  budget $5.00; spent $4.00; projected $8.00\n" in text
    validate(d.to_json(digest))


def test_before_any_job_ends_the_cost_so_far_is_not_shown_as_projected() -> None:
    path = live_launched_session(jobs_done=0)
    fd = held(path)
    try:
        digest = d.load(path, now=T0 + 900)
    finally:
        os.close(fd)

    assert digest.cost is not None
    assert (digest.cost.total, digest.cost.projected) == (1.0, None)
    text = d.to_text(digest)
    assert "projected:" not in text
    assert "  budget $5.00; spent $1.00; no projection yet\n" in text
    data = d.to_json(digest)
    validate(data)
    assert data["cost"]["projected"] is None
    assert data["budget"]["projected"] is None


# -- controllers: killed, and running -------------------------------------------------------


def killed_session() -> Path:
    """A controller killed with SIGKILL mid-run: state running, one attempt open."""
    path, store = new_store(config={"split": "2"}, jobs=3)
    store.begin_run(T0)
    attempt(store, 1, "local1", 1, 3, "ok", JobState.OK, 0, "done")
    store.start_attempt(2, "local2", T0 + 2)  # never ended
    store.close()
    free_lock(path)
    return path


def test_a_killed_controller_shows_interrupted_and_an_unknown_duration() -> None:
    path = killed_session()
    digest = d.load(path)

    assert digest.session.stored_state == "running"
    assert digest.session.state == "interrupted"
    assert digest.session.live is False
    assert digest.session.ended is None
    assert digest.session.elapsed == 3.0  # to the last thing known to have happened
    assert digest.counts == d.Counts(pending=1, running=1, ok=1)
    local2 = digest.workers[1]
    assert (local2.name, local2.attempts, local2.lost, local2.unknown_end) == ("local2", 1, 1, 1)
    assert local2.work_seconds == 0.0  # an attempt of unknown end adds no work time
    running = digest.jobs.running[0]
    assert running.last is not None
    assert (running.last.outcome, running.last.ended, running.last.duration) == ("lost", None, None)

    text = d.to_text(digest)
    assert "interrupted" in text
    assert "controller died" in text
    assert "running jobs (1) (were running when the controller died):" in text
    data = d.to_json(digest)
    validate(data)
    assert data["session"]["state"] == "interrupted"
    job = next(job for job in data["jobs"] if job["id"] == 2)
    assert job["attempts"][0]["ended"] is None
    assert job["attempts"][0]["duration_seconds"] is None
    assert job["attempts"][0]["outcome"] == "lost"


def test_an_attempt_the_resume_marked_lost_has_no_end_and_no_crash() -> None:
    path = killed_session()
    store = Store.open(path)
    store.reset([JobState.RUNNING, JobState.LOST])  # what --resume does first
    store.close()
    digest = d.load(path, timeline=True)
    assert digest.counts == d.Counts(pending=2, ok=1)
    lost = next(j for j in digest.jobs.pending if j.id == 2)
    assert lost.last is not None and lost.last.outcome == "lost" and lost.last.ended is None
    assert "lost" in d.to_text(digest)
    validate(d.to_json(digest))


def test_a_held_lock_means_running_and_open_attempts_run() -> None:
    path = killed_session()
    fd = os.open(path / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live controller holds it
    try:
        digest = d.load(path, now=T0 + 10)
    finally:
        os.close(fd)
    assert digest.session.state == "running"
    assert digest.session.live is True
    assert digest.session.elapsed == 10.0  # to now
    local2 = digest.workers[1]
    assert (local2.running, local2.lost) == (1, 0)
    job = digest.jobs.running[0]
    assert job.last is not None and job.last.outcome == "running"
    assert "a controller is running it now" in d.to_text(digest)
    validate(d.to_json(digest))
    # Released: a dead controller again.
    assert d.load(path).session.state == "interrupted"


def test_a_session_that_never_began_a_run() -> None:
    path, store = new_store(jobs=2)
    store.close()
    assert d.load(path).session.state == "unstarted"


# -- what is never shown, and bad stores ------------------------------------------------------


def test_a_secret_in_an_old_store_is_never_shown() -> None:
    path, store = new_store(config={"split": "2", "hub-apikey": "s3cr3t-key", "user": "me"})
    store.close()
    digest = d.load(path)
    assert dict(digest.config) == {"split": "2", "user": "me"}
    assert "s3cr3t" not in d.to_text(digest)
    assert "s3cr3t" not in json.dumps(d.to_json(digest))


def test_bad_session_directories_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(d.DigestError, match="no such session directory"):
        d.load(tmp_path / "nowhere")
    with pytest.raises(d.DigestError, match=r"not a session directory \(no store.sqlite\)"):
        d.load(tmp_path)

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "store.sqlite").write_bytes(b"this is not SQLite at all" * 100)
    with pytest.raises(d.DigestError, match="not a readable session store"):
        d.load(garbage)

    other = tmp_path / "other"
    other.mkdir()
    # Some other SQLite file, which only SQL can make.
    sqlite3.connect(other / "store.sqlite").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(d.DigestError, match="not a cloudtask session store"):
        d.load(other)

    path, store = new_store()
    store.write(keys.SCHEMA_VERSION, 99)
    store.close()
    with pytest.raises(d.DigestError, match="schema version 99"):
        d.load(path)


# -- big sessions ----------------------------------------------------------------------------


def test_a_100000_job_session_gives_a_bounded_digest() -> None:
    path = big_session(100_000)
    digest = d.load(path)

    assert digest.counts == d.Counts(pending=1000, ok=89_100, failed=9_900)
    assert sum(w.attempts for w in digest.workers) == 99_000
    assert len(digest.jobs.ok) == len(digest.jobs.not_ok) == len(digest.jobs.pending) == 50
    assert [j.id for j in digest.jobs.not_ok[:3]] == [10, 20, 30]
    assert digest.jobs.pending[0].id == 99_001

    text = d.to_text(digest)
    assert len(text.splitlines()) < 600
    assert len(text) < 60_000
    assert "  ... and 89050 more" in text
    assert "  ... and 9850 more" in text
    assert "  ... and 950 more" in text

    data = d.to_json(digest)
    validate(data)
    assert len(data["jobs"]) == 150
    assert data["jobs_listed"] == {"limit": 50, "complete": False}


def test_every_job_streams_in_id_order_with_its_attempts() -> None:
    path = big_session(1500)
    digest = d.load(path, limit=0)
    assert digest.jobs.all() == []

    seen = 0
    for number, job in enumerate(d.iter_jobs(digest), start=1):
        assert job.id == number
        assert len(job.attempts) == (1 if number <= 500 else 0)
        seen += 1
    assert seen == 1500

    out = io.StringIO()
    d.write_json(digest, out, d.iter_jobs(digest))
    data = json.loads(out.getvalue())
    validate(data)
    assert [job["id"] for job in data["jobs"]] == list(range(1, 1501))
    assert data["jobs"][9]["state"] == "failed"
    assert data["jobs"][9]["attempts"][0]["tail"] == "output of job 10"
    assert data["jobs_listed"] == {"limit": None, "complete": True}

    every = d.load(path, limit=None)
    assert len(every.jobs.all()) == 1500
    assert every.jobs.all()[9] == next(j for j in d.iter_jobs(digest) if j.id == 10)


# -- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0.004, "0.00 s"),
        (9.5, "9.50 s"),
        (42.4, "42 s"),
        (125, "2 min 05 s"),
        (7260, "2 h 01 min"),
    ],
)
def test_spans_read_well(seconds: float | None, shown: str) -> None:
    assert d.span(seconds) == shown


def test_times_are_iso_utc_and_names_sort_naturally() -> None:
    assert d.iso(T0) == "2027-01-15T08:00:00.000Z"
    assert d.iso(None) is None
    assert d.clock(T0) == "2027-01-15 08:00:00 UTC"
    assert d.clock(T0 + 61, day=T0) == "08:01:01"
    assert sorted(["w10", "w2", "w1"], key=d.natural_key) == ["w1", "w2", "w10"]


def test_control_characters_in_output_never_reach_the_text() -> None:
    path, store = new_store(jobs=1)
    store.begin_run(T0)
    attempt(store, 1, "local1", 0, 1, "failed", JobState.FAILED, 1, "red \x1b[31m\x07 bell")
    store.end_run(T0 + 1, "finished")
    store.close()
    text = d.to_text(d.load(path))
    assert "\x1b" not in text and "\x07" not in text
    assert "red \\x1b[31m\\x07 bell" in text
    assert JOB in text


def test_text_and_page_say_the_same_where_they_had_drifted() -> None:
    digest = d.load(launched_session())
    text, page = d.to_text(digest), html(digest, None)
    # Pending jobs with their input line, in a table, as the page had them.
    assert "pending jobs (1):\n  job  line  command\n    5     5  " in text
    # Launched workers: efficiency and destroyed, in both.
    table = text.split("workers (2):\n")[1]
    assert table.splitlines()[0].endswith("address   efficiency  destroyed")
    assert table.splitlines()[1].endswith("75.0%  yes")
    assert "<th>efficiency</th><th>destroyed</th>" in page
    assert "<th>$/hour</th>" in page.split("Workers (2)")[1].split("</table>")[0]
    assert "  instance  worker  provider  size       hours  $/hour     cost  destroyed\n" in text
    # Failed jobs: the input line and the attempts, in both.
    assert "job 2 (line 2): failed, exit 3 on hub2" not in text  # (job 2 ran on hub1)
    assert "job 2 (line 2): failed, exit 3 on hub1 at 08:16:40 after 7 min 30 s (1 attempt)" in (
        page
    )
    # The cost's figures in the same words.
    assert "<p>total: $0.1064 for 1.5000 instance hours</p>" in page

    killed = d.load(killed_session())
    assert "Running jobs (1) (were running when the controller died)" in html(killed, None)
    assert "running jobs (1) (were running when the controller died):\n  job  worker  since" in (
        d.to_text(killed)
    )
