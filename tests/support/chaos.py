"""Chaos: a batch on SSH test hosts and launched workers, with random faults, checked after.

One round runs one session of `jobs` jobs with `--workers` on `hosts` test
hosts (tests/support/hosts.py) plus `launched` workers launched on the test cloud
(tests/support/testcloud.py: the Hub API test server, each instance a real SSH test
host). While the session runs, faults come at random moments (seeded):

    kill host        SIGKILL every process of a --workers host, sshd too; it
                     is brought back (sshd restarted) a few seconds later
    stop sshd        a --workers host's sshd listener stops (its sessions go
                     on); restarted a few seconds later
    kill instance    SIGKILL every process of a launched instance's host
    cut link         a host's link goes down (packets silently lost), healed
                     0.5-6 s later
    sigkill          SIGKILL the controller's process group
    ctrl-c twice     SIGINT to the controller's group, and again a moment later
    broken hook      each run's --report hook may be one that fails (counted
                     when the controller reported it)

Whenever the controller ends short of finishing, the session is resumed
(`--resume=ID`), until it finishes: faults stop after `fault_seconds`, and
the last `calm_runs` runs start with every host repaired. Afterwards the round
checks, and each failure is a line of `RoundResult.problems`:

- the store is consistent (cloudtask.store.check): every job ok exactly once, no
  attempt left open, every instance record closed;
- every job ended on a worker (the jobs append "start ID"/"end ID" to a marks
  file: launched hosts share this machine's file system); a job that ran more
  than once must have had an attempt cut off by a fault for each extra run;
- no launched instance is left on the test cloud, no job process is left on
  the machine, root's authorized_keys is byte for byte as before;
- every controller run ended with the exit status it should have, no hang,
  and no Python traceback in any output or watchdog log.

`run_round(Settings(seed=...), directory)` runs one round in `directory`;
CLOUDTASK_SESSIONS in the environment says where the sessions go. Used by
benchmarks/chaos.py and tests/faults/test_chaos.py.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import helpers
from tests.support.hosts import Host, TestHosts, TestHostsError
from tests.support.processes import watchdogs_of
from tests.support.ssh import CLOUDTASK, KeysSnapshot, env_for
from tests.support.testcloud import APIKEY, Cloud

from cloudtask.store import AttemptRecord
from cloudtask.store.check import StoreCheck, check_finished
from cloudtask.store.reader import StoreReader

KINDS = (
    "kill host",
    "stop sshd",
    "kill instance",
    "cut link",
    "sigkill",
    "ctrl-c twice",
    "broken hook",
)
# How often each fault is picked, when its target exists (broken hooks: see HOOK_BREAKS).
WEIGHTS = {
    "kill host": 2.0,
    "stop sshd": 1.0,
    "kill instance": 2.0,
    "cut link": 3.0,
    "sigkill": 2.0,
    "ctrl-c twice": 1.5,
}
HOOK_BREAKS = 0.5  # the chance that a run's --report hook is a broken one
STOP_LIMIT = 10.0  # seconds a controller may take to stop after a second Ctrl-C
FAULT_SLACK = 1.0  # seconds: a fault this close to an attempt's start or end may have cut it

JOB = """\
#!/bin/sh
dir=$(dirname "$0")
echo "start $1" >> "$dir/marks"
"$dir/chaos-sleep" "$2"
echo "end $1" >> "$dir/marks"
"""

# A launch record with no instance id stays open for 90 s by design (the call may
# still make an instance); the suite's test does not wait that long for it.
OPEN_LAUNCH = "(no id) not recorded as destroyed"
# What a run says, exiting 1, when it cannot confirm its launches are gone.
LEFT_RUNNING = "may still be running: the watchdog's sweep is under way"

BROKEN_PY_FILE = "import chaos_module_that_is_not_there  # a hook file that fails\n"
OK_HOOK = "sh: echo chaos report ok"


def broken_hooks(directory: Path) -> list[str]:
    """--report hooks that fail at the session's end (a syntax error is refused at start)."""
    return [
        "sh: exit 7",
        "sh: echo chaos hook dies >&2; kill -KILL $$",
        "sh: cat /nonexistent/chaos-report",
        "py: raise RuntimeError('chaos hook')",
        "py: total = len(list(jobs)); 1 / 0",
        "py: raise SystemExit(3)",
        "py: raise KeyboardInterrupt",
        f"py: {directory / 'broken_hook.py'}",
    ]


