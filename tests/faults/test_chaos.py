"""Chaos, small: random faults while a session runs on SSH test hosts and launched workers.

The suite's version of benchmarks/chaos.py (tests/chaos.py has the fault
driver and the checks): each round runs a session of a few jobs on two
--workers test hosts and two workers launched on the test cloud, kills hosts
and instances, cuts links, SIGKILLs the controller or sends it Ctrl-C twice,
gives it broken --report hooks, resumes it until it finishes, then checks the
store, the jobs' marks, the cloud, the processes and root's authorized_keys.

FAULT_SEED=N in the environment replays a run (every message names the seed);
as timing decides which faults find a target, a replay is close, not exact.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from tests.chaos import KNOWN_BUGS, STATE_RUNNING, Settings, run_round, table
from tests.e2e import helpers
from tests.hosts import TestHosts, unavailable_reason
from tests.integration.ssh_support import CLOUDTASK, KeysSnapshot, env_for, wait_until

ROUNDS = 2
BASE_SEED = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(10**9))


@pytest.mark.timeout(150)
@pytest.mark.parametrize("number", range(ROUNDS))
def test_random_faults_lose_no_job_and_leave_nothing_behind(number: int, tmp_path: Path) -> None:
    if (reason := unavailable_reason()) is not None:
        pytest.skip(f"no test hosts: {reason}")
    seed = BASE_SEED + number
    settings = Settings(
        seed=seed,
        jobs=12,
        job_seconds=(0.1, 0.8),
        fault_gap=(0.3, 1.5),
        fault_seconds=12.0,
        max_runs=10,
        run_timeout=45.0,
        settle_seconds=15.0,
    )
    result = run_round(settings, tmp_path)
    why = f"seed {seed} (FAULT_SEED={BASE_SEED}, round {number}; files in {tmp_path})"
    unknown = result.unknown_problems()
    assert unknown == [], f"{why}:\n" + "\n".join(result.problems) + "\n" + table([result])
    assert sum(result.faults.values()) > 0, f"{why}: no fault was injected"
    if result.known_bugs():
        # Each has a strict xfail reproducer below; the rest of the round was checked.
        pytest.xfail(f"{why}: known cloudtask bug: {'; '.join(result.known_bugs())}")
    assert result.finished and result.jobs_ok == settings.jobs, why
    assert result.leaked == 0 and result.keys_restored and not result.processes_left, why


@pytest.mark.timeout(60)
@pytest.mark.xfail(strict=True, reason=f"cloudtask bug: {KNOWN_BUGS[STATE_RUNNING]}")
def test_a_session_killed_after_its_last_job_reads_finished_after_a_resume(
    tmp_path: Path,
) -> None:
    """The deterministic case of the bug chaos finds: SIGKILL during --post, all jobs ok."""
    if (reason := unavailable_reason()) is not None:
        pytest.skip(f"no test hosts: {reason}")
    keys = KeysSnapshot.take()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    env = env_for(home)
    with TestHosts(1) as hosts:
        argv = [
            CLOUDTASK,
            "--force",
            f"--workers={hosts[0].login}",
            f"--ssh-identity={hosts.client_key}",
            "--post=sleep 5",
            "true",
        ]
        out = tmp_path / "out"
        with out.open("wb") as output:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        try:
            assert process.stdin is not None
            process.stdin.write(b"1\n2\n")
            process.stdin.close()
            wait_until(lambda: " post: sleep 5" in out.read_text(), 30, "--post started")
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        resumed = helpers.run([CLOUDTASK, "--resume=1"], env=env, timeout=30)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "is finished: nothing to run" in resumed.stdout
    keys.restore()
    db = sqlite3.connect(helpers.sessions_dir() / "1" / "store.sqlite")
    try:
        (state,) = db.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
    finally:
        db.close()
    assert state == "finished"
