"""The installed `cloudtask-logalyzer` command, run as a user would."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from tests.support.helpers import (
    BIN,
    CLOUDTASK,
    assert_no_traceback,
    cloudtask,
    env_with,
    run,
    sessions_dir,
    work_dir,
)
from tests.support.report_stores import (
    ONE_IN_THE_PLURAL,
    T0,
    big_session,
    free_lock,
    halted_session,
    launched_session,
    new_store,
    real_session,
    validate,
)

from cloudtask.scheduler import JobState

LOGALYZER = str(BIN / "cloudtask-logalyzer")


def logalyzer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([LOGALYZER, *args], input=None, env=env)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert_no_traceback(result)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert_no_traceback(result)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    err = result.stderr
    assert err.startswith("cloudtask-logalyzer: ") and err.endswith("\n")
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert result.stdout == ""
    return err


def test_the_digest_of_a_session_by_id_and_by_path() -> None:
    path = real_session("0", "3", "0")
    by_id = ok(logalyzer(path.name))
    assert by_id.startswith(f"cloudtask session {path.name}: finished\n")
    assert "3 jobs: 2 ok, 1 failed, 0 timeout, 0 lost, 0 pending, 0 running" in by_id
    assert "exit 3 on local" in by_id
    assert "| more 3" in by_id  # stderr is part of the output's tail
    assert "succeeded jobs (2):" in by_id
    # The same digest from its path (from anywhere, with no sessions directory).
    elsewhere = env_with(CLOUDTASK_SESSIONS=str(work_dir() / "none"))
    by_path = ok(logalyzer(str(path), env=elsewhere))
    assert by_path == by_id


def test_a_limit_past_what_sqlite_counts_means_every_job() -> None:
    path = real_session("0", "3", "0")

    digest = ok(logalyzer("--limit=" + "9" * 20, path.name))

    assert "succeeded jobs (2):" in digest


def test_json_is_one_object_that_the_schema_validates() -> None:
    path = real_session("0", "1", "0", "2", "0")
    data = json.loads(ok(logalyzer("--json", path.name)))
    validate(data)
    assert data["session"]["id"] == int(path.name)
    assert data["session"]["state"] == "finished"
    assert data["counts"] == {
        "total": 5,
        "pending": 0,
        "running": 0,
        "ok": 3,
        "failed": 2,
        "timeout": 0,
        "lost": 0,
    }
    assert data["config"]["split"] == "2"
    assert {worker["name"] for worker in data["workers"]} == {"local1", "local2"}
    assert sum(worker["attempts"] for worker in data["workers"]) == 5
    assert [job["state"] for job in data["jobs"]] == ["ok", "failed", "ok", "failed", "ok"]
    assert all(len(job["attempts"]) == 1 for job in data["jobs"])
    assert data["jobs"][3]["attempts"][0]["exit_status"] == 2


def test_json_of_crafted_sessions_validates_too() -> None:
    data = json.loads(ok(logalyzer("--json", str(launched_session()))))
    validate(data)
    assert data["cost"]["total"] == 0.5 * 0.0208 + 0.096
    assert data["cost"]["efficiency"] == 0.75


def test_json_lists_the_first_jobs_unless_all_are_asked_for() -> None:
    path = big_session(3000)
    first = json.loads(ok(logalyzer("--json", "--limit=5", path.name)))
    validate(first)
    assert len(first["jobs"]) == 15  # 5 pending, 5 failed, 5 ok
    assert first["jobs_listed"] == {"limit": 5, "complete": False}

    every = json.loads(ok(logalyzer("--json", "--all", path.name)))
    validate(every)
    assert [job["id"] for job in every["jobs"]] == list(range(1, 3001))
    assert every["jobs_listed"] == {"limit": None, "complete": True}
    assert every["counts"]["total"] == 3000


def test_html_writes_a_private_page_and_picture() -> None:
    path = real_session("0", "1", "0")
    out = ok(logalyzer("--html", path.name))
    page = Path(out.strip())
    assert page == path.absolute() / "report.html"
    picture = path / "timeline.svg"
    for made in (page, picture):
        assert stat.S_IMODE(made.stat().st_mode) == 0o600
    text = page.read_text()
    assert "<svg" in text and "<script" not in text
    assert "http://" not in text and "https://" not in text
    root = ET.parse(picture).getroot()
    assert len([g for g in root.iter() if g.get("class") == "row"]) == 2
    # Written again, replaced (still private, no temporary files left).
    ok(logalyzer("--html", path.name))
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".")) == []


def test_list_shows_every_session_one_line_each() -> None:
    first = real_session("0", "1")
    second = launched_session()
    third, store = new_store(jobs=2)
    store.begin_run(T0)
    store.close()
    free_lock(third)  # its controller was killed
    broken = sessions_dir() / "99"
    broken.mkdir()
    (broken / "store.sqlite").write_text("not a database")

    lines = ok(logalyzer("--list")).splitlines()
    assert len(lines) == 4
    by_id = {int(line.split()[0]): line for line in lines}
    assert sorted(by_id) == [int(first.name), int(second.name), int(third.name), 99]
    assert by_id[int(first.name)].split()[1] == "finished"
    assert "2 jobs: 1 ok, 1 failed" in by_id[int(first.name)]
    assert by_id[int(second.name)].split()[1] == "incomplete"
    assert "2027-01-15 08:00:00 UTC" in by_id[int(second.name)]
    assert by_id[int(third.name)].split()[1] == "interrupted"
    assert by_id[99].split()[1] == "unreadable"


def test_list_says_1_job_and_2_jobs() -> None:
    one = real_session("0", split=1)
    two = real_session("0", "1")

    by_id = {int(line.split()[0]): line for line in ok(logalyzer("--list")).splitlines()}
    assert (
        "  1 job: 1 ok, 0 failed, 0 timeout, 0 lost, 0 pending, 0 running  " in by_id[int(one.name)]
    )
    assert "  2 jobs: 1 ok, 1 failed, " in by_id[int(two.name)]
    assert not ONE_IN_THE_PLURAL.search(by_id[int(one.name)])


def test_list_warns_of_instances_left_running_once_controller_and_watchdog_are_gone() -> None:
    destroyed = launched_session()
    left, store = new_store(jobs=3)
    store.begin_run(T0)
    for n in (1, 2):
        store.intend_instance(f"tok{n}", "hub", f"hub{n}", "t3.small", 0.0208, T0)
        store.instance_launched(f"tok{n}", f"i-000{n}", T0)
    store.intend_instance("tok3", "hub", "hub3", "t3.small", 0.0208, T0)  # no id came back
    store.instance_destroyed("tok2", T0 + 60)
    store.close()
    free_lock(left)  # its controller and its watchdog were killed

    lines = {int(line.split()[0]): line for line in ok(logalyzer("--list")).splitlines()}
    assert "  WARNING: 2 launched instances may still be running  sh -c " in lines[int(left.name)]
    assert lines[int(left.name)].split()[1] == "interrupted"
    assert "WARNING" not in lines[int(destroyed.name)]

    # While a controller (or the watchdog sweeping) holds the session, it is theirs.
    fd = os.open(left / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lines = {int(line.split()[0]): line for line in ok(logalyzer("--list")).splitlines()}
    finally:
        os.close(fd)
    assert lines[int(left.name)].split()[1] == "running"
    assert "WARNING" not in lines[int(left.name)]


def test_json_says_what_stopped_a_session_and_the_budget_against_its_cost() -> None:
    path = halted_session("--budget=$5", {"budget": "5.0"}, figure=7306.97)

    data = json.loads(ok(logalyzer("--json", path.name)))

    validate(data)
    assert data["session"]["state"] == "halted"
    assert data["session"]["stop_reason"] == "--budget=$5"
    assert data["budget"] == {"dollars": 5.0, "spent": 2.0, "projected": 7306.97, "stopped": True}
    assert "(stopped by --budget=$5; " in ok(logalyzer(path.name))


def test_sessions_come_from_the_option_then_the_environment(tmp_path: Path) -> None:
    path = real_session("0")
    other = tmp_path / "other"
    other.mkdir()
    # --sessions wins over CLOUDTASK_SESSIONS.
    refused(logalyzer(f"--sessions={other}", path.name), f"no session {path.name} in {other}")
    assert ok(logalyzer("--sessions", str(sessions_dir()), path.name)).startswith("cloudtask")
    env = env_with(CLOUDTASK_SESSIONS=str(other))
    refused(logalyzer(path.name, env=env), str(other))
    # Unrelated CLOUDTASK_* variables cloudtask would refuse do not stop a report.
    env = env_with(CLOUDTASK_SPLIT="lots", CLOUDTASK_WORKERS="/no/such/file")
    ok(logalyzer(path.name, env=env))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["42"], "no session 42 in"),
        (["nowhere/7"], "nowhere/7: no such session directory"),
        (["--bogus", "1"], "unknown option --bogus"),
        (["--limit=many", "1"], "--limit: not a whole number"),
        (["--all", "1"], "--all goes with --json"),
        (["--json", "--html", "1"], "give one of --json, --html and --list"),
        (["--list", "1"], "--list takes no SESSION"),
        ([], "give a SESSION"),
        (["1", "2"], "give one SESSION"),
        (["--json=yes", "1"], "--json takes no value"),
        (["--help=x"], "--help takes no value"),
        (["--version=x", "1"], "--version takes no value"),
        (["-h=x", "--list"], "-h takes no value"),
        (["~nosuchuser-here/7"], "~nosuchuser-here/7: no home directory for ~nosuchuser-here"),
    ],
)
def test_bad_input_is_a_one_line_error(args: list[str], needle: str) -> None:
    refused(logalyzer(*args), needle)


def test_not_a_session_and_corrupt_stores_are_one_line_errors(tmp_path: Path) -> None:
    refused(logalyzer(str(tmp_path)), "not a session directory")
    corrupt = sessions_dir() / "5"
    corrupt.mkdir(parents=True)
    (corrupt / "store.sqlite").write_bytes(b"\x00garbage" * 512)
    refused(logalyzer("5"), "not a readable session store")
    refused(logalyzer("--json", "5"), "not a readable session store")
    refused(logalyzer("--html", "5"), "not a readable session store")
    not_dir = tmp_path / "file"
    not_dir.write_text("")
    refused(logalyzer(f"--sessions={not_dir}", "--list"), "--sessions: not a directory")
    refused(logalyzer(f"--sessions={tmp_path / 'absent'}", "--list"), "no sessions directory")


def test_help_and_version() -> None:
    assert "--json" in ok(logalyzer("--help"))
    assert ok(logalyzer("-h")) == ok(logalyzer("--help"))
    assert ok(logalyzer("--version")).startswith("cloudtask-logalyzer ")


def test_a_running_session_is_read_without_disturbing_it(tmp_path: Path) -> None:
    """While a controller runs a session, the report reads it (it never takes the lock),
    and the session finishes as if nobody had looked."""
    go = tmp_path / "go"
    jobs = tmp_path / "jobs"
    jobs.write_text(f"{go}\n{go}\n")
    with jobs.open("rb") as stdin:
        controller = subprocess.Popen(
            [
                CLOUDTASK,
                "--force",
                "--split=1",
                "sh",
                "-c",
                'while [ ! -e "$1" ]; do sleep 0.05; done; echo released',
                "x",
            ],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=work_dir(),
            env=dict(os.environ),
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            result = logalyzer("--json", "1")
            if result.returncode == 0:
                data = json.loads(result.stdout)
                if data["counts"]["running"] == 1:
                    break
            assert time.monotonic() < deadline, (result.stdout, result.stderr)
            time.sleep(0.1)
        validate(data)
        assert data["session"]["state"] == "running"
        assert data["session"]["live"] is True
        assert data["session"]["ended"] is None
        running = next(job for job in data["jobs"] if job["state"] == "running")
        assert running["attempts"][-1]["outcome"] == "running"
        assert "a controller is running it now" in ok(logalyzer("1"))
        listed = ok(logalyzer("--list"))
        assert listed.split()[1] == "running"
    finally:
        go.touch()
        out, err = controller.communicate(timeout=30)
    assert controller.returncode == 0, (out, err)
    done = json.loads(ok(logalyzer("--json", "1")))
    assert done["session"]["state"] == "finished"
    assert done["counts"]["ok"] == 2
    assert [a["outcome"] for job in done["jobs"] for a in job["attempts"]] == ["ok", "ok"]


def test_a_killed_controller_is_reported_interrupted() -> None:
    path, store = new_store(jobs=2)
    store.begin_run(T0)
    store.start_attempt(1, "local1", T0 + 1)
    store.close()
    free_lock(path)
    text = ok(logalyzer(path.name))
    assert f"cloudtask session {path.name}: interrupted" in text
    assert f"cloudtask --resume={path.name}" in text
    data = json.loads(ok(logalyzer("--json", path.name)))
    validate(data)
    assert data["jobs"][0]["attempts"][0] | {"worker": None} == {
        "worker": None,
        "started": "2027-01-15T08:00:01.000Z",
        "started_unix": T0 + 1,
        "ended": None,
        "ended_unix": None,
        "duration_seconds": None,
        "outcome": "lost",
        "exit_status": None,
        "signal": None,
        "tail": "",
        "usage": dict.fromkeys(
            (
                "user_cpu_seconds",
                "system_cpu_seconds",
                "max_rss_bytes",
                "wall_seconds",
                "output_bytes",
            )
        ),
    }
    assert JobState.RUNNING.value == data["jobs"][0]["state"]


def _worker_rows(text: str) -> dict[str, list[str]]:
    """The text digest's workers table: each row's cells by worker name."""
    table = text.split("\nworkers (", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return {row.split()[0]: row.split()[1:4] for row in table}


@pytest.mark.parametrize(
    "pre",
    [
        # The second worker's --pre waits for the last job, then asks for one:
        # nothing is left, it is released.
        "mkdir {claim} || for n in $(seq 200); do [ -e {done} ] && exit; sleep 0.05; done",
        # The second worker's --pre fails: it gets no job.
        "mkdir {claim}",
    ],
    ids=["released-idle", "pre-failed"],
)
def test_a_worker_that_ran_no_job_is_listed_with_0_jobs(tmp_path: Path, pre: str) -> None:
    claim, done = tmp_path / "claim", tmp_path / "done"
    result = cloudtask(
        "--force",
        "--split=2",
        f"--pre={pre.format(claim=claim, done=done)}",
        "sh",
        "-c",
        'if [ "$1" = last ]; then touch "$2"; fi',
        "x",
        input=f"first {done}\nlast {done}\n".encode(),
    )
    assert_no_traceback(result)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert done.exists()
    text = ok(logalyzer("1"))
    assert "workers (2):" in text
    rows = _worker_rows(text)
    assert sorted(rows) == ["local1", "local2"]
    # One worker ran both jobs; the other is listed all the same, with none.
    assert sorted(rows.values()) == [["0", "0", "0"], ["2", "2", "0"]]
    data = json.loads(ok(logalyzer("--json", "1")))
    validate(data)
    workers = {w["name"]: w for w in data["workers"]}
    assert sorted(w["attempts"] for w in workers.values()) == [0, 2]
    idle = next(w for w in workers.values() if w["attempts"] == 0)
    assert idle["launched"] is False
    assert idle["first_started"] is None
    assert idle["lifetime_seconds"] is None
