#!/usr/bin/env python3
"""A session of a million jobs: peak memory and time to ingest and to resume.

    .venv/bin/python benchmarks/million_jobs.py [--jobs N] [--run SECONDS]

Three measured steps, each a real cloudtask process on the local provider:

- ingest: `cloudtask --split=2 true < FILE` reads every line into the session
  store; timed until the first job starts, then the run is let go on for
  `--run` seconds and stopped with SIGTERM (an abort, so the session stays
  resumable);
- resume: `cloudtask --resume=ID`, timed until its first job starts, then
  stopped the same way;
- kill and resume: the same resume SIGKILLed after `--run` seconds, then
  resumed once more, checking that no job was lost: every job that ran is ok
  or pending again.

Each row gives seconds to the first job, peak RSS of the controller (VmHWM,
read just before it is stopped) and the jobs started in the step. The
baseline row in the same run is GNU parallel (`parallel -j2 echo`) on the
same file, stopped with SIGTERM after as long.
Targets (issue 4): peak RSS under 300 MB; ingest and resume each under 30 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))
FIRST_JOB = re.compile(rb" job \d+ started: ")
RSS_TARGET_MB = 300
SECONDS_TARGET = 30.0


@dataclass
class Row:
    step: str
    to_first_job: float | None
    peak_rss_mb: float
    exit_status: int
    jobs_done: int | None = None


def run_until_first_job(
    argv: list[str],
    env: dict[str, str],
    stdin: Path | None,
    run_for: float,
    stop: signal.Signals,
    first_job: re.Pattern[bytes] = FIRST_JOB,
) -> Row:
    """Start the command, time it to its first job, let it run, stop it, measure it.

    Returns the row with how many output lines matched `first_job` as jobs_done.
    """
    started = time.monotonic()
    with open(stdin or os.devnull, "rb") as source:
        process = subprocess.Popen(
            argv, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
    assert process.stdout is not None
    first = None
    matched = 0
    for line in process.stdout:
        if first_job.search(line):
            first = time.monotonic() - started
            matched = 1
            break
    # Keep reading so the command never blocks on a full pipe.
    end = time.monotonic() + run_for
    while time.monotonic() < end and (line := process.stdout.readline()):
        matched += bool(first_job.search(line))
    peak = peak_rss_mb(process.pid)
    process.send_signal(stop)
    for line in process.stdout:
        matched += bool(first_job.search(line))
    process.wait()
    return Row("", first, peak, process.returncode, matched)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory since it exec'd (VmHWM), in MB.

    Read before it is stopped: a forked child's ru_maxrss would also count
    the memory of this script, from before the exec.
    """
    status = Path(f"/proc/{pid}/status").read_text()
    (kilobytes,) = re.findall(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(kilobytes) / 1024


def parallel_row(lines: Path, run_for: float) -> Row | None:
    """GNU parallel on the same input, stopped the same way."""
    if not shutil.which("parallel"):
        print("GNU parallel not installed: its row is skipped", file=sys.stderr)
        return None
    row = run_until_first_job(["parallel", "-j2", "echo"], dict(os.environ), lines, run_for,
                              signal.SIGTERM, re.compile(rb"^\d+$"))
    row.step = "GNU parallel, run, TERM"
    return row


def states(store: Path) -> dict[str, int]:
    db = sqlite3.connect(store)
    try:
        return dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--run", type=float, default=3.0,
                        help="seconds each step runs jobs before it is stopped")
    args = parser.parse_args()
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        lines = root / "jobs"
        with lines.open("w") as out:
            for start in range(1, args.jobs + 1, 10_000):
                out.write("".join(f"{n}\n" for n in range(start, min(start + 10_000,
                                                                       args.jobs + 1))))
        sessions = root / "sessions"
        env = {**os.environ, "CLOUDTASK_SESSIONS": str(sessions)}
        rows = []
        ingest = run_until_first_job([CLOUDTASK, "--force", "--split=2", "true"], env, lines,
                                     args.run, signal.SIGTERM)
        ingest.step = "ingest, run, abort"
        rows.append(ingest)
        (session,) = [p.name for p in sessions.iterdir() if p.name.isdigit()]
        store = sessions / session / "store.sqlite"
        total = sum(states(store).values())
        if total != args.jobs:
            failures.append(f"the store holds {total} jobs, not {args.jobs}")
        resume = run_until_first_job([CLOUDTASK, f"--resume={session}"], env, None, args.run,
                                     signal.SIGTERM)
        resume.step = "resume, run, abort"
        rows.append(resume)
        killed = run_until_first_job([CLOUDTASK, f"--resume={session}"], env, None, args.run,
                                     signal.SIGKILL)
        killed.step = "resume, run, SIGKILL"
        rows.append(killed)
        again = run_until_first_job([CLOUDTASK, f"--resume={session}"], env, None, args.run,
                                    signal.SIGTERM)
        again.step = "resume after SIGKILL"
        rows.append(again)
        final = states(store)
        if set(final) - {"ok", "pending"} or sum(final.values()) != args.jobs:
            failures.append(f"after the last abort the jobs are {final}: some are not ok or "
                            "pending")
        baseline = parallel_row(lines, args.run)
        if baseline is not None:
            rows.append(baseline)

    print(f"{args.jobs:,} jobs (`true N`), 2 local workers, each step runs {args.run:g} s")
    print(f"{'step':<26}{'to 1st job s':>14}{'peak RSS MB':>13}{'jobs started':>14}{'exit':>6}")
    for row in rows:
        first = "-" if row.to_first_job is None else f"{row.to_first_job:.1f}"
        done = "-" if row.jobs_done is None else f"{row.jobs_done:,}"
        print(f"{row.step:<26}{first:>14}{row.peak_rss_mb:>13.0f}{done:>14}{row.exit_status:>6}")
    print("(GNU parallel reads its input as it goes: it has no store to fill before the first "
          "job, and nothing to resume from)")
    for row in rows[:4]:
        if row.to_first_job is None or row.to_first_job > SECONDS_TARGET:
            failures.append(f"{row.step}: first job not within {SECONDS_TARGET:g} s")
        if row.peak_rss_mb > RSS_TARGET_MB:
            failures.append(f"{row.step}: peak RSS {row.peak_rss_mb:.0f} MB > {RSS_TARGET_MB}")
    for failure in failures:
        print(f"FAILED: {failure}")
    if not failures:
        print(f"targets met: every step under {SECONDS_TARGET:g} s and {RSS_TARGET_MB} MB")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