@dataclass(frozen=True)
class Settings:
    seed: int
    jobs: int = 60
    hosts: int = 2  # --workers test hosts
    launched: int = 2  # workers launched on the test cloud
    job_seconds: tuple[float, float] = (0.2, 1.5)
    fault_gap: tuple[float, float] = (0.3, 2.5)  # seconds between faults
    fault_seconds: float = 60.0  # faults are injected this long from the round's start
    max_runs: int = 15  # controller runs in all (the first and the resumes)
    calm_runs: int = 3  # the last runs: every host repaired, no fault
    run_timeout: float = 120.0  # a controller run longer than this hangs
    # For watchdogs, the cloud and open launch records after the last run: a launch
    # cut off before its call returned stays open for 90 s (UNCERTAIN_FOR).
    settle_seconds: float = 150.0


@dataclass
class RoundResult:
    seed: int
    jobs: int
    faults: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    finished: bool = False
    jobs_ok: int = 0
    duplicates: int = 0  # jobs that started more than once on workers
    explained: int = 0  # ... of which every extra run follows an attempt a fault cut off
    launched: int = 0
    leaked: int = 0
    processes_left: list[str] = field(default_factory=list)
    keys_restored: bool = False
    store: StoreCheck | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ControllerRun:
    index: int
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    hook: str
    started: float = field(default_factory=time.monotonic)
    ended_by: str = "itself"  # itself, sigkill, ctrl-c, hang

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.stdout, self.stderr))

    def session_line(self) -> re.Match[str] | None:
        return re.search(r"^session (\d+): ", self.stdout.read_text(errors="replace"), re.M)


@dataclass(order=True)
class Repair:
    due: float
    what: str = field(compare=False)
    action: Callable[[], None] = field(compare=False)


