#!/usr/bin/env python3
"""A session of a million jobs: peak memory, time to ingest, to run, and to resume after SIGKILL.

    .venv/bin/python benchmarks/million_jobs.py [--jobs N] [--providers local,ssh]
        [--split 2] [--hosts 4] [--ssh-jobs N] [--parallel-jobs N] [--parallel-ssh-jobs N]
        [--timeout SECONDS]
    .venv/bin/python benchmarks/million_jobs.py --quick [--jobs N] [--run SECONDS]

Full sessions (issue 7), one per provider: `--split=N` on the local provider,
and `--workers=FILE --ssh-identity=KEY` on `--hosts` SSH test hosts
(tests/support/hosts.py; needs root). Each session runs --jobs `true N` jobs
(--ssh-jobs on SSH, if given) to the end, in two real cloudtask processes:

- ingest: `cloudtask true < FILE` reads every line into the session store;
  timed to its first job, then run until half the jobs are ok, when its
  process group is SIGKILLed;
- resume: `cloudtask --resume=ID`, timed to its first job, then run to the
  end.

Each row gives seconds to the first job, wall seconds, jobs run, their rate
(after the first job), controller CPU per job (user + system of the
controller's process tree, so local jobs count, remote ones not) and the
controller's peak RSS (VmHWM, sampled every 0.1 s, the last sample before it
ends). After each session the store (opened read-only) must show every job
ok, exactly one ok attempt per job, every attempt the kill cut off closed as
lost, and no more jobs run twice than were running at the kill.

GNU parallel is the baseline on the same input: `parallel -jN true` on its
first --parallel-jobs lines, and `parallel -S` (--controlmaster, one job at a
time per host) on the same hosts with the first --parallel-ssh-jobs lines; it
keeps no record of its jobs and has nothing to resume from.

--quick (issue 4): a few seconds per step on the local provider: ingest then
SIGTERM, resume then SIGTERM, resume then SIGKILL, resume once more then
SIGTERM; every job must be ok or pending after it.

Targets: peak RSS under 300 MB; ingest and resume each under 30 s to the
first job. Exits 1 if a target or a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.full_session import (
    AUTHORIZED_KEYS,
    CLOUDTASK,
    RSS_TARGET_MB,
    SECONDS_TARGET,
    SESSION_LINE,
    Session,
    Step,
    full_session,
    peak_rss_mb,
    print_full_table,
    remove_lines,
    run_measured,
    ssh_env,
    ssh_options,
    store_states,
    write_lines,
)
from tests.support.hosts import TestHosts, unavailable_reason


def head(lines: Path, count: int, path: Path) -> Path:
    """The first count lines of lines, in path."""
    with lines.open("rb") as source, path.open("wb") as out:
        for _, line in zip(range(count), source, strict=False):
            out.write(line)
    return path


# --- GNU parallel, the baseline -----------------------------------------------------------


def run_parallel(
    name: str, options: Sequence[str], lines: Path, env: Mapping[str, str], timeout: float
) -> Step:
    """GNU parallel running `true N` for each line; its jobs are counted in its joblog."""
    joblog = lines.with_name(lines.name + ".joblog")
    step = run_measured(
        ["parallel", "--will-cite", "--joblog", str(joblog), *options, "true"],
        env,
        lines,
        timeout,
        first_job=re.compile(rb"$^"),  # `true` prints nothing
        job_ok=re.compile(rb"$^"),
    )
    step.provider, step.step = name, "run"
    with contextlib.suppress(FileNotFoundError), joblog.open() as log:
        # Seq Host Starttime JobRuntime Send Receive Exitval Signal Command
        step.jobs = sum(line.split("\t")[6:8] == ["0", "0"] for line in log)
    return step


def parallel_local(lines: Path, count: int, split: int, scratch: Path, timeout: float) -> Step:
    subset = head(lines, count, scratch / "parallel-lines")
    return run_parallel(f"GNU parallel -j{split}", [f"-j{split}"], subset, os.environ, timeout)


def parallel_ssh(
    lines: Path, count: int, hosts: TestHosts, env: Mapping[str, str], scratch: Path, timeout: float
) -> Step:
    """parallel -S with --controlmaster, one job at a time per host."""
    # GNU parallel runs `--ssh` as one word when it starts a control master, so
    # the client options go into a wrapper script.
    wrapper = scratch / "ssh-wrapper"
    wrapper.write_text(f'#!/bin/sh\nexec ssh {shlex.join(hosts.ssh_options())} "$@"\n')
    wrapper.chmod(0o755)
    logins = ",".join(f"1/{host.login}" for host in hosts)
    options = ["--controlmaster", "--ssh", str(wrapper), "-S", logins]
    subset = head(lines, count, scratch / "parallel-ssh-lines")
    return run_parallel(f"GNU parallel -S x{len(hosts)} -M", options, subset, env, timeout)


def baseline_problems(step: Step, count: int) -> list[str]:
    name = f"{step.provider}, {step.step}"
    if step.problem:
        return [f"{name}: {step.problem}"]
    if step.exit_status != 0 or step.jobs != count:
        return [f"{name}: exit {step.exit_status}, {step.jobs} of {count} jobs"]
    return []


# --- --quick: a few seconds per step (issue 4) ----------------------------------------------


def quick(jobs: int, run_for: float) -> int:
    failures: list[str] = []
    rows: list[Step] = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        lines = write_lines(root / "jobs", jobs)
        sessions = root / "sessions"
        env = {**os.environ, "CLOUDTASK_SESSIONS": str(sessions)}

        def stopped(name: str, argv: list[str], stdin: Path | None, stop: signal.Signals) -> Step:
            step = run_for_a_while(argv, env, stdin, run_for, stop)
            step.step = name
            rows.append(step)
            return step

        ingest = stopped(
            "ingest, run, abort", [CLOUDTASK, "--force", "--split=2", "true"], lines, signal.SIGTERM
        )
        if ingest.session is None:
            print(f"FAILED: no session: {ingest.output_tail}")
            return 1
        store = sessions / str(ingest.session) / "store.sqlite"
        total = sum(store_states(store).values())
        if total != jobs:
            failures.append(f"the store holds {total} jobs, not {jobs}")
        resume = [CLOUDTASK, f"--resume={ingest.session}"]
        stopped("resume, run, abort", resume, None, signal.SIGTERM)
        stopped("resume, run, SIGKILL", resume, None, signal.SIGKILL)
        stopped("resume after SIGKILL", resume, None, signal.SIGTERM)
        final = store_states(store)
        if set(final) - {"ok", "pending"} or sum(final.values()) != jobs:
            failures.append(
                f"after the last abort the jobs are {final}: some are not ok or pending"
            )
        if shutil.which("parallel"):
            baseline = run_for_a_while(
                ["parallel", "-j2", "echo"], os.environ, lines, run_for, signal.SIGTERM, rb"^\d+$"
            )
            baseline.step = "GNU parallel, run, TERM"
            rows.append(baseline)
        else:
            print("GNU parallel not installed: its row is skipped", file=sys.stderr)

    print(f"{jobs:,} jobs (`true N`), 2 local workers, each step runs {run_for:g} s")
    print(f"{'step':<26}{'to 1st job s':>14}{'peak RSS MB':>13}{'jobs started':>14}{'exit':>6}")
    for step in rows:
        first = "-" if step.to_first_job is None else f"{step.to_first_job:.1f}"
        print(
            f"{step.step:<26}{first:>14}{step.peak_rss_mb:>13.0f}{step.jobs:>14,}"
            f"{step.exit_status!s:>6}"
        )
    print(
        "(GNU parallel reads its input as it goes: it has no store to fill before the first "
        "job, and nothing to resume from)"
    )
    for step in rows[:4]:
        if step.to_first_job is None or step.to_first_job > SECONDS_TARGET:
            failures.append(f"{step.step}: first job not within {SECONDS_TARGET:g} s")
        if step.peak_rss_mb > RSS_TARGET_MB:
            failures.append(f"{step.step}: peak RSS {step.peak_rss_mb:.0f} MB > {RSS_TARGET_MB}")
    for failure in failures:
        print(f"FAILED: {failure}")
    if not failures:
        print(f"targets met: every step under {SECONDS_TARGET:g} s and {RSS_TARGET_MB} MB")
    return 1 if failures else 0


def run_for_a_while(
    argv: list[str],
    env: Mapping[str, str],
    stdin: Path | None,
    run_for: float,
    stop: signal.Signals,
    started_line: bytes = rb" job \d+ started: ",
) -> Step:
    """Start the command, time it to its first job, let it run run_for seconds, stop it.

    The step's jobs are the lines matching started_line; its peak RSS is read
    just before the signal.
    """
    step = Step("local x2", "")
    first_job = re.compile(started_line)
    started = time.monotonic()
    with open(stdin or os.devnull, "rb") as source:
        process = subprocess.Popen(
            argv, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(env)
        )
    assert process.stdout is not None
    for line in process.stdout:
        if step.session is None and (match := SESSION_LINE.match(line)):
            step.session = int(match[1])
        if first_job.search(line):
            step.to_first_job = time.monotonic() - started
            step.jobs = 1
            break
    # Keep reading so the command never blocks on a full pipe.
    end = time.monotonic() + run_for
    while time.monotonic() < end and (line := process.stdout.readline()):
        step.jobs += bool(first_job.search(line))
    step.peak_rss_mb = peak_rss_mb(process.pid)
    process.send_signal(stop)
    for line in process.stdout:
        step.jobs += bool(first_job.search(line))
    process.wait()
    step.exit_status = process.returncode
    step.wall = time.monotonic() - started
    return step


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--providers", default="local,ssh", help="local, ssh or both")
    parser.add_argument("--split", type=int, default=2, help="local workers (default 2)")
    parser.add_argument("--hosts", type=int, default=4, help="SSH test hosts (default 4)")
    parser.add_argument(
        "--ssh-jobs", type=int, default=None, help="jobs of the SSH session (default --jobs)"
    )
    parser.add_argument(
        "--parallel-jobs",
        type=int,
        default=20_000,
        help="lines for `parallel -jN true` (default 20,000; 0: none)",
    )
    parser.add_argument(
        "--parallel-ssh-jobs",
        type=int,
        default=2_000,
        help="lines for `parallel -S` on the test hosts (default 2,000; 0: none)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds each process may take (default 600 + jobs/100)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the short run of issue 4: each step runs --run seconds, then it is stopped",
    )
    parser.add_argument(
        "--run", type=float, default=3.0, help="--quick: seconds each step runs jobs"
    )
    args = parser.parse_args()
    ssh_jobs = args.ssh_jobs or args.jobs
    if min(args.jobs, ssh_jobs) < 2:
        parser.error("--jobs and --ssh-jobs must be at least 2")
    if args.quick:
        return quick(args.jobs, args.run)
    providers = [name.strip() for name in args.providers.split(",") if name.strip()]
    if not providers or set(providers) - {"local", "ssh"}:
        parser.error("--providers: local, ssh or both")
    timeout = args.timeout or 600 + max(args.jobs, ssh_jobs) / 100
    have_parallel = shutil.which("parallel") is not None
    notes = [] if have_parallel else ["GNU parallel not installed: its rows are left out"]
    sessions: list[Session] = []
    baselines: list[Step] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as temporary:
        scratch = Path(temporary)
        most = max(args.jobs, ssh_jobs)
        lines = ssh_lines = write_lines(scratch / "jobs", most)
        if args.jobs < most:
            lines = head(ssh_lines, args.jobs, scratch / "local-jobs")
        if ssh_jobs < most:
            ssh_lines = head(lines, ssh_jobs, scratch / "ssh-jobs")

        def progress(what: str) -> None:
            print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)

        if "local" in providers:
            name = f"local x{args.split}"
            progress(f"{name}: {args.jobs:,} jobs")
            env = {**os.environ, "CLOUDTASK_SESSIONS": str(scratch / "local")}
            sessions.append(
                full_session(
                    name, [f"--split={args.split}"], lines, args.jobs, env, timeout, scratch
                )
            )
            progress(f"{name}: {len(sessions[-1].problems)} problems")
            if have_parallel and args.parallel_jobs:
                count = min(args.parallel_jobs, args.jobs)
                progress(f"GNU parallel -j{args.split}: {count:,} jobs")
                baselines.append(parallel_local(lines, count, args.split, scratch, timeout))
                problems += baseline_problems(baselines[-1], count)
        if "ssh" in providers:
            reason = unavailable_reason()
            if reason is not None:
                notes.append(f"SSH rows left out: {reason}")
                problems.append(f"no SSH test hosts: {reason}")
            else:
                with TestHosts(args.hosts) as hosts:
                    name = f"ssh x{args.hosts}"
                    progress(f"{name}: {ssh_jobs:,} jobs")
                    env = ssh_env(scratch / "home", scratch / "ssh")
                    ssh = full_session(
                        name,
                        ssh_options(hosts),
                        ssh_lines,
                        ssh_jobs,
                        env,
                        timeout,
                        scratch,
                        AUTHORIZED_KEYS,
                    )
                    sessions.append(ssh)
                    progress(f"{name}: {len(ssh.problems)} problems")
                    if ssh.keys_left:
                        remove_lines(AUTHORIZED_KEYS, ssh.keys_left)
                    if have_parallel and args.parallel_ssh_jobs:
                        count = min(args.parallel_ssh_jobs, ssh_jobs)
                        progress(f"GNU parallel -S: {count:,} jobs")
                        baselines.append(
                            parallel_ssh(ssh_lines, count, hosts, env, scratch, timeout)
                        )
                        problems += baseline_problems(baselines[-1], count)
    problems = [problem for session in sessions for problem in session.problems] + problems
    print_full_table(sessions, baselines, notes)
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print(
            f"checks passed; targets met: peak RSS under {RSS_TARGET_MB} MB, ingest and "
            f"resume under {SECONDS_TARGET:g} s to the first job"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
