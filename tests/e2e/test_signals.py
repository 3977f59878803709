"""Ctrl-C and SIGTERM sent to a real controller process: nothing is left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tests.support.helpers import sessions_dir
from tests.support.hubserver import unreachable_url
from tests.support.processes import live_processes_with, stop_watchdogs, watchdogs_of
from tests.support.wait import wait_until

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))
SUMMARY = re.compile(r"^session \d+ \(\d+ seconds?\): (\d+)/(\d+) !OK - (\d+) pending, ")


def start(args: list[str], jobs: str) -> subprocess.Popen[str]:
    # A session of its own, as a shell gives a foreground job: killpg reaches the group.
    proc = subprocess.Popen(
        [CLOUDTASK, "--force", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(jobs)
    proc.stdin.close()
    proc.stdin = None  # communicate() would flush it
    return proc


def wait_for_line(proc: subprocess.Popen[str], pattern: str) -> None:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return
    raise AssertionError(f"no line matching {pattern!r} in {seen}")


def marker() -> str:
    """A sleep duration unique to this test, to find its processes by command line."""
    return f"1000.{uuid.uuid4().int % 10**9}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_abort_stops_every_job_and_exits_1(signum: signal.Signals) -> None:
    sleep = marker()
    proc = start(["--split=2", "sh", "-c", f"sleep {sleep} & sleep {sleep}; true"], "a\nb\nc\n")
    wait_for_line(proc, r"local\d job 2 started")
    wait_until(lambda: len(live_processes_with(f"sleep {sleep}")) == 4, 10, "4 sleeps running")
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C reaches the whole foreground group
    else:
        os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1, err
    assert "aborting" in err
    match = SUMMARY.match(out.splitlines()[-1])
    assert match, out
    assert match.groups() == ("3", "3", "3")  # nothing finished: all three pending
    assert live_processes_with(f"sleep {sleep}") == []


def test_second_ctrl_c_skips_the_cleanup_and_leaves_nothing_running() -> None:
    sleep, post = marker(), marker()
    proc = start(["--post", f"sleep {post}", "sleep"], f"{sleep}\n")
    wait_for_line(proc, r"job 1 started")
    os.killpg(proc.pid, signal.SIGINT)
    wait_until(lambda: len(live_processes_with(f"sleep {post}")) == 1, 10, "--post running")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1, err
    assert "again" in err
    assert live_processes_with(f"sleep {sleep}") == []
    assert live_processes_with(f"sleep {post}") == []


def test_sigterm_while_the_cloud_is_unreachable_ends_at_once_and_leaves_the_watchdog(
    tmp_path: Path,
) -> None:
    """The launch retries stop at the abort, and the controller does not wait on a
    cloud it cannot reach to settle what it launched: its watchdog does that."""
    sessions = sessions_dir()
    proc = start(
        ["--provider=hub", f"--hub-url={unreachable_url()}", "--hub-apikey=k", "echo"], "1\n"
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "trying again (1 of" in line:
                break
        signalled = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - signalled
        assert proc.returncode == 1, err
        assert took < 10, f"{took:.1f} s from SIGTERM to exit"
        assert "hub1 may still be running: the watchdog's sweep is under way" in err
        assert "aborted" in out
        assert watchdogs_of(sessions), "no watchdog left to settle the launch"
    finally:
        proc.kill()
        proc.wait()
        stop_watchdogs(sessions, grace=0)


def test_ctrl_c_as_a_big_session_starts_is_one_line_never_a_traceback(tmp_path: Path) -> None:
    """Found in review: a SIGINT after the session line but before the run's own
    handlers (counting 200,000 jobs takes a moment) ended in a ValueError
    traceback from the closed session log."""
    jobs = tmp_path / "jobs"
    jobs.write_bytes(b"".join(b"%d\n" % n for n in range(200_000)))
    out = tmp_path / "out"
    with jobs.open("rb") as stdin, out.open("wb") as output:
        proc = subprocess.Popen(
            [CLOUDTASK, "--force", "true"],
            stdin=stdin,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: b" jobs to run, " in out.read_bytes(), 60, "the first line")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 1
    finally:
        proc.kill()
        proc.wait()
    said = out.read_text()
    assert "Traceback" not in said and "Error" not in said, said
    assert "resume with: cloudtask --resume=1" in said, said