class Round:
    """One chaos round; run() drives it, check() judges it, close() cleans up."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.rng = random.Random(settings.seed)
        self.result = RoundResult(settings.seed, settings.jobs)
        self.faults: list[tuple[float, str, str]] = []  # (time.time(), kind, target)
        self.repairs: list[Repair] = []
        self.broken: set[str] = set()  # hosts (by netns) now killed, stopped or cut
        self.runs: list[ControllerRun] = []
        self.session: int | None = None
        self.cloud: Cloud | None = None
        self.hosts: TestHosts | None = None
        self.keys = KeysSnapshot.take()
        self.script = directory / "job.sh"
        self.begun = time.monotonic()

    # --- setup and cleanup -------------------------------------------------------------

    def start(self) -> None:
        home = self.directory / "home"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        self.env = env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY}
        self.script.write_text(JOB)
        self.script.chmod(0o755)
        sleep = shutil.which("sleep")
        assert sleep is not None
        (self.directory / "chaos-sleep").symlink_to(sleep)
        (self.directory / "broken_hook.py").write_text(BROKEN_PY_FILE)
        low, high = self.settings.job_seconds
        jobs = "".join(
            f"{n} {self.rng.uniform(low, high):.2f}\n" for n in range(1, self.settings.jobs + 1)
        )
        (self.directory / "jobs").write_text(jobs)
        self.cloud = Cloud(self.directory)
        self.hosts = TestHosts(self.settings.hosts, authorized=self.cloud.backend.public_key)
        self.hosts.start()

    def close(self) -> None:
        """Repair and remove everything; record what the cloud still had."""
        self.repair_all()
        for run in self.runs:
            if run.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()
        if self.cloud is not None:
            left = self.cloud.close()
            if left:
                self.result.problems.append(f"instances left on the test cloud: {left}")
        if self.hosts is not None:
            self.hosts.close(quiet=True)
        if self.keys.current() != self.keys.content:
            self.keys.restore()

    # --- driving the session ------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        while len(self.runs) < settings.max_runs:
            calm = (
                len(self.runs) >= settings.max_runs - settings.calm_runs
                or time.monotonic() - self.begun > settings.fault_seconds
            )
            if calm:
                self.repair_all()
            run = self.launch_controller()
            self.watch(run, calm)
            if self.judge_run(run):
                self.result.finished = True
                self.clean_keys()
                return
        self.result.problems.append(
            f"the session did not finish in {settings.max_runs} controller runs"
        )

    def clean_keys(self) -> None:
        """A worker unreachable at a run's cleanup keeps its session key, and the store
        says so: the next run of the session removes it, so run one, as a user would."""
        with StoreReader.open(helpers.sessions_dir() / str(self.session)) as store:
            if not store.session_keys():
                return
        self.repair_all()
        run = self.launch_controller()
        self.watch(run, calm=True)
        if not self.judge_run(run):
            self.result.problems.append(f"run {run.index}: a finished session does not resume")

    def launch_controller(self) -> ControllerRun:
        assert self.cloud is not None and self.hosts is not None
        index = len(self.runs) + 1
        hook = self.pick_hook()
        if self.session is None:
            argv = [
                CLOUDTASK,
                "--force",
                *self.cloud.options(),
                f"--workers={self.hosts.workers_file()}",
                f"--split={self.settings.hosts + self.settings.launched}",
                f"--report={hook}",
                str(self.script),
            ]
            stdin = (self.directory / "jobs").open("rb")
        else:
            argv = [CLOUDTASK, f"--resume={self.session}", f"--report={hook}"]
            stdin = open(os.devnull, "rb")  # noqa: SIM115 (closed below)
        stdout, stderr = (self.directory / f"run{index}.{name}" for name in ("out", "err"))
        with stdin, stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.directory,
                start_new_session=True,
            )
        run = ControllerRun(index, process, stdout, stderr, hook)
        self.runs.append(run)
        self.log(f"run {index} (pid {process.pid}): {' '.join(argv[1:])}")
        return run

    def pick_hook(self) -> str:
        if self.rng.random() < HOOK_BREAKS:
            return self.rng.choice(broken_hooks(self.directory))
        return OK_HOOK

    def watch(self, run: ControllerRun, calm: bool) -> None:
        """Wait for the run to end, injecting faults meanwhile (unless calm)."""
        settings = self.settings
        next_fault = time.monotonic() + self.rng.uniform(*settings.fault_gap)
        while run.process.poll() is None:
            now = time.monotonic()
            if now - run.started > settings.run_timeout:
                run.ended_by = "hang"
                self.result.problems.append(
                    f"run {run.index} hangs: still running after {settings.run_timeout:.0f} s"
                )
                os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()
                return
            self.repair_due()
            faulting = not calm and now - self.begun < settings.fault_seconds
            if faulting and now >= next_fault and self.ready(run):
                self.inject(run)
                next_fault = time.monotonic() + self.rng.uniform(*settings.fault_gap)
            time.sleep(0.02)

    def ready(self, run: ControllerRun) -> bool:
        """Faults wait for the first run's session line: before it, there is no session."""
        if self.session is None and (match := run.session_line()):
            self.session = int(match[1])
        return self.session is not None

    # --- faults ----------------------------------------------------------------------

    def inject(self, run: ControllerRun) -> None:
        targets: dict[str, list[Any]] = {
            "kill host": self.healthy_hosts(),
            "stop sshd": self.healthy_hosts(),
            "kill instance": list(self.healthy_instances()),
            "cut link": [*self.healthy_hosts(), *self.healthy_instances()],
            "sigkill": [run],
            "ctrl-c twice": [run] if run.session_line() else [],
        }
        kinds = [kind for kind in WEIGHTS if targets[kind]]
        if not kinds:
            return
        kind = self.rng.choices(kinds, [WEIGHTS[kind] for kind in kinds])[0]
        target = self.rng.choice(targets[kind])
        if kind == "sigkill":
            self.note(kind, f"run {run.index}")
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()
            run.ended_by = "sigkill"
        elif kind == "ctrl-c twice":
            self.ctrl_c_twice(run)
        elif isinstance(target, Host):
            self.fault_host(kind, target)
        else:
            assert isinstance(target, tuple)
            self.fault_instance(kind, *target)

    def note(self, kind: str, target: str) -> None:
        self.faults.append((time.time(), kind, target))
        self.result.faults[kind] += 1
        self.log(f"{kind}: {target}")

    def keys_now(self) -> str:
        """The session keys in root's authorized_keys now, for the log."""
        now = (self.keys.current() or b"").decode(errors="replace")
        found = Counter(
            line.rsplit(" ", 1)[-1] for line in now.splitlines() if "cloudtask-" in line
        )
        return f"keys {dict(found)}"

    def log(self, text: str) -> None:
        """A line of the round's own log (faults.log), to read a round back."""
        with (self.directory / "faults.log").open("a") as log:
            log.write(f"{time.time():.3f} {text}\n")

    def healthy_hosts(self) -> list[Host]:
        assert self.hosts is not None
        return [host for host in self.hosts if host.netns not in self.broken]

    def healthy_instances(self) -> list[tuple[str, Host]]:
        assert self.cloud is not None
        found = []
        for instance_id in self.cloud.backend.alive():
            with contextlib.suppress(KeyError, IndexError):
                host = self.cloud.backend.hosts(instance_id)[0]
                if host.netns not in self.broken:
                    found.append((instance_id, host))
        return found

    def fault_host(self, kind: str, host: Host) -> None:
        """A --workers host: killed, its sshd stopped or its link cut; repaired later."""
        self.broken.add(host.netns)
        if kind == "cut link":
            host.cut()
            self.later(self.rng.uniform(0.5, 6), f"heal {host.name}", host.heal, host)
        else:
            if kind == "kill host":
                host.kill_all()
            else:
                host.stop_sshd()
            self.later(self.rng.uniform(1, 8), f"restart {host.name}", host.restart_sshd, host)
        self.note(kind, host.name)

    def fault_instance(self, kind: str, instance_id: str, host: Host) -> None:
        """A launched instance: killed for good, or its link cut for a while."""
        try:
            if kind == "cut link":
                host.cut()
                self.broken.add(host.netns)
                self.later(self.rng.uniform(0.5, 6), f"heal {instance_id}", host.heal, host)
            else:
                host.kill_all()
                self.broken.add(host.netns)
        except TestHostsError:  # destroyed meanwhile: no fault made
            return
        self.note(kind, instance_id)

    def later(self, delay: float, what: str, action: Callable[[], None], host: Host) -> None:
        def repair() -> None:
            # An instance may be destroyed meanwhile: there is nothing to repair then.
            try:
                action()
            except TestHostsError as error:
                self.log(f"{what}: {error}")
            else:
                self.log(what)
            self.broken.discard(host.netns)

        self.repairs.append(Repair(time.monotonic() + delay, what, repair))
        self.repairs.sort()

    def repair_due(self) -> None:
        while self.repairs and self.repairs[0].due <= time.monotonic():
            self.repairs.pop(0).action()

    def repair_all(self) -> None:
        while self.repairs:
            self.repairs.pop(0).action()

    def ctrl_c_twice(self, run: ControllerRun) -> None:
        """SIGINT to the controller's group, as a terminal sends it, and again a moment later:
        the second one stops it at once (skipping the workers' cleanup)."""
        self.note("ctrl-c twice", f"run {run.index}")
        run.ended_by = "ctrl-c"
        os.killpg(run.process.pid, signal.SIGINT)
        self.wait(run, self.rng.uniform(0.05, 2.0))
        if run.process.poll() is not None:
            return
        os.killpg(run.process.pid, signal.SIGINT)
        second = time.monotonic()
        self.wait(run, self.settings.run_timeout)
        took = time.monotonic() - second
        if run.process.poll() is None:
            run.ended_by = "hang"
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()
        if took > STOP_LIMIT:
            self.result.problems.append(
                f"run {run.index} took {took:.0f} s to stop after the second Ctrl-C"
            )

    def wait(self, run: ControllerRun, seconds: float) -> None:
        """Wait up to `seconds` for the run to end, repairing hosts when due."""
        deadline = time.monotonic() + seconds
        while run.process.poll() is None and time.monotonic() < deadline:
            self.repair_due()
            time.sleep(0.01)

    # --- each run's own checks -----------------------------------------------------------

    def judge_run(self, run: ControllerRun) -> bool:
        """Check how a run ended; True when the session is finished, every job ok."""
        status = run.process.returncode
        self.log(f"run {run.index} ended ({run.ended_by}): exit {status}; {self.keys_now()}")
        output = run.output()
        stdout = run.stdout.read_text(errors="replace")
        problems = self.result.problems
        where = f"run {run.index} ({run.ended_by}, exit {status})"
        if "Traceback" in output:
            problems.append(f"{where}: a traceback in its output: {run.stdout}, {run.stderr}")
        if self.session is None and (match := run.session_line()):
            self.session = int(match[1])
        if run.ended_by in ("sigkill", "hang"):
            return False
        if status == 2 and "is being run by another cloudtask" in output:
            time.sleep(1.0)  # a watchdog sweeps under the session's lock: try again
            return False
        lines = stdout.splitlines()
        summary = helpers.SUMMARY.fullmatch(lines[-1]) if lines else None
        nothing_to_run = "is finished: nothing to run" in stdout
        if run.ended_by == "ctrl-c":
            if status not in (0, 1):
                problems.append(f"{where}: Ctrl-C twice should end with 0 or 1")
        elif summary is None:
            problems.append(f"{where}: its last line is not the summary: {lines[-1:]}")
            return False
        elif status != (0 if summary["not_ok"] == "0" and LEFT_RUNNING not in output else 1):
            problems.append(f"{where}: the summary says {summary['not_ok']} !OK")
        self.judge_hook(
            run, where, output, expected=run.ended_by == "itself" and not nothing_to_run
        )
        # Finished: every job ok, whether or not the run exits 1 for a launch
        # it cannot confirm gone yet (the watchdog's, checked at the end).
        return (
            run.ended_by == "itself"
            and summary is not None
            and summary["not_ok"] == "0"
            and summary["pending"] == "0"
            and (status == 0 or LEFT_RUNNING in output)
        )

    def judge_hook(self, run: ControllerRun, where: str, output: str, expected: bool) -> None:
        if run.hook == OK_HOOK:
            if expected and f"report: {OK_HOOK} done" not in output:
                self.result.problems.append(f"{where}: the report hook did not run")
            return
        warnings = [line for line in output.splitlines() if "--report: " in line]
        if warnings:
            self.note("broken hook", f"run {run.index}")
        if len(warnings) > 1 or (expected and not warnings):
            self.result.problems.append(
                f"{where}: {len(warnings)} warnings for the broken hook {run.hook!r}"
            )


