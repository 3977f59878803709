"""Ctrl-C and SIGTERM sent to a real controller process: nothing is left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.processes import live_processes_with

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


def wait_until(condition: Callable[[], bool], limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def marker() -> str:
    """A sleep duration unique to this test, to find its processes by command line."""
    return f"1000.{uuid.uuid4().int % 10**9}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_abort_stops_every_job_and_exits_1(signum: signal.Signals) -> None:
    sleep = marker()
    proc = start(["--split=2", "sh", "-c", f"sleep {sleep} & sleep {sleep}; true"], "a\nb\nc\n")
    wait_for_line(proc, r"local\d job 2 started")
    wait_until(lambda: len(live_processes_with(f"sleep {sleep}")) == 4)
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
    wait_until(lambda: len(live_processes_with(f"sleep {post}")) == 1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1, err
    assert "again" in err
    assert live_processes_with(f"sleep {sleep}") == []
    assert live_processes_with(f"sleep {post}") == []
