"""Open-file limits (SPEC section 12): raised at start as far as the split needs,
and a split that cannot fit is refused before anything runs.

Before, `ulimit -n 256` and `--split=300` failed 163 workers mid-run, marked a
job lost and ended with exit 2 and no summary.
"""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Callable

import pytest
from tests.support import helpers

from cloudtask.limits import files_needed


def with_open_files(soft: int, hard: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def run_limited(soft: int, hard: int, *args: str, jobs: int) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [helpers.CLOUDTASK, "--force", *args],
        input="".join(f"{n}\n" for n in range(1, jobs + 1)),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=helpers.work_dir(),
        preexec_fn=with_open_files(soft, hard),
        check=False,
    )
    helpers.assert_no_traceback(done)
    return done


def test_a_low_soft_limit_is_raised_and_every_worker_runs() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < files_needed(300):
        # The test raises nothing itself: the machine's hard limit must allow it.
        pytest.skip(f"the hard limit on open files ({hard}) is below what 300 workers need")
    result = run_limited(256, hard, "--split=300", "true", jobs=300)
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 300, 0, 0, 0, 300)
    assert helpers.split_shown(result.stdout) == 300
    assert "failed" not in result.stdout and not result.stderr


def test_a_split_that_cannot_fit_is_refused_before_anything_runs() -> None:
    result = run_limited(256, 256, "--split=300", "true", jobs=300)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("cloudtask: --split: 300 workers need about ")
    assert f"about {files_needed(300)} open files" in line
    assert "at most 256 (ulimit -Hn)" in line
    # Nothing ran, so no session was left behind.
    sessions = helpers.sessions_dir()
    assert not sessions.exists() or not any(sessions.iterdir())


def test_an_ordinary_split_under_a_low_limit_runs_as_before() -> None:
    result = run_limited(256, 256, "--split=10", "true", jobs=50)
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 50, 0, 0, 0, 50)


def test_a_resume_whose_split_cannot_fit_is_refused_and_the_session_kept() -> None:
    first = run_limited(256, 256, "--split=2", "--halt=fail=1", "false", jobs=300)
    assert first.returncode == 1
    session = helpers.summary(first).id
    result = run_limited(256, 256, f"--resume={session}", "--split=300", jobs=0)
    assert result.returncode == 2
    # The split is capped at the jobs left: 298 of the 300 (the halt left 2 failed).
    assert "--split: 298 workers need about" in result.stderr
    assert (helpers.sessions_dir() / str(session) / "store.sqlite").is_file()
    assert os.path.isdir(helpers.sessions_dir() / str(session))
