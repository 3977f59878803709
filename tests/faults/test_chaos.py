"""Chaos, small: random faults while a session runs on SSH test hosts and launched workers.

The suite's version of benchmarks/chaos.py (tests/support/chaos.py has the fault
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
import subprocess
import time
from pathlib import Path

import pytest
from tests.support import helpers
from tests.support.chaos import OPEN_LAUNCH, Settings, run_round, table
from tests.support.hosts import TestHosts, unavailable_reason
from tests.support.ssh import CLOUDTASK, KeysSnapshot, env_for
from tests.support.wait import wait_until

from cloudtask.store import meta
from cloudtask.store.reader import StoreReader

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
        settle_seconds=20.0,
    )
    result = run_round(settings, tmp_path)
    why = f"seed {seed} (FAULT_SEED={BASE_SEED}, round {number}; files in {tmp_path})"
    problems = result.problems
    if result.leaked == 0:  # nothing left on the cloud: the record of a cut-off launch may wait
        problems = [problem for problem in problems if OPEN_LAUNCH not in problem]
    assert problems == [], f"{why}:\n" + "\n".join(result.problems) + "\n" + table([result])
    assert sum(result.faults.values()) > 0, f"{why}: no fault was injected"
    assert result.finished and result.jobs_ok == settings.jobs, why
    assert result.leaked == 0 and result.keys_restored and not result.processes_left, why


@pytest.mark.timeout(60)
def test_a_session_killed_after_its_last_job_reads_finished_after_a_resume(
    tmp_path: Path,
) -> None:
    """The deterministic case of a bug chaos found (the session stayed 'running'):
    SIGKILL during --post, when every job is ok, then a resume with nothing to run."""
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
    with StoreReader.open(helpers.sessions_dir() / "1") as store:
        assert store.meta(meta.STATE) == "finished"


@pytest.mark.timeout(60)
def test_a_ctrl_c_just_after_the_summary_line_exits_1_not_by_sigint(tmp_path: Path) -> None:
    """The case chaos found: SIGINT at the very end of a run (local, one job) ended
    the controller by SIGINT (exit -2), at times with a KeyboardInterrupt traceback."""
    statuses = []
    for _ in range(20):  # the window is a few milliseconds: most tries hit it
        out = tmp_path / "out"
        with out.open("wb") as output:
            process = subprocess.Popen(
                [CLOUDTASK, "true"], stdin=subprocess.PIPE, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(b"1\n")
        process.stdin.close()
        deadline = time.monotonic() + 20
        while process.poll() is None and " !OK - " not in out.read_text():
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.0005)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        statuses.append(process.wait(timeout=20))
        assert "Traceback" not in out.read_text()
    assert set(statuses) <= {0, 1}, statuses
