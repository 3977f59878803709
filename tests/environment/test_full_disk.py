"""The sessions directory's file system fills up mid-run (SPEC section 12).

A real tmpfs of 1 MiB holds the sessions; the jobs' output fills it. The run
must stop starting jobs, keep what is committed, say in one line which
directory is full, exit 1, and be resumable: once the tmpfs is made bigger,
`--resume` finishes with every job ok exactly once.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import helpers

from cloudtask.store.reader import StoreReader

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

JOBS = 120
# Each job prints 20 KB: 2.4 MB in all, more than the tmpfs holds.
JOB_SCRIPT = """#!/bin/sh
echo "start $1" >> {marks}
head -c 20000 /dev/zero | tr '\\0' y
echo
echo "end $1" >> {marks}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 1 MiB of the test's own, unmounted at the end."""
    mount = tmp_path / f"small-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "cloudtask-test", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def ok_attempts(store: Path) -> dict[int, int]:
    """job -> its number of ok attempts, read from the session's store."""
    with StoreReader.open(store.parent) as reader:
        return {
            job.id: sum(attempt.outcome == "ok" for attempt in attempts)
            for job, attempts in reader.jobs_with_attempts()
        }


def test_full_disk_stops_the_run_and_the_resume_finishes_every_job_once(
    small_disk: Path, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    script = tmp_path / "job.sh"
    script.write_text(JOB_SCRIPT.format(marks=marks))
    script.chmod(0o755)
    sessions = small_disk / "sessions"
    env = helpers.env_with(CLOUDTASK_SESSIONS=str(sessions))
    jobs = "".join(f"{n}\n" for n in range(1, JOBS + 1)).encode()

    first = helpers.run(
        [helpers.CLOUDTASK, "--force", "--split=2", str(script)], input=jobs, env=env, timeout=60
    )
    helpers.assert_no_traceback(first)
    assert first.returncode == 1, first.stderr
    summary = helpers.summary(first)
    assert summary.pending > 0 and summary.ok > 0, first.stdout[-500:]
    session = sessions / str(summary.id)
    # One line says which directory is full, and how to go on.
    errors = [line for line in first.stderr.splitlines() if "cannot write" in line]
    assert errors, first.stderr
    assert str(session) in errors[0]
    assert any(
        f"once there is space again, resume with: cloudtask --resume={summary.id}" in line
        for line in first.stdout.splitlines()
    ), first.stdout[-1000:]
    ok_before = {job for job, count in ok_attempts(session / "store.sqlite").items() if count}
    assert len(ok_before) == summary.ok
    ran_before = marks.read_text().splitlines()

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = helpers.run(
        [helpers.CLOUDTASK, f"--resume={summary.id}"], input=None, env=env, timeout=60
    )
    helpers.assert_no_traceback(again)
    assert again.returncode == 0, again.stderr
    assert helpers.counts(again) == (0, JOBS, 0, 0, 0, JOBS)
    # Every job ok exactly once, and no job that was ok before ran again.
    assert set(ok_attempts(session / "store.sqlite").values()) == {1}
    ran_after = marks.read_text().splitlines()[len(ran_before) :]
    assert not {f"start {job}" for job in ok_before} & set(ran_after)
