"""A whole session, measured: ingest, SIGKILL at half, resume to the end, and the store's checks.

Shared by the suite (tests/faults/test_full_session_sigkill.py, a few thousand
jobs) and the benchmark (benchmarks/million_jobs.py, a million). Each session
runs `true N` jobs in two real cloudtask processes:

- ingest: `cloudtask true < FILE` reads every line into the session store;
  timed to its first job, then run until half the jobs are ok, when its
  process group is SIGKILLed;
- resume: `cloudtask --resume=ID`, timed to its first job, then run to the
  end.

Each step records seconds to the first job, wall seconds, jobs run, their
rate (after the first job), controller CPU (user + system of the
controller's process tree) and the controller's peak RSS (VmHWM, sampled
every 0.1 s, the last sample before it ends). After each session the store
(opened read-only) must show every job ok, exactly one ok attempt per job,
every attempt the kill cut off closed as lost, and no more jobs run twice
than were running at the kill. Targets: peak RSS under 300 MB; ingest and
resume each under 30 s to the first job.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.hosts import TestHosts

from cloudtask.scheduler import JobState
from cloudtask.store.check import StoreCheck, check_finished
from cloudtask.store.reader import StoreReader

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))
FIRST_JOB = re.compile(rb" job \d+ started: ")
JOB_OK = re.compile(rb"^\S+ job \d+ ok \(")
SESSION_LINE = re.compile(rb"^session (\d+)[: ]")
SUMMARY = re.compile(
    rb"^session \d+ \(\d+ seconds?\): (\d+)/(\d+) !OK - (\d+) pending, "
    rb"(\d+) timeouts, (\d+) errors, (\d+) OK$"
)
RSS_TARGET_MB = 300
SECONDS_TARGET = 30.0
AUTHORIZED_KEYS = Path("/root/.ssh/authorized_keys")  # the test hosts log in as root
SAMPLE_EVERY = 0.1  # seconds between two reads of the controller's VmHWM


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory since it exec'd (VmHWM), in MB.

    Read while it runs: a forked child's ru_maxrss would also count the
    memory of this script, from before the exec.
    """
    status = Path(f"/proc/{pid}/status").read_text()
    (kilobytes,) = re.findall(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(kilobytes) / 1024


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_lines(path: Path, jobs: int) -> Path:
    """The input: one line per job, 1 to jobs."""
    with path.open("w") as out:
        for start in range(1, jobs + 1, 10_000):
            out.write("".join(f"{n}\n" for n in range(start, min(start + 10_000, jobs + 1))))
    return path


# --- one process, measured ----------------------------------------------------------------


class RssSampler:
    """Samples a process's VmHWM every SAMPLE_EVERY seconds; keeps the last sample read."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        # A process that has exited (a zombie) has no VmHWM: the last sample stands.
        with contextlib.suppress(OSError, ValueError):
            self.mb = max(self.mb, peak_rss_mb(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Step:
    """One process: a cloudtask controller, or GNU parallel."""

    provider: str
    step: str
    to_first_job: float | None = None
    wall: float = 0.0
    jobs: int = 0  # jobs that ended ok in this step
    cpu: float = 0.0  # user + system seconds of the process tree
    peak_rss_mb: float = 0.0
    exit_status: int | None = None  # None: killed by us on purpose
    session: int | None = None
    summary: tuple[int, ...] | None = None  # !OK, total, pending, timeouts, errors, OK
    problem: str | None = None
    output_tail: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        running = self.wall - (self.to_first_job or 0.0)
        return self.jobs / running if self.jobs and running > 0 else None


def run_measured(
    argv: Sequence[str],
    env: Mapping[str, str],
    stdin: Path | None,
    timeout: float,
    *,
    kill_after_ok: int | None = None,
    first_job: re.Pattern[bytes] = FIRST_JOB,
    job_ok: re.Pattern[bytes] = JOB_OK,
    cwd: Path | None = None,
) -> Step:
    """Run argv in a process group of its own with stdin from a file, reading its output.

    Times it to the first line matching first_job, counts the lines matching
    job_ok, samples its peak RSS, and notes the session line and the summary.
    With kill_after_ok, its group is SIGKILLed as soon as that many jobs
    ended ok. A process still running after timeout seconds is SIGKILLed too,
    and the step gets a problem.
    """
    step = Step("", "")
    before = children_cpu()
    started = time.monotonic()
    with open(stdin or os.devnull, "rb") as source:
        process = subprocess.Popen(
            list(argv),
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    sampler = RssSampler(process.pid)
    timed_out = threading.Event()

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def on_timeout() -> None:
        timed_out.set()
        kill_group()

    timer = threading.Timer(timeout, on_timeout)
    timer.start()
    killed = ended = False
    tail: list[str] = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if step.to_first_job is None and first_job.search(line):
                step.to_first_job = time.monotonic() - started
            if job_ok.search(line):
                step.jobs += 1
                if kill_after_ok is not None and step.jobs >= kill_after_ok:
                    sampler.sample()  # the last sample, just before the kill
                    kill_group()
                    killed = True
                    break
            elif step.session is None and (match := SESSION_LINE.match(line)):
                step.session = int(match[1])
            elif match := SUMMARY.match(line.rstrip(b"\n")):
                step.summary = tuple(int(group) for group in match.groups())
            else:
                tail = [*tail[-9:], line.decode(errors="replace").rstrip("\n")]
        ended = True
    finally:
        if not ended and not killed:
            kill_group()  # an error here: nothing is left running
        # Until it exits (the timer bounds that); WNOWAIT keeps the pid, and so its
        # group id, from being reused before what is left of the group is killed.
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        step.wall = time.monotonic() - started
        timer.cancel()
        sampler.stop()
        kill_group()  # what the group left (a local job is in a session of its own)
        process.stdout.close()
        process.wait()
    step.cpu = children_cpu() - before
    step.peak_rss_mb = sampler.mb
    step.exit_status = None if killed else process.returncode
    step.output_tail = tail
    if timed_out.is_set():
        step.problem = f"not done in {timeout:.0f} s"
    elif kill_after_ok is not None and not killed:
        step.problem = f"ended (exit {process.returncode}) before {kill_after_ok} jobs were ok"
    return step


# --- a full session: ingest, SIGKILL at half, resume to the end, checks ---------------------


@dataclass
class Session:
    provider: str
    jobs: int
    steps: list[Step] = field(default_factory=list)
    done_at_kill: int = 0
    running_at_kill: set[int] = field(default_factory=set)
    check: StoreCheck | None = None
    keys_left: list[str] = field(default_factory=list)  # session keys left authorized
    problems: list[str] = field(default_factory=list)


def store_states(store: Path) -> dict[str, int]:
    with StoreReader.open(store.parent) as reader:
        return reader.state_counts()


def session_keys(store: Path) -> list[str]:
    """The public key lines of the session's runs not known to be removed from the workers."""
    with StoreReader.open(store.parent) as reader:
        return reader.session_keys()


def authorized_lines(authorized_keys: Path) -> set[str]:
    try:
        return {line.strip() for line in authorized_keys.read_text().splitlines()}
    except FileNotFoundError:
        return set()


def remove_lines(authorized_keys: Path, lines: Sequence[str]) -> None:
    """Take these lines out of an authorized_keys file (under the lock cloudtask takes)."""
    directory = os.open(authorized_keys.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        kept = [
            line
            for line in authorized_keys.read_text().splitlines(keepends=True)
            if line.strip() not in lines
        ]
        temporary = authorized_keys.with_name(f".{authorized_keys.name}.benchmark")
        temporary.write_text("".join(kept))
        temporary.chmod(0o600)
        temporary.replace(authorized_keys)
    finally:
        os.close(directory)


def running_jobs(store: Path) -> set[int]:
    with StoreReader.open(store.parent) as reader:
        return {job.id for job in reader.jobs(JobState.RUNNING)}


def check_store(store: Path, jobs: int, running_at_kill: set[int]) -> StoreCheck:
    """Every job ok with exactly one ok attempt; the kill's attempts closed as lost, and
    nothing else cut off (so no more jobs ran twice than were running at the kill); the
    store adds up (cloudtask.store.check)."""
    with StoreReader.open(store.parent) as reader:
        return check_finished(reader, jobs, cut_off=running_at_kill)


def step_problems(step: Step, *, finished: bool) -> list[str]:
    name = f"{step.provider}, {step.step}"
    problems = [f"{name}: {step.problem}"] if step.problem else []
    if step.to_first_job is None:
        problems.append(f"{name}: no job started")
    elif step.to_first_job > SECONDS_TARGET:
        problems.append(
            f"{name}: first job after {step.to_first_job:.1f} s, not within {SECONDS_TARGET:g} s"
        )
    if step.peak_rss_mb > RSS_TARGET_MB:
        problems.append(f"{name}: peak RSS {step.peak_rss_mb:.0f} MB > {RSS_TARGET_MB} MB")
    if finished and step.exit_status != 0:
        problems.append(f"{name}: exit status {step.exit_status}")
    if problems:
        problems.append(f"{name}: last lines: " + " | ".join(step.output_tail[-3:]))
    return problems


def full_session(
    provider: str,
    options: Sequence[str],
    lines: Path,
    jobs: int,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path | None = None,
    authorized_keys: Path | None = None,
) -> Session:
    """Run the jobs in lines as one session to the end: ingest, SIGKILL once half of
    them are ok, resume to the end; then check the store.

    options choose the workers (`--split=2`, or `--workers=FILE --ssh-identity=KEY`);
    env must set CLOUDTASK_SESSIONS. timeout bounds each process; they run in cwd.
    authorized_keys: the workers' file (test hosts share root's), in which no key
    of the session may be left at the end (the caller removes any in keys_left).
    """
    session = Session(provider, jobs)
    ingest = run_measured(
        [CLOUDTASK, "--force", *options, "true"],
        env,
        lines,
        timeout,
        kill_after_ok=jobs // 2,
        cwd=cwd,
    )
    ingest.provider, ingest.step = provider, "ingest, run, SIGKILL at half"
    session.steps.append(ingest)
    session.problems += step_problems(ingest, finished=False)
    if ingest.session is None or ingest.problem:
        session.problems.append(f"{provider}: no session to resume")
        return session
    store = Path(env["CLOUDTASK_SESSIONS"], str(ingest.session), "store.sqlite")
    states = store_states(store)
    session.done_at_kill = ingest.jobs = states.get("ok", 0)
    session.running_at_kill = running_jobs(store)
    keys = session_keys(store)  # the killed run's key, for the resume to remove
    if sum(states.values()) != jobs:
        session.problems.append(f"{provider}: the store holds {sum(states.values())} jobs")
    resume = run_measured([CLOUDTASK, f"--resume={ingest.session}"], env, None, timeout, cwd=cwd)
    resume.provider, resume.step = provider, "resume, run to the end"
    session.steps.append(resume)
    session.problems += step_problems(resume, finished=True)
    left = jobs - session.done_at_kill
    if resume.summary != (0, jobs, 0, 0, 0, jobs):
        session.problems.append(f"{provider}: resume summary {resume.summary}")
    if resume.jobs != left:
        session.problems.append(f"{provider}: the resume ran {resume.jobs} jobs, not {left}")
    session.check = check_store(store, jobs, session.running_at_kill)
    session.problems += [f"{provider}: {problem}" for problem in session.check.problems]
    if authorized_keys is not None:
        recorded = session_keys(store)
        if recorded:
            session.problems.append(f"{provider}: session keys still recorded: {recorded}")
        authorized = authorized_lines(authorized_keys)
        session.keys_left = [key for key in {*keys, *recorded} if key in authorized]
        if session.keys_left:
            session.problems.append(
                f"{provider}: session keys left in {authorized_keys}: {session.keys_left}"
            )
    return session


def ssh_env(home: Path, sessions: Path) -> dict[str, str]:
    """The environment for cloudtask on the test hosts: a HOME with an empty ~/.ssh
    (host keys are trusted on first use and pinned in the session)."""
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    return {**os.environ, "HOME": str(home), "CLOUDTASK_SESSIONS": str(sessions)}


def ssh_options(hosts: TestHosts) -> list[str]:
    return [f"--workers={hosts.workers_file()}", f"--ssh-identity={hosts.client_key}"]


# --- the table ----------------------------------------------------------------------------


def table_row(
    provider: str,
    step: str,
    jobs: int,
    first: float | None,
    wall: float,
    rate: float | None,
    cpu: float,
    rss: float,
    status: str,
) -> str:
    return (
        f"{provider:<22}{step:<30}{jobs:>11,}{'-' if first is None else f'{first:.1f}':>11}"
        f"{wall:>9.1f}{'-' if rate is None else f'{rate:.0f}':>8}"
        f"{cpu * 1000 / jobs if jobs else 0:>12.2f}{rss:>8.0f}{status:>6}"
    )


def print_full_table(sessions: list[Session], baselines: list[Step], notes: list[str]) -> None:
    print(f"`true N` jobs, each session SIGKILLed at half and resumed; {os.cpu_count()} cores")
    print(
        f"{'provider':<22}{'step':<30}{'jobs':>11}{'1st job s':>11}{'wall s':>9}"
        f"{'jobs/s':>8}{'CPU ms/job':>12}{'RSS MB':>8}{'exit':>6}"
    )

    def step_row(step: Step) -> str:
        status = "KILL" if step.exit_status is None else str(step.exit_status)
        return table_row(
            step.provider,
            step.step,
            step.jobs,
            step.to_first_job,
            step.wall,
            step.rate,
            step.cpu,
            step.peak_rss_mb,
            status,
        )

    for session in sessions:
        for step in session.steps:
            print(step_row(step))
        if len(session.steps) == 2:
            wall = sum(step.wall for step in session.steps)
            cpu = sum(step.cpu for step in session.steps)
            rss = max(step.peak_rss_mb for step in session.steps)
            print(
                table_row(
                    session.provider,
                    "whole session",
                    session.jobs,
                    None,
                    wall,
                    session.jobs / wall,
                    cpu,
                    rss,
                    "-",
                )
            )
    for step in baselines:
        print(step_row(step))
    print(
        "jobs/s: jobs ok in the step over its time after the first job (whole session: all "
        "jobs over both runs' wall time).\nCPU: user + system of the process tree (the local "
        "provider's jobs count, jobs over SSH do not). RSS: the process's VmHWM."
    )
    for session in sessions:
        check = session.check
        if check is None:
            continue
        print(
            f"{session.provider}: {check.states.get('ok', 0):,} of {session.jobs:,} jobs ok, "
            f"{check.ok_attempts:,} ok attempts for {check.jobs_ok:,} jobs; "
            f"{session.done_at_kill:,} ok and {len(session.running_at_kill)} running at the "
            f"kill; {len(check.lost)} attempts closed as lost, {check.open_attempts} left "
            f"open; {check.ran_twice} jobs ran twice"
        )
    for note in notes:
        print(note)
