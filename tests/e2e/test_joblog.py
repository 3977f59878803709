"""--joblog writes GNU parallel's joblog format, one line per finished attempt."""

from __future__ import annotations

import resource
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.support.helpers import CLOUDTASK, cloudtask

HEADER = [
    "Seq",
    "Host",
    "Starttime",
    "JobRuntime",
    "Send",
    "Receive",
    "Exitval",
    "Signal",
    "Command",
]


def read(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_one_line_per_attempt_with_exit_values(tmp_path: Path) -> None:
    joblog = tmp_path / "joblog"
    result = cloudtask(f"--joblog={joblog}", "--retries=1", "sh", "-c", "exit $0", input=b"0\n3\n")
    assert result.returncode == 1

    rows = read(joblog)
    assert rows[0] == HEADER
    by_job: dict[str, list[str]] = {}
    for row in rows[1:]:
        assert len(row) == 9
        float(row[2]), float(row[3])  # epoch start and runtime are numbers
        by_job.setdefault(row[0], []).append(row[6])
    assert by_job == {"1": ["0"], "2": ["3", "3"]}  # job 2 failed, retried, failed again
    assert rows[1][8].startswith("sh -c 'exit $0' ")


def test_appending_to_an_existing_joblog_keeps_one_header(tmp_path: Path) -> None:
    joblog = tmp_path / "joblog"
    for _ in range(2):
        assert cloudtask(f"--joblog={joblog}", "true", input=b"a\n").returncode == 0
    rows = read(joblog)
    assert [row[0] for row in rows] == ["Seq", "1", "1"]


@pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel is not installed")
def test_gnu_parallel_reads_it_to_resume_failed_jobs(tmp_path: Path) -> None:
    joblog = tmp_path / "joblog"
    cloudtask(f"--joblog={joblog}", "sh", "-c", "exit $0", input=b"0\n1\n")
    # parallel --retry-failed reruns the failed commands recorded in a joblog.
    rerun = subprocess.run(
        ["parallel", "--retry-failed", "--joblog", str(joblog)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    rows = read(joblog)
    assert rows[-1][8] == "sh -c 'exit $0' 1", (rerun.stderr, rows)


def test_halt_stops_new_jobs_and_the_session_stays_resumable(tmp_path: Path) -> None:
    result = cloudtask(
        "--split=1", "--halt=fail=2", "false", input=b"".join(b"%d\n" % n for n in range(10))
    )
    assert result.returncode == 1
    assert "halted" in result.stdout and "--resume=" in result.stdout
    assert result.stdout.splitlines()[-1].endswith("8 pending, 0 timeouts, 2 errors, 0 OK")


def test_a_joblog_that_cannot_grow_costs_its_lines_not_the_run(tmp_path: Path) -> None:
    """A full disk, made real: the controller may write files of at most LIMIT
    bytes, and the joblog is already just under it. The store stays far below."""
    limit = 1 << 20
    joblog = tmp_path / "joblog"
    joblog.write_text("\t".join(HEADER) + "\n" + "#" * (limit - 200) + "\n")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [CLOUDTASK, f"--joblog={joblog}", "echo"],
        input=b"".join(b"%d\n" % n for n in range(1, 21)),
        capture_output=True,
        preexec_fn=small_files,
        timeout=60,
        check=False,
    )

    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "0/20 !OK - 0 pending, 0 timeouts, 0 errors, 20 OK" in done.stdout.decode()
    assert err.count("--joblog: cannot write") == 1, err
    assert "File too large" in err and "Traceback" not in err
    assert joblog.stat().st_size <= limit