def run_round(settings: Settings, directory: Path) -> RoundResult:
    """One chaos round in `directory` (empty, on this machine); never raises for a finding."""
    chaos = Round(settings, directory)
    try:
        chaos.start()
        chaos.run()
        settle(chaos)
        if chaos.session is not None and chaos.result.finished:
            check(chaos)
        elif chaos.session is None:
            chaos.result.problems.append("no session was made")
    finally:
        chaos.close()
    chaos.result.runs = len(chaos.runs)
    chaos.result.seconds = time.monotonic() - chaos.begun
    return chaos.result


def settle(chaos: Round) -> None:
    """After the last run: hosts repaired, watchdogs done, the cloud empty (bounded)."""
    chaos.repair_all()
    sessions = helpers.sessions_dir()
    deadline = time.monotonic() + chaos.settings.settle_seconds
    cloud = chaos.cloud
    while time.monotonic() < deadline and (
        watchdogs_of(sessions)
        or (cloud is not None and cloud.backend.alive())
        or open_instances(chaos)
    ):
        time.sleep(0.2)
    if cloud is not None:
        chaos.result.launched = len(cloud.backend.created)
        chaos.result.leaked = len(cloud.backend.alive())
        if chaos.result.leaked:
            chaos.result.problems.append(
                f"{chaos.result.leaked} launched instances still alive "
                f"{chaos.settings.settle_seconds:.0f} s after the last run"
            )


