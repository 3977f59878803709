"""Faults while SSH workers run jobs: a host crashes, its link is cut, the user hits Ctrl-C.

Each test has hosts of its own (make_hosts), since it breaks them. cloudtask
runs with --keepalive=1 so that a silent host is declared failed in seconds.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support import helpers
from tests.support.hosts import Host, TestHosts
from tests.support.ssh import (
    CLOUDTASK,
    RUN_TIMEOUT,
    KeysSnapshot,
    assert_no_job_processes,
    ends,
    env_for,
    job_processes,
    jobs_input,
    starts,
)
from tests.support.wait import wait_until

from cloudtask.store import meta
from cloudtask.store.reader import StoreReader

MakeHosts = Callable[[int], TestHosts]


class Running:
    """A cloudtask started in a session of its own, its output going to files."""

    def __init__(self, tmp_path: Path, home: Path, args: list[str], jobs: bytes) -> None:
        self.out_path = tmp_path / "stdout"
        self.err_path = tmp_path / "stderr"
        (tmp_path / "jobs").write_bytes(jobs)
        with (
            (tmp_path / "jobs").open("rb") as stdin,
            self.out_path.open("wb") as out,
            self.err_path.open("wb") as err,
        ):
            self.process = subprocess.Popen(
                [CLOUDTASK, "--force", *args],
                stdin=stdin,
                stdout=out,
                stderr=err,
                env=env_for(home),
                cwd=tmp_path,
                start_new_session=True,
            )

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"cloudtask still running after {timeout} s") from None
        result = subprocess.CompletedProcess(
            self.process.args, code, self.out_path.read_text(errors="replace"), self.stderr
        )
        helpers.assert_no_traceback(result)
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for run in started:
        run.kill()


def start(
    running: list[Running],
    tmp_path: Path,
    home: Path,
    hosts: TestHosts,
    job_script: Path,
    jobs: bytes,
    *options: str,
) -> Running:
    args = [
        f"--workers={hosts.workers_file()}",
        f"--ssh-identity={hosts.client_key}",
        "--keepalive=1",
        *options,
        str(job_script),
    ]
    run = Running(tmp_path, home, args, jobs)
    running.append(run)
    return run


def wait_for_a_job_on(victim: Host, tmp_path: Path) -> None:
    wait_until(
        lambda: any(addr == victim.address for _, addr in starts(tmp_path)),
        20,
        "a job started on the victim",
    )


def test_host_killed_mid_job_its_job_reruns_elsewhere(
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    hosts = make_hosts(3)
    victim = hosts[0]
    jobs = jobs_input(6, f"slow:{victim.address}:60:2")
    run = start(running, tmp_path, home, hosts, job_script, jobs, "--retries=0")
    wait_for_a_job_on(victim, tmp_path)
    killed_job = next(job for job, addr in starts(tmp_path) if addr == victim.address)
    victim.kill_all()
    wait_until(lambda: f"{victim.address} failed" in run.stderr, 30, "the worker declared failed")
    # The crashed host comes back while the session still runs, so that the
    # session's last cleanup can remove its key from the (shared) authorized_keys.
    victim.restart_sshd()
    result = run.wait(90)

    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 6, 0, 0, 0, 6)
    assert f"job {killed_job} queued again" in result.stdout
    started = starts(tmp_path)
    for job in range(1, 7):
        ran_on = [addr for j, addr in started if j == job]
        if job == killed_job:
            assert len(ran_on) == 2 and ran_on[0] == victim.address != ran_on[1], started
        else:
            assert len(ran_on) == 1, (job, started)
    assert sorted(job for job, _ in ends(tmp_path)) == list(range(1, 7))
    assert victim.address not in {addr for _, addr in ends(tmp_path)}
    assert_no_job_processes(hosts, "sleep")
    authorized_keys.assert_unchanged()


def test_link_cut_mid_job_worker_failed_and_job_rerouted(
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    hosts = make_hosts(3)
    victim = hosts[0]
    jobs = jobs_input(6, f"slow:{victim.address}:60:2")
    run = start(running, tmp_path, home, hosts, job_script, jobs, "--retries=0")
    wait_for_a_job_on(victim, tmp_path)
    cut_job = next(job for job, addr in starts(tmp_path) if addr == victim.address)
    wait_until(lambda: "sleep" in str(victim.processes()), 5, "the job sleeps on the victim")
    victim.cut()
    cut_at = time.monotonic()
    try:
        wait_until(
            lambda: f"{victim.address} failed" in run.stderr, 35, "the worker declared failed"
        )
        detected = time.monotonic() - cut_at
    finally:
        victim.heal()
    assert detected < 30, detected
    result = run.wait(90)

    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 6, 0, 0, 0, 6)
    assert f"job {cut_job} queued again" in result.stdout
    started = starts(tmp_path)
    assert next(addr for job, addr in started if job == cut_job) == victim.address
    assert len([job for job, _ in started if job == cut_job]) == 2
    assert sorted(job for job, _ in ends(tmp_path)) == list(range(1, 7))
    # The channel went away: the wrapper on the cut host kills the job's group.
    assert_no_job_processes(hosts, "sleep", timeout=20)
    assert_no_job_processes(hosts, str(job_script), timeout=5)
    authorized_keys.assert_unchanged()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_mid_run_stops_every_job_and_resume_finishes(
    signum: signal.Signals,
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    hosts = make_hosts(3)
    run = start(running, tmp_path, home, hosts, job_script, jobs_input(6, "60"))
    wait_until(lambda: len(starts(tmp_path)) >= 3, 20, "three jobs started")
    wait_until(
        lambda: all("sleep" in str(host.processes()) for host in hosts), 5, "jobs sleep everywhere"
    )
    # SIGINT to the whole group, as a terminal's Ctrl-C; SIGTERM to the controller.
    if signum is signal.SIGINT:
        os.killpg(run.process.pid, signum)
    else:
        run.process.send_signal(signum)
    result = run.wait(30)

    assert result.returncode == 1, result.stderr
    counts = helpers.summary(result)
    assert counts.ok == 0 and counts.total == 6 and counts.pending == 6, counts
    assert "aborted" in result.stdout
    assert not ends(tmp_path)
    assert_no_job_processes(hosts, "sleep")
    assert_no_job_processes(hosts, str(job_script), timeout=5)
    authorized_keys.assert_unchanged()

    (job_script.parent / "fast").touch()
    resumed = helpers.run(
        [CLOUDTASK, f"--resume={counts.id}"], env=env_for(home), timeout=RUN_TIMEOUT
    )
    assert resumed.returncode == 0, resumed.stderr
    assert helpers.counts(resumed) == (0, 6, 0, 0, 0, 6)
    assert sorted(job for job, _ in ends(tmp_path)) == [1, 2, 3, 4, 5, 6]
    authorized_keys.assert_unchanged()


def test_host_killed_during_post_is_a_warning_and_the_results_stand(
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    hosts = make_hosts(1)
    victim = hosts[0]
    post_started = tmp_path / "post-started"
    run = start(
        running,
        tmp_path,
        home,
        hosts,
        job_script,
        jobs_input(2),
        f"--post=touch {post_started}; sleep 600",
    )
    wait_until(post_started.exists, 30, "--post started")
    victim.kill_all()
    wait_until(lambda: "--post failed" in run.stderr, 30, "the lost --post reported")
    victim.restart_sshd()  # so the last cleanup can remove the session key
    result = run.wait(60)

    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 2, 0, 0, 0, 2)
    assert_no_job_processes(hosts, "sleep")
    authorized_keys.assert_unchanged()


def test_ctrl_c_while_the_cleanup_is_tried_again_skips_it_and_resume_removes_the_key(
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    hosts = make_hosts(2)
    victim = hosts[0]
    jobs = jobs_input(4, f"slow:{victim.address}:60:1")
    run = start(running, tmp_path, home, hosts, job_script, jobs, "--retries=0")
    wait_for_a_job_on(victim, tmp_path)
    victim.kill_all()  # its sshd stays down: the last cleanup tries cannot reach it
    wait_until(lambda: "trying again to clean up" in run.out_path.read_text(), 60, "cleanup tries")
    run.process.send_signal(signal.SIGINT)
    result = run.wait(10)

    assert result.returncode == 0, result.stderr  # every job ran: the results stand
    assert helpers.counts(result) == (0, 4, 0, 0, 0, 4)
    assert f"{victim.address}: cleanup skipped, the session key is left there" in result.stderr
    assert "Traceback" not in result.stderr
    session = helpers.summary(result).id

    victim.restart_sshd()
    resumed = helpers.cloudtask(f"--resume={session}", env=env_for(home))
    assert resumed.returncode == 0, resumed.stderr
    assert "is finished: nothing to run" in resumed.stdout
    authorized_keys.assert_unchanged()


def test_a_key_added_unseen_on_a_cut_link_is_removed_at_the_end(
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    """The add runs on the worker but its answer is lost: the one-copy removal at
    cleanup never pairs with it, so the run removes every copy before it forgets
    its key (found by the chaos run: copies of forgotten keys were left)."""
    hosts = make_hosts(2)
    victim = hosts[0]
    # Hold the lock that key edits take: the adds wait for it on the hosts.
    ssh_dir = os.open("/root/.ssh", os.O_RDONLY)
    try:
        fcntl.flock(ssh_dir, fcntl.LOCK_EX)
        run = start(running, tmp_path, home, hosts, job_script, jobs_input(4, "0.1"))
        wait_until(
            lambda: any("cloudtask-keys" in p.cmdline for p in victim.processes()),
            20,
            "the key's add waiting on the victim",
        )
        victim.cut()
    finally:
        os.close(ssh_dir)  # the add goes on, on the victim's side of the cut
    try:
        # The other worker runs every job; the victim's connection attempt is
        # then given up, and the key is removed from it at the end (its link
        # healed by then: the removal's connection gets through on a resend).
        wait_until(lambda: run.out_path.read_text().count(" ok (exit") == 4, 30, "every job done")
    finally:
        victim.heal()
    result = run.wait(90)

    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 4, 0, 0, 0, 4)
    session = helpers.summary(result).id
    with StoreReader.open(helpers.sessions_dir() / str(session)) as store:
        assert store.meta_text(meta.SESSION_KEYS) == "[]"
    authorized_keys.assert_unchanged()


# -- a worker that cannot be reached (issue 18, item 3) --------------------------------


def run_with_a_cut_host(
    hosts: TestHosts, home: Path, dead: Host, workers: str, timeout: str, jobs: int
) -> tuple[subprocess.CompletedProcess[str], float]:
    """cloudtask with `dead`'s link down for the run; its result and how long it took."""
    dead.cut()
    try:
        started = time.monotonic()
        result = helpers.run(
            [
                CLOUDTASK,
                "--force",
                f"--ssh-identity={hosts.client_key}",
                f"--workers={workers}",
                f"--connect-timeout={timeout}",
                "true",
            ],
            input=jobs_input(jobs),
            env=env_for(home),
            timeout=RUN_TIMEOUT,
        )
        return result, time.monotonic() - started
    finally:
        dead.heal()


