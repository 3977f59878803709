"""SIGKILL the controller at a random moment, resume, and check that nothing was lost.

Shared by the fault tests on local workers (tests/faults) and on SSH test
hosts (tests/integration). Their jobs append "start ID" and "end ID" to a
marks file as they begin and end, on the worker's side.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from tests.support.helpers import CLOUDTASK, sessions_dir

from cloudtask.scheduler import JobState
from cloudtask.store.check import check_finished
from cloudtask.store.reader import StoreReader


def kill_at_random(
    args: list[str],
    jobs: bytes,
    delay: float,
    cwd: Path,
    why: str,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start cloudtask in a session of its own; once it prints its session line,
    wait `delay` seconds and SIGKILL its group. Returns the session id."""
    out_path = cwd / f"out.{time.monotonic_ns()}"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [CLOUDTASK, *args],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
    try:
        assert proc.stdin is not None
        proc.stdin.write(jobs)
        proc.stdin.close()
        deadline = time.monotonic() + 15
        while not (match := re.search(r"^session (\d+)[: ]", out_path.read_text(), re.M)):
            assert proc.poll() is None, f"{why}: ended early:\n{out_path.read_text()}"
            assert time.monotonic() < deadline, f"{why}: no session line"
            time.sleep(0.01)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    return int(match[1])


def running_jobs(session: int) -> set[int]:
    """Jobs the store has as running: started and not recorded as ended."""
    with StoreReader.open(sessions_dir() / str(session)) as store:
        return {job.id for job in store.jobs(JobState.RUNNING)}


def check_marks(
    marks: list[str], jobs: int, running_at_kill: list[set[int]], why: str, *, cut: bool
) -> Counter[int]:
    """Check the jobs' own record; returns how many times each job started.

    Every job ended at least once. A job ran again only if it was running at
    a kill, at most once more per such kill. `cut`: a kill also kills the jobs
    running then (SSH workers), so a start may have no end; otherwise every
    start has its end, in order.
    """
    by_job: dict[int, list[str]] = {n: [] for n in range(1, jobs + 1)}
    for line in marks:
        what, job = line.split()[:2]
        by_job[int(job)].append(what)
    may_rerun = Counter(job for running in running_at_kill for job in running)
    starts: Counter[int] = Counter()
    for job, seen in by_job.items():
        starts[job] = seen.count("start")
        assert "end" in seen, f"{why}: job {job} never ended: {seen}"
        if cut:
            # Every end follows its own start; a start alone is a job killed with the controller.
            for index, what in enumerate(seen):
                if what == "end":
                    assert index and seen[index - 1] == "start", f"{why}: job {job}: {seen}"
        else:
            assert seen == ["start", "end"] * starts[job], f"{why}: job {job}: {seen}"
        assert starts[job] <= 1 + may_rerun[job], (
            f"{why}: job {job} ran {starts[job]} times; running at the kills: {running_at_kill}"
        )
    return starts


def check_store(session: int, jobs: int, running_at_kill: list[set[int]], why: str) -> None:
    """The finished session's store adds up (cloudtask.store.check): every job ok with
    one ok attempt; the only other attempts are those a kill cut off, closed as lost."""
    cut_off = [job for running in running_at_kill for job in running]
    with StoreReader.open(sessions_dir() / str(session)) as store:
        problems = check_finished(store, jobs, cut_off=cut_off).problems
    assert problems == [], f"{why}: " + "; ".join(problems)