def open_instances(chaos: Round) -> int:
    """Instance records of the session not closed yet (a launch whose outcome is unknown
    stays open for 90 s, providers.launched.UNCERTAIN_FOR: the watchdog closes it)."""
    if chaos.session is None:
        return 0
    with StoreReader.open(helpers.sessions_dir() / str(chaos.session)) as store:
        return store.open_instances()


def check(chaos: Round) -> None:
    """The round's end checks: store, marks, processes, keys, logs."""
    result, directory = chaos.result, chaos.directory
    session_dir = helpers.sessions_dir() / str(chaos.session)
    with StoreReader.open(session_dir) as reader:
        store = check_finished(reader, chaos.settings.jobs)
        result.store = store
        result.problems += [f"store: {problem}" for problem in store.problems]
        result.jobs_ok = store.jobs_ok
        check_marks(chaos, reader)
    result.processes_left = leftover_processes(directory)
    if result.processes_left:
        result.problems.append(f"job processes left: {result.processes_left}")
    chaos.log(f"checked; {chaos.keys_now()}")
    now = chaos.keys.current()
    result.keys_restored = now == chaos.keys.content
    if not result.keys_restored:
        result.problems.append(
            f"root's authorized_keys is not as it was: {chaos.keys.content!r} before, {now!r} now"
        )
    for log in [session_dir / "log", session_dir / "watchdog.log"]:
        if log.exists() and "Traceback" in log.read_text(errors="replace"):
            result.problems.append(f"a traceback in {log}")