def test_an_unreachable_worker_does_not_hold_the_run_once_every_job_ended(
    make_hosts: MakeHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    """Its connection attempt would take the connect timeout (30 s here): the run
    ends with the last job instead, and the dead worker's key is not in question."""
    hosts = make_hosts(2)
    live, dead = hosts[0], hosts[1]
    result, took = run_with_a_cut_host(hosts, home, dead, f"{live.login} {dead.login}", "30", 3)
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 3, 0, 0, 0, 3)
    assert took < 20, f"the run took {took:.1f} s: it waited on the dead worker"
    authorized_keys.assert_unchanged()


def test_a_connection_that_times_out_says_so(
    make_hosts: MakeHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    hosts = make_hosts(1)
    dead = hosts[0]
    result, took = run_with_a_cut_host(hosts, home, dead, dead.login, "2", 1)
    assert result.returncode == 1
    assert f"cannot connect to {dead.login}: timed out after 2 s" in result.stderr, result.stderr
    assert took < 15, f"{took:.1f} s"
    authorized_keys.assert_unchanged()


# -- a job whose child leaves its process group (issue 18, item 1) --------------

# The job starts a process in a session of its own that keeps the job's output
# open (41 s: a number no other test's sleep uses), then goes on in its group.
ESCAPING_JOB = "setsid sleep 41 & sleep"


def run_escaping_job(
    running: list[Running], tmp_path: Path, home: Path, host: Host, keys: Path, *options: str
) -> Running:
    args = [f"--workers={host.login}", f"--ssh-identity={keys}", *options, ESCAPING_JOB]
    run = Running(tmp_path, home, args, b"60\n")
    running.append(run)
    return run


def test_a_timeout_is_not_held_by_a_child_that_left_the_group(
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    hosts = make_hosts(1)
    started = time.monotonic()
    run = run_escaping_job(running, tmp_path, home, hosts[0], hosts.client_key, "--timeout=2")
    result = run.wait(30)
    took = time.monotonic() - started

    assert result.returncode == 1, result.stderr
    assert helpers.counts(result) == (1, 1, 0, 1, 0, 0)
    assert "job 1 timeout (timed out after 4" in result.stdout  # 2 s, the kill, the drain
    assert "outside its process group still holds its output open" in result.stdout
    assert took < 25, f"the run waited for the escaped child: {took:.0f} s"
    # The job's own group is gone; the escaped child is out of reach, as documented.
    assert not [p for p in job_processes(hosts[0]) if "sleep 60" in p]
    assert [p for p in job_processes(hosts[0]) if "sleep 41" in p]
    authorized_keys.assert_unchanged()


def test_a_job_that_ended_is_not_held_by_a_child_that_left_the_group(
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    hosts = make_hosts(1)
    args = [f"--workers={hosts[0].login}", f"--ssh-identity={hosts.client_key}"]
    run = Running(tmp_path, home, [*args, "setsid sleep 41 & sleep 1; echo started"], b"x\n")
    running.append(run)
    result = run.wait(25)

    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 1, 0, 0, 0, 1)
    assert helpers.outputs_by_job(result.stdout) == {1: ["started x"]}
    assert "still holds its output open; not waited for" in result.stdout
    authorized_keys.assert_unchanged()


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_an_abort_is_not_held_by_a_child_that_left_the_group(
    signal_number: signal.Signals,
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    hosts = make_hosts(1)
    run = run_escaping_job(running, tmp_path, home, hosts[0], hosts.client_key)
    wait_until(lambda: "job 1 started" in run.out_path.read_text(), 20, "the job started")
    wait_until(lambda: job_processes(hosts[0]), 10, "the job's processes on the host")
    aborted = time.monotonic()
    run.process.send_signal(signal_number)
    result = run.wait(25)
    took = time.monotonic() - aborted

    assert result.returncode == 1, result.stderr  # aborted
    assert helpers.counts(result) == (1, 1, 1, 0, 0, 0)  # pending again, for a resume
    assert "job 1 stopped by the abort: pending again" in result.stdout
    assert "aborted: unfinished jobs are pending" in result.stdout
    assert took < 15, f"the abort waited for the escaped child: {took:.0f} s"
    authorized_keys.assert_unchanged()


# -- keys left by a killed run, on workers a resume does not use (issue 18, items 3, 4) --


def test_a_key_left_on_a_worker_the_resume_does_not_use_is_removed_there(
    make_hosts: MakeHosts,
    tmp_path: Path,
    home: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
    running: list[Running],
) -> None:
    hosts = make_hosts(2)
    old, new = hosts[0], hosts[1]
    args = [f"--workers={old.login}", f"--ssh-identity={hosts.client_key}", str(job_script)]
    killed = Running(tmp_path, home, args, jobs_input(4, "60"))
    running.append(killed)
    wait_for_a_job_on(old, tmp_path)
    killed.kill()  # its key stays in authorized_keys, recorded as sent to `old`
    (job_script.parent / "fast").touch()
    session = 1
    assert helpers.sessions_dir().joinpath(str(session)).is_dir()

    # The old worker cannot be reached: the resume runs on the new one all the
    # same, and does not wait for the old one once its jobs are done.
    old.cut()
    try:
        started = time.monotonic()
        resumed = helpers.cloudtask(
            f"--resume={session}",
            f"--workers={new.login}",
            "--connect-timeout=60",
            env=env_for(home),
            timeout=90,
        )
        took = time.monotonic() - started
    finally:
        old.heal()
    assert resumed.returncode == 0, resumed.stderr
    assert helpers.counts(resumed) == (0, 4, 0, 0, 0, 4)
    assert took < 40, f"the resume waited for the unreachable old worker: {took:.0f} s"
    assert (
        f"{old.login}:22: an earlier run's session key may be left there "
        f"(not reached before the run ended); cloudtask --resume={session} --sessions="
    ) in resumed.stderr
    assert stored_key_workers(session) != {}  # still recorded, on the old worker

    # Reached again, the old worker loses the key, though no run uses it now.
    again = helpers.cloudtask(f"--resume={session}", env=env_for(home))
    assert again.returncode == 0, again.stderr
    assert "is finished: nothing to run" in again.stdout
    assert f"{old.login}:22: removed an earlier run's session key" in again.stdout
    assert stored_key_workers(session) == {}
    authorized_keys.assert_unchanged()


def stored_key_workers(session: int) -> dict[str, list[str]]:
    """The session's keys still recorded, with the workers they may be on."""
    with StoreReader.open(helpers.sessions_dir() / str(session)) as store:
        keys = store.session_keys()
        workers = store.meta(meta.SESSION_KEY_WORKERS) or {}
    return {key: workers.get(key, []) for key in keys}
