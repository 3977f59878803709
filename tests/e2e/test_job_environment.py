"""Every job sees its session, number, attempt and worker in its environment
(issue 13, item 6); --pre and --post see the session and the worker."""

from __future__ import annotations

from pathlib import Path

from tests.support.helpers import cloudtask, counts, outputs_by_job, summary

# Prints what the job sees; fails its first attempt at job 2 (a marker file says
# it was tried), so its retry shows attempt 2.
SHOW = """\
#!/bin/sh
echo "session=$CLOUDTASK_SESSION job=$CLOUDTASK_JOB" \
  "attempt=$CLOUDTASK_ATTEMPT worker=$CLOUDTASK_WORKER arg=$1"
if [ "$1" = b ] && mkdir "$(dirname "$0")/tried" 2>/dev/null; then exit 1; fi
"""


def test_each_job_sees_its_session_number_attempt_and_worker(tmp_path: Path) -> None:
    script = tmp_path / "show"
    script.write_text(SHOW)
    script.chmod(0o755)

    result = cloudtask("--split=1", "--retries=1", str(script), input=b"a\nb\nc\n")

    assert result.returncode == 0, result.stderr
    assert counts(result) == (0, 3, 0, 0, 0, 3)
    session = summary(result).id
    seen = outputs_by_job(result.stdout)
    assert seen[1] == [f"session={session} job=1 attempt=1 worker=local1 arg=a"]
    assert seen[2] == [
        f"session={session} job=2 attempt=1 worker=local1 arg=b",
        f"session={session} job=2 attempt=2 worker=local1 arg=b",
    ]
    assert seen[3] == [f"session={session} job=3 attempt=1 worker=local1 arg=c"]


def test_pre_and_post_see_the_session_and_the_worker(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    record = f'echo "$0 $CLOUDTASK_SESSION $CLOUDTASK_WORKER [$CLOUDTASK_JOB]" >> {marks}'

    result = cloudtask(
        "--split=1",
        f"--pre=sh -c '{record}' pre",
        f"--post=sh -c '{record}' post",
        "true",
        input=b"x\n",
    )

    assert result.returncode == 0, result.stderr
    session = summary(result).id
    assert marks.read_text().splitlines() == [
        f"pre {session} local1 []",
        f"post {session} local1 []",
    ]