def check_marks(chaos: Round, store: StoreReader) -> None:
    """Every job ended on a worker; every extra run of a job follows an attempt a fault cut off."""
    marks = chaos.directory / "marks"
    lines = marks.read_text().splitlines() if marks.exists() else []
    starts: Counter[int] = Counter()
    ends: Counter[int] = Counter()
    for line in lines:
        what, number = line.split()[:2]
        (starts if what == "start" else ends)[int(number)] += 1
    result = chaos.result
    never = [job for job in range(1, chaos.settings.jobs + 1) if not ends[job]]
    if never:
        result.problems.append(f"jobs that never ended on a worker: {never}")
    fault_times = [when for when, _, _ in chaos.faults]
    recorded = store.attempts_of(starts)
    for job, count in starts.items():
        attempts = recorded.get(job, [])
        if count > len(attempts):
            result.problems.append(
                f"job {job} started {count} times on workers, {len(attempts)} attempts recorded"
            )
        if count <= 1:
            continue
        result.duplicates += 1
        cut = [a for a in cut_off(attempts) if faulted(a.started, a.ended, fault_times)]
        if count - 1 <= len(cut):
            result.explained += 1
        else:
            result.problems.append(
                f"job {job} ran {count} times; attempts cut off by a fault: {len(cut)}"
            )


def cut_off(attempts: list[AttemptRecord]) -> list[AttemptRecord]:
    """The attempts that did not end by themselves: a fault or an abort ended them."""
    return [a for a in attempts if a.outcome in ("stopped", "lost")]


def faulted(started: float, ended: float | None, fault_times: list[float]) -> bool:
    """Whether a fault came while an attempt ran (an attempt closed on resume has no end)."""
    last = float("inf") if ended is None else ended + FAULT_SLACK
    return any(started - FAULT_SLACK <= when <= last for when in fault_times)


def leftover_processes(directory: Path, wait: float = 15.0) -> list[str]:
    """Job processes (the job script, its sleep) still alive after `wait` seconds."""
    needles = (str(directory / "job.sh"), str(directory / "chaos-sleep"))
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            if state != "Z" and any(needle in cmdline for needle in needles):
                found.append(f"{entry.name}: {cmdline}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def table(results: list[RoundResult]) -> str:
    """The figures of some rounds, summed, as a text table."""
    faults: Counter[str] = Counter()
    for result in results:
        faults.update(result.faults)
    stores = [r.store for r in results]
    rows = [
        ("rounds (seeds)", f"{len(results)} ({', '.join(str(r.seed) for r in results)})"),
        ("wall time", f"{sum(r.seconds for r in results):.0f} s"),
        ("controller runs", str(sum(r.runs for r in results))),
        *((f"faults: {kind}", str(faults[kind])) for kind in KINDS),
        ("faults in all", str(sum(faults.values()))),
        ("jobs", str(sum(r.jobs for r in results))),
        ("jobs ok", str(sum(r.jobs_ok for r in results))),
        (
            "jobs run more than once (explained by faults)",
            f"{sum(r.duplicates for r in results)} ({sum(r.explained for r in results)})",
        ),
        ("instances launched", str(sum(r.launched for r in results))),
        ("instances leaked", str(sum(r.leaked for r in results))),
        ("job processes left", str(sum(len(r.processes_left) for r in results))),
        ("authorized_keys restored", "yes" if all(r.keys_restored for r in results) else "no"),
        (
            "store check",
            "consistent"
            if all(s is not None and not s.problems for s in stores)
            else f"{sum(len(s.problems) if s else 1 for s in stores)} problems",
        ),
        ("result", "PASS" if all(r.ok for r in results) else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
