"""Durable sessions end to end: abort, --resume, --retry and the session store.

Every test runs the installed command on the local provider and judges what a
user would see (exit status, summary line, the resume command printed), what
the jobs themselves left (marker files each job appends to), and what the
session store says (SESSIONS/ID/store.sqlite, read with cloudtask.store.reader).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.helpers import (
    CLOUDTASK,
    assert_no_traceback,
    assert_usage_error,
    cloudtask,
    counts,
    env_with,
    lines,
    session_ids,
    sessions_dir,
    split_shown,
    summary,
    work_dir,
)
from tests.support.hubserver import HubServer
from tests.support.wait import wait_until

from cloudtask.config import resolve
from cloudtask.session.plan import stored_config
from cloudtask.store import INGEST_BATCH, AttemptRecord, JobRecord
from cloudtask.store import meta as keys
from cloudtask.store.reader import ReadError, StoreReader

SECRET = "s3cret-9f1c2e7d-never-stored"

# -- helpers -----------------------------------------------------------------


def marker_job(tmp: Path) -> list[str]:
    """A job command `sh job.sh ID [slow]`: appends "start ID", then "end ID", to marks.

    A slow job waits while the file `hold` exists (it is stopped by an abort or a
    timeout in the meantime), so a test decides when slow jobs may finish.
    """
    script = tmp / "job.sh"
    script.write_text(
        f"""\
echo "start $1" >> {tmp}/marks
if [ "$2" = slow ]; then
    while [ -e {tmp}/hold ]; do sleep 0.05; done
