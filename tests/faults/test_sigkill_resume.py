"""SIGKILL the controller at random moments of a local run, resume, and check nothing is lost.

Each trial runs a session of JOBS marker jobs: each appends "start ID" to a log
file, sleeps a random 0.05-0.3 s and appends "end ID". The controller is killed
with SIGKILL (killpg on the session it was started in) at a random moment,
once or twice (the second time during a resume), then resumed until it exits 0.

Local jobs run in sessions of their own (setsid), so killing the controller's
group does not reach them: they are orphaned. The next run of the session
(a resume) finds them by the run tag in their environment and kills them
before it starts any job, so a job never runs twice at the same time.

Checks, from the jobs' side and from the store:
- every job ended at least once, and each end follows its own start (a start
  alone is a job killed as a leftover);
- a job that ran more than once was running (started, not recorded ok) at a kill,
  and ran at most once more than the kills it was running at;
- the final summary is all OK, every job's state is ok, with exactly one ok
  attempt; the only attempts without an end are those cut off by a kill.

FAULT_SEED=N in the environment replays a run (every message names the seed).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from tests.support.helpers import cloudtask, counts, summary
from tests.support.sigkill import check_marks, check_store, kill_at_random, running_jobs

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
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_for_orphans(script: Path, seed: int, limit: float = 10) -> None:
    """Wait until no job process is left (zombies are not counted)."""
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
    session = kill_at_random(args, jobs, rng.uniform(0, 0.7), tmp_path, why)
    running_at_kill.append(running_jobs(session))
    resume = [f"--resume={session}"]
    for _ in range(kills - 1):
        assert kill_at_random(resume, b"", rng.uniform(0, 0.5), tmp_path, why) == session, why
        running_at_kill.append(running_jobs(session))

    for _ in range(MAX_RESUMES):
        result = cloudtask(*resume)
        if result.returncode == 0:
            break
    assert result.returncode == 0, f"{why}: {result.stdout}\n{result.stderr}"
    assert counts(result) == (0, JOBS, 0, 0, 0, JOBS), why
    assert summary(result).id == session, why
    # Nothing is left running: the resume stopped what the kills orphaned.
    wait_for_orphans(script, seed, limit=2)

    marks = (tmp_path / "jobs.log").read_text().splitlines()
    check_marks(marks, JOBS, running_at_kill, why, cut=True)
    check_store(session, JOBS, running_at_kill, why)
