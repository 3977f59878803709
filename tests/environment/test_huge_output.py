"""Job output of any size or shape, end to end (SPEC sections 4, 12 and 15).

The installed `cloudtask` runs jobs on the local provider that print one
100 MB line, binary bytes and carriage-return redraws. The run must be ok, the
controller's peak RSS bounded, every byte in the worker log (a huge line in
pieces), and each attempt's stored tail a few KiB.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.helpers import CLOUDTASK, sessions_dir, summary, work_dir

from cloudtask.output import LINE_LIMIT, TAIL_BYTES, TAIL_LINES
from cloudtask.store.reader import StoreReader

MB = 1_000_000
PEAK_RSS = 100 * 2**20  # the controller takes about 50 MiB; the old splitter took 247 MB
TIMEOUT = 60

JOBS = r"""
case "$1" in
huge) head -c 100000000 /dev/zero | tr '\0' x ;;
binary)  # short lines, then one of 200 kB
    head -c 20000000 /dev/urandom
    head -c 200000 /dev/urandom | tr -d '\n\r'
    printf '\0\377\376\n' ;;
binary-no-newline) head -c 20000000 /dev/urandom | tr -d '\n\r' ;;
redraws) yes '42%' | head -c 50000000 | tr '\n' '\r'; echo done ;;
esac
"""


@pytest.fixture(autouse=True)
def no_big_files_kept() -> Iterator[None]:
    """The session's logs hold all the output (100 MB and more): not kept in tmp."""
    yield
    shutil.rmtree(sessions_dir(), ignore_errors=True)
    (work_dir() / "stdout").unlink(missing_ok=True)


# Runs argv[2:] and writes its peak RSS (KiB) to the file argv[1]. A process
# started by this test would count the test's own memory in its peak: Linux
# keeps the high-water mark of the memory it had before exec. This small
# process is what the controller is forked from instead.
MEASURE = """
import os, sys
pid = os.spawnvp(os.P_NOWAIT, sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(jobs: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run cloudtask on the jobs (words for JOBS); the result and its peak RSS in bytes.

    Standard output goes to a file (it carries all the output, as the user's
    terminal would); the result holds only its last lines. The peak RSS is the
    largest of the controller and its job processes (os.wait4's).
    """
    script = work_dir() / "jobs.sh"
    script.write_text(JOBS)
    out_path, err_path, rss_path = (work_dir() / name for name in ("stdout", "stderr", "rss"))
    argv = [str(CLOUDTASK), "--split=1", "sh", str(script)]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", MEASURE, str(rss_path), *argv],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            cwd=work_dir(),
            start_new_session=True,  # a process group to kill on timeout
        )
    assert process.stdin is not None
    process.stdin.write("".join(f"{job}\n" for job in jobs).encode())
    process.stdin.close()
    try:
        process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"still running after {TIMEOUT} s") from None
    with out_path.open("rb") as out:
        out.seek(max(0, out_path.stat().st_size - 4096))
        last = out.read().decode("utf-8", "replace")
    out_path.unlink()
    result = subprocess.CompletedProcess(
        argv, process.returncode, last, err_path.read_text(errors="replace")
    )
    return result, int(rss_path.read_text()) * 1024  # Linux counts it in KiB


def session_path() -> Path:
    (session,) = (entry for entry in sessions_dir().iterdir() if entry.name.isdigit())
    return session


def stored_tails(session: Path) -> list[str]:
    with StoreReader.open(session) as store:
        return [attempt.tail for attempt in store.attempts()]


def job_output_in_log(session: Path) -> tuple[int, int, int]:
    """The job output lines in the worker log: how many, their x bytes, the longest (bytes)."""
    lines = xs = longest = 0
    with (session / "workers" / "local1").open("rb") as log:
        for line in log:
            if line.startswith(b"== "):  # the job's start and end
                continue
            lines += 1
            xs += line.count(b"x")
            longest = max(longest, len(line) - 1)
    return lines, xs, longest


def check_ok(result: subprocess.CompletedProcess[str], jobs: int) -> None:
    assert result.returncode == 0, result.stderr
    done = summary(result)
    assert (done.ok, done.total) == (jobs, jobs), result.stdout[-500:]
    assert "Traceback" not in result.stderr


def test_one_100_mb_line_costs_bounded_memory_and_reaches_the_log_whole() -> None:
    result, peak = run_measured(["huge"])
    check_ok(result, 1)
    assert peak < PEAK_RSS, f"controller peak RSS {peak / 2**20:.0f} MiB"
    session = session_path()
    (tail,) = stored_tails(session)
    assert len(tail.encode()) <= TAIL_BYTES
    assert tail.startswith("xxx") and "bytes cut" in tail
    lines, xs, longest = job_output_in_log(session)
    assert xs == 100 * MB  # every byte, in pieces
    assert (lines, longest) == (-(-100 * MB // LINE_LIMIT), LINE_LIMIT)


@pytest.mark.parametrize("job", ["binary", "binary-no-newline", "redraws"])
def test_binary_bytes_and_redraws_cost_bounded_memory(job: str) -> None:
    result, peak = run_measured([job])
    check_ok(result, 1)
    assert peak < PEAK_RSS, f"controller peak RSS {peak / 2**20:.0f} MiB"
    session = session_path()
    (tail,) = stored_tails(session)
    assert 0 < len(tail.encode()) <= TAIL_BYTES
    assert len(tail.split("\n")) <= TAIL_LINES
    lines, _, longest = job_output_in_log(session)
    assert longest <= 4 * LINE_LIMIT  # an invalid byte is 3 bytes of U+FFFD in the log
    if job == "redraws":
        assert tail == "done"
        assert lines == 1  # "done"
    if job == "binary":
        assert tail.endswith("\x00\ufffd\ufffd")