fi
echo "end $1" >> {tmp}/marks
"""
    )
    return ["sh", str(script)]


def marks(tmp: Path) -> Counter[str]:
    path = tmp / "marks"
    return Counter(path.read_text().splitlines() if path.exists() else [])


class Background:
    """cloudtask started as a terminal's foreground job: a session and group of its own.

    Its output goes to files, so the test can read it while it runs without
    losing anything to a reader's buffer.
    """

    def __init__(self, args: list[str], jobs: str, tmp: Path) -> None:
        self.out_path = tmp / f"out.{time.monotonic_ns()}"
        self.err_path = self.out_path.with_suffix(".err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [CLOUDTASK, *args],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=tmp,
                start_new_session=True,
            )
        assert self.proc.stdin is not None
        self.proc.stdin.write(jobs.encode())
        self.proc.stdin.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, *patterns: str, limit: float = 15) -> None:
        """Until stdout has a line matching each pattern; fails if cloudtask ends first."""
        deadline = time.monotonic() + limit
        while True:
            out = self.stdout()
            if all(re.search(pattern, out, re.MULTILINE) for pattern in patterns):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"not all of {patterns} in stdout (exit {self.proc.returncode}):\n"
                    f"{out}\nstderr:\n{self.stderr()}"
                )
            time.sleep(0.02)

    def ctrl_c(self) -> subprocess.CompletedProcess[str]:
        """SIGINT to the whole foreground group, as a terminal's Ctrl-C; then its end."""
        os.killpg(self.pid, signal.SIGINT)
        return self.finish()

    def finish(self, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        return subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode, self.stdout(), self.stderr()
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def background() -> Iterator[list[Background]]:
    """Background controllers a test starts; none outlives the test."""
    started: list[Background] = []
    yield started
    for proc in started:
        proc.kill()


def start(
    started: list[Background], args: list[str], jobs: str, tmp: Path | None = None
) -> Background:
    proc = Background(["--force", *args], jobs, tmp or work_dir())
    started.append(proc)
    return proc


def store_path(session: int) -> Path:
    return sessions_dir() / str(session) / "store.sqlite"


def store(session: int) -> StoreReader:
    return StoreReader.open(sessions_dir() / str(session))


def states(session: int) -> dict[int, str]:
    with store(session) as reader:
        return reader.job_states()


def outcomes(session: int, job: int) -> list[str | None]:
    with store(session) as reader:
        return [attempt.outcome for attempt in reader.attempts(job)]


def all_attempts(session: int) -> list[AttemptRecord]:
    with store(session) as reader:
        return reader.attempts()


def meta(session: int, key: keys.Key[keys.T]) -> keys.T | None:
    with store(session) as reader:
        return reader.meta(key)


def last_attempt_end(session: int) -> float | None:
    with store(session) as reader:
        return reader.last_attempt_end()


def stored_options(session: int) -> dict[str, str]:
    options = meta(session, keys.CONFIG)
    assert options is not None
    return dict(options)


def everything_in(directory: Path) -> bytes:
    """Every byte of every file under directory (names included)."""
    found = b""
    for path in sorted(directory.rglob("*")):
        found += str(path).encode() + b"\0"
        if path.is_file():
            found += path.read_bytes()
    return found


def aborted_session(
    started: list[Background], args: list[str], slow_jobs: int, running: int
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """A session of slow marker jobs aborted by Ctrl-C while `running` of them ran."""
    tmp = work_dir()
    (tmp / "hold").touch()
    command = marker_job(tmp)
    jobs = "".join(f"{n} slow\n" for n in range(1, slow_jobs + 1))
    proc = start(started, [*args, *command], jobs)
    proc.wait_for(*(rf"job {n} started" for n in range(1, running + 1)))
    wait_until(
        lambda: all(marks(tmp)[f"start {n}"] for n in range(1, running + 1)),
        10,
        f"jobs 1-{running} marked as started",
    )
    result = proc.ctrl_c()
    assert result.returncode == 1, (result.stdout, result.stderr)
    return summary(result).id, result


def resume_command(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The arguments of the `cloudtask --resume=...` command an aborted run printed."""
    found = re.findall(r"resume with: (cloudtask .*)$", result.stdout, re.MULTILINE)
    assert len(found) == 1, result.stdout
    words = shlex.split(found[0])
    assert words[0] == "cloudtask"
    return words[1:]


# -- Ctrl-C, then --resume -----------------------------------------------------


@pytest.mark.parametrize("abort", ["ctrl-c", "sigterm"])
def test_an_abort_saves_the_session_and_resume_runs_only_the_unfinished_jobs(
    background: list[Background], abort: str
) -> None:
    tmp = work_dir()
    (tmp / "hold").touch()
    command = marker_job(tmp)
    # Jobs 1 and 2 are quick; 3 and 4 are held on the two workers when Ctrl-C
    # comes; 5 and 6 have not started then.
    jobs = "1\n2\n3 slow\n4 slow\n5 slow\n6 slow\n"
    proc = start(background, ["--split=2", *command], jobs)
    proc.wait_for(r"job 1 ok", r"job 2 ok", r"job 3 started", r"job 4 started")
    wait_until(
        lambda: marks(tmp)["start 3"] == marks(tmp)["start 4"] == 1,
        10,
        "jobs 3 and 4 marked as started once",
    )

    if abort == "ctrl-c":
        aborted = proc.ctrl_c()
    else:
        os.kill(proc.pid, signal.SIGTERM)
        aborted = proc.finish()

    assert_no_traceback(aborted)
    assert aborted.returncode == 1, aborted.stderr
    session = summary(aborted).id
    assert counts(aborted) == (4, 6, 4, 0, 0, 2)
    # The exact command that resumes it, --sessions included (it came from the environment).
    resume = resume_command(aborted)
    assert resume == [f"--resume={session}", f"--sessions={sessions_dir()}"]
    assert states(session) == {
        1: "ok",
        2: "ok",
        3: "pending",
        4: "pending",
        5: "pending",
        6: "pending",
    }
    assert outcomes(session, 3) == outcomes(session, 4) == ["stopped"]
    assert outcomes(session, 5) == []

    (tmp / "hold").unlink()
    resumed = cloudtask(
        *resume, env={k: v for k, v in os.environ.items() if k != "CLOUDTASK_SESSIONS"}
    )

    assert_no_traceback(resumed)
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert summary(resumed).id == session
    assert counts(resumed) == (0, 6, 0, 0, 0, 6)
    assert re.search(rf"^session {session}: 4 jobs to run, split 2\b", resumed.stdout, re.M)
    started_again = sorted(int(m) for m in re.findall(r"job (\d+) started", resumed.stdout))
    assert started_again == [3, 4, 5, 6]
    got = marks(tmp)
    # Finished jobs are not run again; the two interrupted ones are, to the end.
    for job in (1, 2, 5, 6):
        assert (got[f"start {job}"], got[f"end {job}"]) == (1, 1), (job, got)
    for job in (3, 4):
        assert (got[f"start {job}"], got[f"end {job}"]) == (2, 1), (job, got)
    assert set(states(session).values()) == {"ok"}
    assert outcomes(session, 3) == outcomes(session, 4) == ["stopped", "ok"]
    assert outcomes(session, 1) == outcomes(session, 6) == ["ok"]
    # The session log holds what the console showed in both runs.
    log = (sessions_dir() / str(session) / "log").read_text()
    assert len(re.findall(rf"^session {session}: ", log, re.M)) == 2
    assert f"resume with: cloudtask --resume={session}" in log


def test_resume_uses_the_stored_options(background: list[Background]) -> None:
    session, aborted = aborted_session(background, ["--split=3"], slow_jobs=6, running=3)
    assert counts(aborted) == (6, 6, 6, 0, 0, 0)

    (work_dir() / "hold").unlink()
    resumed = cloudtask(f"--resume={session}")

    assert resumed.returncode == 0, resumed.stderr
    assert split_shown(resumed.stdout) == 3  # as stored: without it the split would be 1
    assert counts(resumed) == (0, 6, 0, 0, 0, 6)
    got = marks(work_dir())
    assert all(got[f"end {n}"] == 1 for n in range(1, 7)), got


def test_options_given_with_resume_override_the_stored_ones(background: list[Background]) -> None:
    session, _ = aborted_session(background, ["--split=3"], slow_jobs=6, running=3)
    assert "timeout" not in stored_options(session)  # defaults are not stored

    # Slow jobs are still held: with --timeout=0.5 every one of them times out.
    resumed = cloudtask(f"--resume={session}", "--split=2", "--timeout=0.5")

    assert_no_traceback(resumed)
    assert resumed.returncode == 1, resumed.stderr
    assert re.search(rf"^session {session}: 6 jobs to run, split 2\b", resumed.stdout, re.M)
    assert counts(resumed) == (6, 6, 0, 6, 0, 0)
    stored = stored_options(session)
    assert (stored["split"], stored["timeout"]) == ("2", "0.5")
    # The stored command ran: every job's marker script started.
    assert all(marks(work_dir())[f"start {n}"] >= 1 for n in range(1, 7))

    # The overrides are now the session's options: --retry with none keeps them.
    (work_dir() / "hold").unlink()
    retried = cloudtask(f"--retry={session}")
    assert retried.returncode == 0, retried.stderr
    assert split_shown(retried.stdout) == 2
    assert counts(retried) == (0, 6, 0, 0, 0, 6)


def test_a_command_given_with_resume_is_refused(background: list[Background]) -> None:
    session, _ = aborted_session(background, [], slow_jobs=2, running=1)
    before = all_attempts(session)

    for option in ("--resume", "--retry"):
        result = cloudtask(f"{option}={session}", "echo", "hello")
        assert_usage_error(result, option)

    assert all_attempts(session) == before
    assert set(states(session).values()) == {"pending"}


# -- --retry: failed and timed-out jobs ------------------------------------------


def counting_job(tmp: Path) -> list[str]:
    """`sh count.sh ID KIND`: counts its runs in count.ID; on its first run a
    "fail" job exits 3 and a "slow" job sleeps far past the timeout."""
    script = tmp / "count.sh"
    script.write_text(
        f"""\
n=$(( $(cat {tmp}/count.$1 2>/dev/null || echo 0) + 1 ))
echo $n > {tmp}/count.$1
echo "job $1 run $n"
case "$2" in
    fail) if [ $n -lt 2 ]; then echo "job $1 failing"; exit 3; fi ;;
    slow) if [ $n -lt 2 ]; then sleep 30; fi ;;
esac
echo "job $1 done"
"""
    )
    return ["sh", str(script)]


def runs(tmp: Path, job: int) -> int:
    path = tmp / f"count.{job}"
    return int(path.read_text()) if path.exists() else 0


def test_retry_runs_failed_and_timed_out_jobs_again_and_resume_does_not() -> None:
    tmp = work_dir()
    first = cloudtask(
        "--split=2", "--timeout=1", *counting_job(tmp), input=b"1 ok\n2 fail\n3 slow\n4 ok\n"
    )
    assert first.returncode == 1, first.stderr
    session = summary(first).id
    assert counts(first) == (2, 4, 0, 1, 1, 2)
    assert states(session) == {1: "ok", 2: "failed", 3: "timeout", 4: "ok"}

    # --resume runs pending, aborted and lost jobs only: there are none.
    resumed = cloudtask(f"--resume={session}")
    assert_no_traceback(resumed)
    assert resumed.returncode == 0, resumed.stderr
    assert "finished" in resumed.stdout
    assert counts(resumed) == (2, 4, 0, 1, 1, 2)
    assert [runs(tmp, job) for job in (1, 2, 3, 4)] == [1, 1, 1, 1]
    assert states(session) == {1: "ok", 2: "failed", 3: "timeout", 4: "ok"}

    retried = cloudtask(f"--retry={session}")

    assert_no_traceback(retried)
    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    assert summary(retried).id == session
    assert re.search(rf"^session {session}: 2 jobs to run\b", retried.stdout, re.M)
    assert counts(retried) == (0, 4, 0, 0, 0, 4)
    assert [runs(tmp, job) for job in (1, 2, 3, 4)] == [1, 2, 2, 1]
    assert set(states(session).values()) == {"ok"}
    assert outcomes(session, 2) == ["failed", "ok"]
    assert outcomes(session, 3) == ["timeout", "ok"]
    assert outcomes(session, 1) == ["ok"]

    # All ok now: --retry as well as --resume says it is finished and runs nothing.
    for option in ("--retry", "--resume"):
        again = cloudtask(f"{option}={session}")
        assert again.returncode == 0, again.stderr
        assert "finished" in again.stdout
        assert counts(again) == (0, 4, 0, 0, 0, 4)
    assert [runs(tmp, job) for job in (1, 2, 3, 4)] == [1, 2, 2, 1]


# -- a finished session, bad ids ---------------------------------------------------


def test_resuming_a_finished_session_says_so_and_runs_nothing() -> None:
    tmp = work_dir()
    done = cloudtask(*marker_job(tmp), input=b"1\n2\n3\n")
    assert done.returncode == 0, done.stderr
    session = summary(done).id
    attempts = all_attempts(session)

    resumed = cloudtask(f"--resume={session}")

    assert_no_traceback(resumed)
    assert resumed.returncode == 0, resumed.stderr
    assert len(lines(resumed.stdout)) == 2, resumed.stdout
    assert f"session {session} is finished" in lines(resumed.stdout)[0]
    assert counts(resumed) == (0, 3, 0, 0, 0, 3)
    assert "started" not in resumed.stdout
    assert all_attempts(session) == attempts
    assert marks(tmp) == Counter({f"{what} {n}": 1 for n in (1, 2, 3) for what in ("start", "end")})
    assert session_ids() == [session]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--resume=99"], ["99"]),
        (["--retry=99"], ["99"]),
        (["--resume=0"], ["--resume"]),
        (["--retry=0"], ["--retry"]),
        (["--resume=x"], ["--resume"]),
        (["--resume=1", "--retry=1"], ["--resume", "--retry"]),
        (["--resume=1", "--retry=99"], ["--resume", "--retry"]),
    ],
)
def test_bad_resume_ids_are_one_line_errors(args: list[str], needles: list[str]) -> None:
    existing = cloudtask("true", input=b"1\n")
    assert existing.returncode == 0, existing.stderr
    assert summary(existing).id == 1
    attempts = all_attempts(1)

    result = cloudtask(*args)

    assert_usage_error(result, *needles)
    assert session_ids() == [1]
    assert all_attempts(1) == attempts


def test_an_unknown_session_is_an_error_even_without_a_sessions_directory() -> None:
    result = cloudtask("--resume=5")

    assert_usage_error(result, "5", str(sessions_dir()))
    assert not sessions_dir().exists()


# -- one process per session ---------------------------------------------------------


def test_a_second_process_on_a_running_session_is_refused(background: list[Background]) -> None:
    tmp = work_dir()
    (tmp / "hold").touch()
    proc = start(background, ["--split=2", *marker_job(tmp)], "1 slow\n2 slow\n3\n")
    proc.wait_for(r"job 1 started", r"job 2 started")
    session = int(re.findall(r"^session (\d+):", proc.stdout(), re.M)[0])

    for option in ("--resume", "--retry"):
        refused = cloudtask(f"{option}={session}")
        err = assert_usage_error(refused, f"session {session}", str(proc.pid))
        assert "process" in err

    # The running session did not notice.
    assert proc.proc.poll() is None
    assert states(session) == {1: "running", 2: "running", 3: "pending"}
    (tmp / "hold").unlink()
    result = proc.finish()
    assert result.returncode == 0, result.stderr
    assert counts(result) == (0, 3, 0, 0, 0, 3)
    assert "cloudtask:" not in result.stderr
    got = marks(tmp)
    assert all(got[f"start {n}"] == got[f"end {n}"] == 1 for n in (1, 2, 3)), got

    # Once it has ended, the session is free again.
    again = cloudtask(f"--resume={session}")
    assert again.returncode == 0, again.stderr
    assert "finished" in again.stdout


def test_resumes_started_together_run_each_job_once(background: list[Background]) -> None:
    session, _ = aborted_session(background, ["--split=1"], slow_jobs=6, running=1)
    (work_dir() / "hold").unlink()

    together = [Background([f"--resume={session}", "--split=2"], "", work_dir()) for _ in range(3)]
    background.extend(together)
    results = [proc.finish() for proc in together]

    ran = [r for r in results if re.search(rf"^session {session}: ", r.stdout, re.M)]
    assert len(ran) == 1, [(r.returncode, r.stdout, r.stderr) for r in results]
    assert ran[0].returncode == 0, ran[0].stderr
    for result in results:
        if result is ran[0]:
            continue
        if result.returncode == 2:  # refused while the other ran
            assert_usage_error(result, f"session {session}", "process")
        else:  # or started after it ended
            assert result.returncode == 0, result.stderr
            assert "finished" in result.stdout
    got = marks(work_dir())
    assert got == Counter(
        {"start 1": 2, **{f"start {n}": 1 for n in range(2, 7)}}
        | {f"end {n}": 1 for n in range(1, 7)}
    )


def test_controllers_started_together_get_distinct_sessions() -> None:
    procs = [
        subprocess.Popen(
            [CLOUDTASK, "--force", "true"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=work_dir(),
        )
        for _ in range(6)
    ]
    ids = []
    for proc in procs:
        out, err = proc.communicate(b"1\n2\n", timeout=30)
        assert proc.returncode == 0, err
        ids.append(int(re.findall(rb"^session (\d+) \(", out, re.M)[0]))
    assert sorted(ids) == [1, 2, 3, 4, 5, 6]
    assert session_ids() == [1, 2, 3, 4, 5, 6]


# -- the store ----------------------------------------------------------------------


def test_the_store_records_every_attempt_and_final_states() -> None:
    tmp = work_dir()
    script = tmp / "kinds.sh"
    script.write_text(
        """\
case "$1" in
    chatty) i=1; while [ $i -le 30 ]; do echo "line $i"; i=$((i + 1)); done ;;
    fail) echo "about to fail"; exit 7 ;;
    slow) echo "sleeping"; sleep 30 ;;
