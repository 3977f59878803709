"""SIGKILL the controller at random moments of a local run, resume, and check nothing is lost.

Each trial runs a session of JOBS marker jobs: each appends "start ID" to a log
file, sleeps a random 0.05-0.3 s and appends "end ID". The controller is killed
with SIGKILL (killpg on the session it was started in) at a random moment,
once or twice (the second time during a resume), then resumed until it exits 0.

Local jobs run in sessions of their own (setsid), so killing the controller's
group does not reach them: they are orphaned and finish by themselves. That is
what a killed controller leaves on this provider; the trial waits for them to
end before resuming, so a job never runs twice at the same time.

Checks, from the jobs' side and from the store:
- every job has at least one complete start/end pair, and its lines alternate;
- a job that ran more than once was running (started, not recorded ok) at a kill,
  and ran at most once more than the kills it was running at;
- the final summary is all OK, every job's state is ok, with exactly one ok
  attempt; the only attempts without an end are those cut off by a kill.

FAULT_SEED=N in the environment replays a run (every message names the seed).
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from tests.e2e.helpers import CLOUDTASK, cloudtask, counts, sessions_dir, summary

TRIALS = 20
JOBS = 12
SPLIT = 4
MAX_RESUMES = 3
BASE_SEED = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(10**9))


def job_script(tmp: Path) -> Path:
    script = tmp / "job.sh"
    script.write_text(
        f"""\
echo "start $1" >> {tmp}/jobs.log
sleep $2
echo "end $1" >> {tmp}/jobs.log
"""
    )
    return script


def live_with(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains text."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def running_jobs(session: int) -> set[int]:
    """Jobs the store has as running: started and not recorded as ended."""
    db = sqlite3.connect(sessions_dir() / str(session) / "store.sqlite")
    try:
        return {row[0] for row in db.execute("SELECT id FROM jobs WHERE state = 'running'")}
    finally:
        db.close()


def kill_at_random(args: list[str], jobs: bytes, delay: float, tmp: Path, seed: int) -> int:
    """Start cloudtask in its own session; once its session line is out, wait
    `delay` seconds and SIGKILL the group. The session id."""
    out_path = tmp / f"out.{time.monotonic_ns()}"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [CLOUDTASK, *args],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            start_new_session=True,
        )
    try:
        assert proc.stdin is not None
        proc.stdin.write(jobs)
        proc.stdin.close()
        deadline = time.monotonic() + 15
        while not (match := re.search(r"^session (\d+)[: ]", out_path.read_text(), re.M)):
            assert proc.poll() is None, f"seed {seed}: ended early:\n{out_path.read_text()}"
            assert time.monotonic() < deadline, f"seed {seed}: no session line"
            time.sleep(0.01)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    return int(match[1])


def wait_for_orphans(script: Path, seed: int, limit: float = 10) -> None:
    """The killed controller's jobs run on, orphaned: wait until they end."""
    deadline = time.monotonic() + limit
    while live_with(str(script)):
        assert time.monotonic() < deadline, f"seed {seed}: orphaned jobs still running"
        time.sleep(0.02)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_a_random_moment_then_resume_loses_nothing(trial: int, tmp_path: Path) -> None:
    seed = BASE_SEED + trial
    rng = random.Random(seed)
    why = f"seed {seed} (FAULT_SEED={BASE_SEED}, trial {trial})"
    script = job_script(tmp_path)
    jobs = "".join(f"{n} {rng.uniform(0.05, 0.3):.3f}\n" for n in range(1, JOBS + 1)).encode()
    # About JOBS * 0.175 / SPLIT seconds of jobs: kill anywhere in it, or just after.
    kills = rng.choice([1, 1, 2])
    running_at_kill: list[set[int]] = []

    args = ["--force", f"--split={SPLIT}", "sh", str(script)]
    session = kill_at_random(args, jobs, rng.uniform(0, 0.7), tmp_path, seed)
    wait_for_orphans(script, seed)
    running_at_kill.append(running_jobs(session))
    resume = [f"--resume={session}"]
    for _ in range(kills - 1):
        assert kill_at_random(resume, b"", rng.uniform(0, 0.5), tmp_path, seed) == session, why
        wait_for_orphans(script, seed)
        running_at_kill.append(running_jobs(session))

    for _ in range(MAX_RESUMES):
        result = cloudtask(*resume)
        if result.returncode == 0:
            break
    assert result.returncode == 0, f"{why}: {result.stdout}\n{result.stderr}"
    assert counts(result) == (0, JOBS, 0, 0, 0, JOBS), why
    assert summary(result).id == session, why
    wait_for_orphans(script, seed)

    log = (tmp_path / "jobs.log").read_text().splitlines()
    by_job: dict[int, list[str]] = {n: [] for n in range(1, JOBS + 1)}
    for line in log:
        what, job = line.split()
        by_job[int(job)].append(what)
    may_rerun = Counter(job for running in running_at_kill for job in running)
    for job, seen in by_job.items():
        starts = seen.count("start")
        assert starts >= 1 and seen == ["start", "end"] * starts, f"{why}: job {job}: {seen}"
        # A rerun only for a job cut off by a kill, and once per such kill at most.
        assert starts <= 1 + may_rerun[job], (
            f"{why}: job {job} ran {starts} times; running at the kills: {running_at_kill}"
        )

    db = sqlite3.connect(sessions_dir() / str(session) / "store.sqlite")
    try:
        states = dict(db.execute("SELECT id, state FROM jobs"))
        ok_attempts = Counter(
            job for (job,) in db.execute("SELECT job FROM attempts WHERE outcome = 'ok'")
        )
        open_attempts = Counter(
            job for (job,) in db.execute("SELECT job FROM attempts WHERE ended IS NULL")
        )
        bad = db.execute(
            "SELECT job, outcome FROM attempts WHERE ended IS NOT NULL AND outcome != 'ok'"
        ).fetchall()
    finally:
        db.close()
    assert states == dict.fromkeys(range(1, JOBS + 1), "ok"), why
    assert ok_attempts == Counter(range(1, JOBS + 1)), why
    assert bad == [], why
    # An attempt without an end is one a kill cut off, and nothing else.
    assert open_attempts == may_rerun, f"{why}: {open_attempts} vs {running_at_kill}"
