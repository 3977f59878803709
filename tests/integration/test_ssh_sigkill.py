"""The controller SIGKILLed at random moments of a run on SSH test hosts, then resumed.

Each trial runs JOBS jobs on the three hosts. A job appends "start ID" and
"end ID" to a marks file on the worker's side as it begins and ends, sleeping
a random 0.05-0.3 s in between. The controller's group is SIGKILLed at a random
moment from its session line on (while it connects and installs its key, runs
jobs, or cleans up), once or twice, then resumed until it exits 0.

A killed controller's connections close with it, so the wrapper on each host
kills the jobs that were running; the trial checks that no job process is left
before it resumes. Afterwards, from the workers' side and from the store:
every job ended at least once, and ran again only if it was running at a kill;
every job is ok with one ok attempt, and the attempts cut off are exactly the
jobs running at the kills; root's authorized_keys is as it was.

FAULT_SEED=N in the environment replays a run (every message names the seed).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from tests.support.helpers import counts, summary
from tests.support.hosts import TestHosts
from tests.support.sigkill import check_marks, check_store, kill_at_random, running_jobs
from tests.support.ssh import (
    KeysSnapshot,
    assert_no_job_processes,
    cloudtask,
    env_for,
)

TRIALS = 20
JOBS = 12
MAX_RESUMES = 3
BASE_SEED = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(10**9))

JOB = """\
#!/bin/sh
echo "start $1" >> "$(dirname "$0")/marks"
sleep "$2"
echo "end $1" >> "$(dirname "$0")/marks"
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_a_random_moment_then_resume_loses_nothing(
    trial: int, hosts: TestHosts, tmp_path: Path, home: Path, authorized_keys: KeysSnapshot
) -> None:
    seed = BASE_SEED + trial
    rng = random.Random(seed)
    why = f"seed {seed} (FAULT_SEED={BASE_SEED}, trial {trial})"
    script = tmp_path / "job.sh"
    script.write_text(JOB)
    script.chmod(0o755)
    jobs = "".join(f"{n} {rng.uniform(0.05, 0.3):.3f}\n" for n in range(1, JOBS + 1)).encode()
    env = env_for(home)
    # Connecting takes a few tenths of a second, then about JOBS * 0.175 / 3 s of
    # jobs: kill anywhere in it, or just after.
    kills = rng.choice([1, 1, 2])
    running_at_kill: list[set[int]] = []

    args = [
        "--force",
        f"--workers={hosts.workers_file()}",
        f"--ssh-identity={hosts.client_key}",
        str(script),
    ]
    session = kill_at_random(args, jobs, rng.uniform(0, 1.5), tmp_path, why, env)
    running_at_kill.append(running_jobs(session))
    assert_no_job_processes(hosts, str(script))
    resume = [f"--resume={session}"]
    for _ in range(kills - 1):
        again = kill_at_random(resume, b"", rng.uniform(0, 1.2), tmp_path, why, env)
        assert again == session, why
        running_at_kill.append(running_jobs(session))
        assert_no_job_processes(hosts, str(script))

    for _ in range(MAX_RESUMES):
        result = cloudtask(home, *resume)
        if result.returncode == 0:
            break
    assert result.returncode == 0, f"{why}: {result.stdout}\n{result.stderr}"
    assert counts(result) == (0, JOBS, 0, 0, 0, JOBS), why
    assert summary(result).id == session, why

    assert_no_job_processes(hosts, str(script))
    marks = (tmp_path / "marks").read_text().splitlines()
    check_marks(marks, JOBS, running_at_kill, why, cut=True)
    check_store(session, JOBS, running_at_kill, why)
    # The keys the killed runs left were removed by the resume, and its own too.
    authorized_keys.assert_unchanged()