esac
"""
    )
    before = time.time()
    result = cloudtask(
        "--split=2", "--timeout=0.5", "sh", str(script), input=b"chatty\nfail\nslow\n"
    )
    after = time.time()
    assert result.returncode == 1, result.stderr
    session = summary(result).id
    assert counts(result) == (2, 3, 0, 1, 1, 1)

    with store(session) as reader:
        jobs = [(j.id, j.line, j.command, j.state, j.attempts) for j in reader.jobs()]
        every_attempt = sorted(reader.attempts(), key=lambda a: a.job)
    assert jobs == [
        (1, 1, f"sh {script} chatty", "ok", 1),
        (2, 2, f"sh {script} fail", "failed", 1),
        (3, 3, f"sh {script} slow", "timeout", 1),
    ]
    rows = [
        (a.job, a.worker, a.started, a.ended, a.outcome, a.exit_status, a.signal, a.tail)
        for a in every_attempt
    ]
    assert [row[0] for row in rows] == [1, 2, 3]
    for job, worker, started, ended, *_ in rows:
        assert re.fullmatch(r"local[12]", str(worker)), worker
        assert isinstance(started, float) and isinstance(ended, float), (job, started, ended)
        assert before <= started <= ended <= after, (job, before, started, ended, after)
    chatty, fail, slow = (row[4:] for row in rows)
    # The tail of the output: its last lines, not all of them.
    assert chatty == ("ok", 0, None, "\n".join(f"line {i}" for i in range(11, 31)))
    assert fail == ("failed", 7, None, "about to fail")
    assert slow[0] == "timeout"
    assert slow[3] == "sleeping"
    assert slow[1] is None or slow[1] != 0, slow
    assert rows[2][3] - rows[2][2] >= 0.5
    assert meta(session, keys.SCHEMA_VERSION) is not None
    assert meta(session, keys.COMMAND) == f"sh {script}"
    stored = stored_options(session)
    assert (stored["split"], stored["timeout"]) == ("2", "0.5")
    assert not {"force", "resume", "retry"} & set(stored)
    # The worker logs have the full output.
    logs = "".join(
        path.read_text() for path in (sessions_dir() / str(session) / "workers").iterdir()
    )
    assert "line 1\n" in logs and "line 30\n" in logs


def assert_private(directory: Path) -> None:
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for path in directory.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        else:
            assert path.is_file() and not path.is_symlink(), path
            assert mode == 0o600, (path, oct(mode))


def test_the_session_directory_is_private_while_running_and_after(
    background: list[Background],
) -> None:
    tmp = work_dir()
    (tmp / "hold").touch()
    proc = start(background, [*marker_job(tmp)], "1 slow\n2\n")
    proc.wait_for(r"job 1 started")
    session_dir = sessions_dir() / str(session_ids()[0])
    assert {"store.sqlite", "log", "workers"} <= {p.name for p in session_dir.iterdir()}
    assert_private(session_dir)  # the WAL files included, while they exist

    (tmp / "hold").unlink()
    assert proc.finish().returncode == 0
    assert_private(session_dir)
    assert stat.S_IMODE(sessions_dir().stat().st_mode) == 0o700


def test_the_stored_configuration_never_holds_a_secret() -> None:
    config = resolve(
        {"split": "3", "hub-apikey": SECRET}, None, {"CLOUDTASK_HUB_APIKEY": SECRET + "-env"}
    )
    assert config.hub_apikey == SECRET

    stored = stored_config(config)

    assert stored["split"] == "3"
    assert "hub-apikey" not in stored
    assert SECRET not in json.dumps(stored)
    # Only from the environment, too.
    stored = stored_config(resolve({}, None, {"CLOUDTASK_HUB_APIKEY": SECRET}))
    assert SECRET not in json.dumps(stored)


def test_a_secret_given_with_resume_is_refused_and_never_reaches_the_session(
    background: list[Background],
) -> None:
    session, _ = aborted_session(background, [], slow_jobs=2, running=1)
    before = stored_options(session)

    # A Hub API test server that knows another key: the runs are refused
    # before they start (exit 2), and nothing is launched.
    with HubServer("the-right-key") as hub:
        url = f"--hub-url={hub.url}"
        on_cli = cloudtask(f"--resume={session}", f"--hub-apikey={SECRET}", url, "--split=1")
        in_env = cloudtask(f"--resume={session}", url, env=env_with(CLOUDTASK_HUB_APIKEY=SECRET))
        fresh = cloudtask(url, "true", input=b"1\n", env=env_with(CLOUDTASK_HUB_APIKEY=SECRET))
        assert hub.requests["launch"] == 0
        assert hub.requests["instances"] == 3  # each asked once, and refused

    for result in (on_cli, in_env, fresh):
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "--provider=hub: " in result.stderr and "nothing can be launched" in result.stderr
        assert SECRET not in result.stdout + result.stderr
    # A refused resume stores none of its options; the secret is never stored.
    assert stored_options(session) == before
    assert SECRET.encode() not in everything_in(sessions_dir())


def test_bad_input_leaves_no_session_behind() -> None:
    result = cloudtask("true", input=b"1\n'unbalanced\n3\n")
    assert_usage_error(result, "input line 2")
    assert session_ids() == []

    # Also when earlier batches of jobs were already committed to the store.
    jobs = b"".join(b"%d\n" % n for n in range(INGEST_BATCH + 5)) + b"bad\0line\n"
    result = cloudtask("true", input=jobs)
    assert_usage_error(result, f"input line {INGEST_BATCH + 6}")
    assert session_ids() == []


def test_a_session_killed_while_its_input_streamed_in_is_not_resumed_as_complete(
    background: list[Background],
) -> None:
    # SIGKILL after a first batch of jobs was committed, while more input was to come:
    # the session never started (its options and command were not stored yet).
    proc = subprocess.Popen(
        [CLOUDTASK, "--force", "--split=3", "echo"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=work_dir(),
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(b"%d\n" % n for n in range(INGEST_BATCH + 10)))
        proc.stdin.flush()  # and left open: more lines could still come

        def first_batch_in() -> bool:
            if not session_ids() or not store_path(session_ids()[0]).exists():
                return False
            try:
                with store(session_ids()[0]) as reader:
                    return sum(reader.state_counts().values()) == INGEST_BATCH
            except ReadError:
                return False

        wait_until(first_batch_in, 10, "the first batch of lines in the store")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    [session] = session_ids()

    resume = Background([f"--resume={session}"], "", work_dir())
    background.append(resume)
    deadline = time.monotonic() + 15
    while resume.proc.poll() is None and "jobs to run" not in resume.stdout():
        assert time.monotonic() < deadline, "the resume neither ran nor ended"
        time.sleep(0.02)
    started = resume.stdout()
    resume.kill()  # it would run all 10,000 jobs it has: not needed to judge it

    # Its input was never fully read, nor its options stored: it must not run the
    # jobs read so far as if they were all of them, with default options.
    assert "jobs to run" not in started, f"a half-read session was resumed: {started[:200]!r}"
    assert_usage_error(resume.finish(), f"session {session}")


def test_a_resume_stops_the_local_jobs_a_killed_controller_left_running(
    background: list[Background],
) -> None:
    tmp = work_dir()
    script = tmp / "job.sh"
    # Jobs started while the file `first` exists sleep on; later ones do not.
    script.write_text(
        f"""\
echo "start $1" >> {tmp}/marks
if [ -e {tmp}/first ]; then sleep 300; fi
echo "end $1" >> {tmp}/marks
"""
    )
    (tmp / "first").touch()
    proc = start(background, ["--split=2", "sh", str(script)], "1\n2\n3\n")
    proc.wait_for(r"job 1 started", r"job 2 started")
    wait_until(lambda: len(sleepers()) == 2, 10, "both jobs sleeping")
    session = session_ids()[0]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.finish()
    # Orphaned: in sessions of their own, they outlive the controller.
    orphans = sleepers()
    assert len(orphans) == 2
    (tmp / "first").unlink()

    result = cloudtask(f"--resume={session}")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "stopped 2 jobs that an earlier run of the session left" in result.stdout
    assert sleepers() == []
    assert counts(result) == (0, 3, 0, 0, 0, 3)
    # Jobs 1 and 2: killed once as leftovers, then run to the end.
    assert marks(tmp) == Counter(
        {"start 1": 2, "start 2": 2, "start 3": 1, "end 1": 1, "end 2": 1, "end 3": 1}
    )


def sleepers() -> list[int]:
    """Live `sleep 300` processes (the test's orphaned jobs)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError):
            if not entry.name.isdigit():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if (entry / "cmdline").read_bytes() == b"sleep\x00300\x00" and state != "Z":
                found.append(int(entry.name))
    return found


def test_a_retry_refused_for_its_joblog_leaves_the_failed_jobs_failed() -> None:
    first = cloudtask("sh", "-c", "exit $0", input=b"0\n3\n")
    session = summary(first).id
    assert states(session) == {1: "ok", 2: "failed"}

    refused = cloudtask(f"--retry={session}", "--joblog=/dev/full")

    assert_usage_error(refused, "--joblog", "/dev/full")
    assert states(session) == {1: "ok", 2: "failed"}
    assert cloudtask(f"--retry={session}").returncode == 1  # still there to retry
    assert outcomes(session, 2) == ["failed", "failed"]


def test_a_resume_of_a_damaged_session_is_one_line_and_changes_nothing() -> None:
    first = cloudtask("--halt=fail=1", "sh", "-c", "exit $0", input=b"1\n0\n")
    session = summary(first).id
    # Damaged on purpose, as only SQL can: no cloudtask code writes a state it does not know.
    with sqlite3.connect(store_path(session)) as db:
        db.execute("UPDATE jobs SET state = 'weird' WHERE id = 2")

    def recorded() -> tuple[list[JobRecord], list[AttemptRecord]]:
        with store(session) as reader:
            return reader.jobs(), reader.attempts()

    before = recorded()

    result = cloudtask(f"--resume={session}")

    assert_usage_error(result, "store.sqlite: damaged: job 2 has state 'weird'")
    assert recorded() == before


def test_a_bad_stored_option_is_named_as_stored_not_as_a_template() -> None:
    first = cloudtask("--halt=fail=1", "sh", "-c", "exit $0", input=b"1\n0\n")
    session = summary(first).id
    # Damaged on purpose (an option cloudtask would refuse to store): only SQL can.
    with sqlite3.connect(store_path(session)) as db:
        db.execute("""UPDATE meta SET value = '{"split": "x"}' WHERE key = 'config'""")

    result = cloudtask(f"--resume={session}")

    assert_usage_error(result, "--split as stored in", "store.sqlite", "not a whole number")


def test_a_session_killed_after_its_last_job_reads_finished_once_resumed(
    background: list[Background],
) -> None:
    """Found by the chaos run: the session stayed 'running' (read as interrupted)."""
    proc = start(background, ["--post=sleep 30", "true"], "1\n2\n")
    proc.wait_for(r" post: sleep 30")
    proc.kill()  # SIGKILL to the group, during --post: every job had ended ok
    session = int(re.findall(r"^session (\d+):", proc.stdout(), re.MULTILINE)[0])
    assert meta(session, keys.STATE) == "running"

    resumed = cloudtask(f"--resume={session}")

    assert resumed.returncode == 0, resumed.stderr
    assert "is finished: nothing to run" in resumed.stdout
    assert meta(session, keys.STATE) == "finished"
    # When the work ended, not when the resume ran:
    assert meta(session, keys.ENDED) == last_attempt_end(session)


def test_an_empty_option_on_resume_drops_the_stored_one() -> None:
    first = cloudtask(
        "--split=1", "--halt=fail=1", "--timeout=600", "sh", "-c", "exit $0", input=b"1\n0\n0\n"
    )
    session = summary(first).id
    assert states(session) == {1: "failed", 2: "pending", 3: "pending"}

    resumed = cloudtask(f"--resume={session}", "--halt=")

    assert resumed.returncode == 1, resumed.stderr
    assert states(session) == {1: "failed", 2: "ok", 3: "ok"}
    assert "halt" not in stored_options(session)
    assert stored_options(session)["timeout"] == "600.0"  # the others are kept


def test_an_empty_option_on_a_new_session_is_still_refused() -> None:
    assert_usage_error(cloudtask("--halt=", "true", input=b"1\n"), "--halt")
    assert_usage_error(cloudtask("--timeout=", "true", input=b"1\n"), "--timeout")


def test_resuming_a_finished_session_needs_no_writable_joblog(tmp_path: Path) -> None:
    """Nothing will run, so the stored --joblog (gone since) is not opened."""
    gone = tmp_path / "gone"
    gone.mkdir()
    first = cloudtask(f"--joblog={gone / 'jobs.log'}", "true", input=b"1\n")
    session = summary(first).id
    (gone / "jobs.log").unlink()
    gone.rmdir()

    resumed = cloudtask(f"--resume={session}")

    assert resumed.returncode == 0, resumed.stderr
    assert "is finished: nothing to run" in resumed.stdout
    assert not gone.exists()


def test_a_refused_input_leaves_no_joblog_it_made(tmp_path: Path) -> None:
    made, kept = tmp_path / "made.log", tmp_path / "kept.log"
    kept.write_text("earlier lines\n")

    for joblog in (made, kept):
        assert_usage_error(cloudtask(f"--joblog={joblog}", "echo", input=b"'bad\n"), "line 1")

    assert not made.exists()
    assert kept.read_text() == "earlier lines\n"


def test_finished_after_a_kill_takes_the_end_of_the_last_attempt_not_an_earlier_run(
    background: list[Background],
) -> None:
    """The first run aborted (recording its end); the second is killed after its
    last job: the session ended when that job did, not when the first run did."""
    proc = start(background, ["sh", "-c", "sleep $0"], "0\n30\n")
    proc.wait_for(r"job 2 started")
    proc.ctrl_c()
    aborted_end = meta(1, keys.ENDED)
    assert aborted_end is not None
    proc = start(background, ["--timeout=1", "--post=sleep 30", "--resume=1"], "")
    proc.wait_for(r" post: sleep 30")  # job 2 timed out: every job is final
    proc.kill()

    assert cloudtask("--resume=1").returncode == 0

    assert meta(1, keys.ENDED) == last_attempt_end(1) > aborted_end


def test_a_halted_session_resumed_counts_only_its_new_outcomes() -> None:
    """Before, the old failure reached --halt again at the first job's end: the
    resume started `split` jobs, halted, and printed a hint that led to the same."""
    first = cloudtask("--halt=fail=1", "--split=2", "sh", "-c", "exit $0", input=b"1\n0\n0\n0\n0\n")
    session = summary(first).id
    assert "halted" in first.stdout and f"--resume={session}" in first.stdout
    ran = len(all_attempts(session))
    assert ran < 5

    resumed = cloudtask(f"--resume={session}")

    assert resumed.returncode == 1, resumed.stderr  # job 1 failed, in the first run
    assert "halted (" not in resumed.stdout
    assert states(session) == {1: "failed", 2: "ok", 3: "ok", 4: "ok", 5: "ok"}


def test_a_resumed_session_halts_again_on_new_failures() -> None:
    """The neighbour: --halt still holds for the resume's own failures."""
    first = cloudtask("--split=1", "--halt=fail=1", "sh", "-c", "exit $0", input=b"1\n0\n1\n1\n0\n")
    session = summary(first).id
    assert states(session)[1] == "failed"

    resumed = cloudtask(f"--resume={session}")

    assert "halted (--halt=fail=1)" in resumed.stdout
    assert states(session) == {1: "failed", 2: "ok", 3: "failed", 4: "pending", 5: "pending"}


def test_an_incomplete_session_gets_a_resume_hint() -> None:
    """No worker was left (its setup failed): the rest is pending, and the hint says how."""
    result = cloudtask("--pre=false", "true", input=b"1\n2\n")
    session = summary(result).id
    assert result.returncode == 1
    assert (
        f"session {session} incomplete: the rest is pending; "
        f"resume with: cloudtask --resume={session}"
    ) in result.stdout
