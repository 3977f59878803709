"""Launched workers end to end, on a test cloud whose instances are real SSH hosts.

cloudtask runs as a user runs it, with `--provider=hub` pointed at the Hub API
test server (tests/support/hubserver.py) on loopback. Each launch there starts a real
test host (tests/support/testcloud.py: a network namespace with its own sshd) and each
destroy removes it, so launching, booting, SSH, jobs, destruction and the
watchdog all run for real. After every test no test host of the cloud is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import helpers
from tests.support.hosts import TestHosts
from tests.support.hubserver import unreachable_url
from tests.support.processes import watchdogs_of
from tests.support.ssh import (
    CLOUDTASK,
    KeysSnapshot,
    ends,
    env_for,
    jobs_input,
    starts,
)
from tests.support.testcloud import APIKEY, Cloud
from tests.support.wait import wait_until

from cloudtask.store import Store
from cloudtask.store import meta as keys
from cloudtask.store.reader import StoreReader
from cloudtask.transport.agent_program import LEASE_PREFIX


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    made = Cloud(tmp_path)
    yield made
    left = made.close()
    assert left == [], f"test hosts of launched instances left running: {left}"


def run(
    cloud: Cloud, home: Path, job_script: Path, jobs: bytes, *options: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    argv = [CLOUDTASK, "--force", *cloud.options(), *options, str(job_script)]
    env = env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY}
    result = helpers.run(argv, input=jobs, env=env, timeout=timeout)
    helpers.assert_no_traceback(result)
    return result


def start(
    cloud: Cloud, home: Path, tmp_path: Path, jobs: bytes, *args: str
) -> subprocess.Popen[bytes]:
    """cloudtask on the test cloud in a session of its own; its output goes to tmp_path/out."""
    argv = [CLOUDTASK, "--force", *cloud.options(), *args]
    env = env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY}
    (tmp_path / "jobs").write_bytes(jobs)
    with (tmp_path / "jobs").open("rb") as stdin, (tmp_path / "out").open("wb") as out:
        return subprocess.Popen(
            argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def instances(session: int) -> list[tuple[str, str | None, float | None, float | None]]:
    """(name, instance id, running since, destroyed at) of each launched instance."""
    # In launch order: each record's intent time is taken as it is inserted.
    with StoreReader.open(helpers.sessions_dir() / str(session)) as store:
        return [(r.name, r.instance_id, r.running, r.destroyed) for r in store.instances()]


def test_a_batch_on_launched_workers_destroys_every_one(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    result = run(cloud, home, job_script, jobs_input(6, "0.2"), "--split=2")

    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 6, 0, 0, 0, 6)
    session = helpers.summary(result).id
    launched = instances(session)
    assert [name for name, *_ in launched] == ["hub1", "hub2"]
    assert all(
        instance_id and running and destroyed for _, instance_id, running, destroyed in launched
    )
    # The jobs ran on the launched hosts, and those hosts are gone.
    assert len(cloud.backend.created) == 2
    assert cloud.backend.alive() == []
    assert {address for _, address in starts(tmp_path)} == set(cloud.backend.addresses.values())
    assert sorted(job for job, _ in ends(tmp_path)) == [1, 2, 3, 4, 5, 6]
    assert APIKEY not in result.stdout + result.stderr
    authorized_keys.assert_unchanged()


def test_workers_and_launched_ones_mix_and_only_launched_ones_are_destroyed(
    cloud: Cloud,
    make_hosts,
    tmp_path: Path,
    home: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
) -> None:
    mine: TestHosts = make_hosts(1)
    workers = tmp_path / "workers"
    workers.write_text(f"{mine[0].login}\n")
    # The pre-launched host authorizes the cloud's key too, as a user's own server would.
    (mine.run_dir / "client_keys").write_text(
        (mine.run_dir / "client_keys").read_text() + cloud.backend.public_key + "\n"
    )

    result = run(cloud, home, job_script, jobs_input(9, "0.3"), f"--workers={workers}", "--split=3")

    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 9, 0, 0, 0, 9)
    assert len(cloud.backend.created) == 2  # 3 - the 1 given
    assert cloud.backend.alive() == []
    used = {address for _, address in starts(tmp_path)}
    assert mine[0].address in used and len(used) == 3
    # The user's own server is never destroyed.
    assert mine[0].processes() is not None
    subprocess.run(mine.ssh_command(mine[0], "true"), check=True, timeout=20)
    authorized_keys.assert_unchanged()


def test_a_launched_worker_killed_mid_job_is_destroyed_and_replaced(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    process = start(cloud, home, tmp_path, jobs_input(4, "3"), "--split=2", str(job_script))
    try:
        wait_until(lambda: len(starts(tmp_path)) >= 2, 60, "two jobs started")
        victim_address = starts(tmp_path)[0][1]
        victim = next(
            instance_id
            for instance_id in cloud.backend.alive()
            if cloud.backend.hosts(instance_id)[0].address == victim_address
        )
        cloud.backend.hosts(victim)[0].kill_all()
        status = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = (tmp_path / "out").read_text()
    assert status == 0, output
    assert helpers.SUMMARY.search(output)
    assert "launching a replacement" in output
    assert len(cloud.backend.created) == 3
    assert victim in cloud.backend.removed
    assert cloud.backend.alive() == []
    assert sorted({job for job, _ in ends(tmp_path)}) == [1, 2, 3, 4]


def test_a_worker_whose_setup_fails_is_destroyed_and_gets_no_jobs(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    result = run(cloud, home, job_script, jobs_input(3), "--split=2", "--pre=exit 3")

    assert result.returncode == 1
    assert helpers.counts(result) == (3, 3, 3, 0, 0, 0)  # all 3 still pending
    assert "incomplete: the rest is pending; resume with: cloudtask --resume=" in result.stdout
    assert starts(tmp_path) == []
    assert len(cloud.backend.created) == 2
    assert cloud.backend.alive() == []


def test_a_launch_refused_for_good_is_reported_and_the_session_goes_on(
    cloud: Cloud,
    make_hosts,
    tmp_path: Path,
    home: Path,
    job_script: Path,
) -> None:
    mine: TestHosts = make_hosts(1)
    cloud.hub.fail(403, count=100, endpoint="launch")

    result = run(
        cloud,
        home,
        job_script,
        jobs_input(3),
        f"--workers={mine[0].login}",
        "--split=2",
        f"--ssh-identity={mine.client_key}",
    )

    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 3, 0, 0, 0, 3)
    assert "launch" in result.stderr and "the session goes on" in result.stderr
    assert cloud.backend.created == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_a_controller_stopped_while_instances_boot_leaves_none(
    signum: signal.Signals, tmp_path: Path, home: Path, job_script: Path
) -> None:
    """Ctrl-C: the controller destroys them; SIGKILL: the watchdog does."""
    cloud = Cloud(tmp_path, boot_delay=3.0)
    try:
        process = start(cloud, home, tmp_path, jobs_input(4, "1"), "--split=2", str(job_script))
        wait_until(lambda: len(cloud.hub.launches) == 2, 30, "two launches asked")
        os.killpg(process.pid, signum)
        status = process.wait(timeout=60)
        output = (tmp_path / "out").read_text()
        if signum is signal.SIGINT:
            assert status == 1, output
            assert "aborted" in output
        # Both instances were asked for; within bounded time neither is left.
        wait_until(lambda: len(cloud.backend.created) == 2, 30, "both booted")
        wait_until(lambda: cloud.backend.alive() == [], 60, "every launched host removed")
        session = next(iter(helpers.session_ids()))
        wait_until(
            lambda: all(destroyed for *_, destroyed in instances(session)),
            30,
            "every instance recorded as destroyed",
        )
        assert starts(tmp_path) == []
        if signum is signal.SIGKILL:
            log = (helpers.sessions_dir() / str(session) / "watchdog.log").read_text()
            assert "sweeping" in log and APIKEY not in log
    finally:
        left = cloud.close()
    assert left == []


def test_sigkill_mid_run_then_resume_finishes_on_new_instances(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    process = start(cloud, home, tmp_path, jobs_input(6, "1"), "--split=2", str(job_script))
    wait_until(lambda: len(starts(tmp_path)) >= 2, 60, "two jobs started")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    session = helpers.session_ids()[0]
    # The watchdog destroys the two instances the dead controller left.
    wait_until(lambda: cloud.backend.alive() == [], 60, "the watchdog destroyed them")
    time.sleep(0.5)  # let the watchdog let go of the session

    resumed = helpers.run(
        [CLOUDTASK, f"--resume={session}"],
        env=env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY},
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert helpers.counts(resumed) == (0, 6, 0, 0, 0, 6)
    assert sorted({job for job, _ in ends(tmp_path)}) == [1, 2, 3, 4, 5, 6]
    assert len(cloud.backend.created) == 4
    assert cloud.backend.alive() == []
    assert all(destroyed for *_, destroyed in instances(session))


def test_a_batch_on_a_libcloud_driver_launches_runs_and_destroys(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    """The libcloud provider, its driver given by import path, on the same test cloud."""
    argv = [
        CLOUDTASK,
        "--force",
        "--provider=libcloud",
        "--libcloud-driver=tests.support.libcloud_driver:CloudtaskTestDriver",
        f"--libcloud-options=url={cloud.hub.url}",
        "--libcloud-image=core",
        "--libcloud-size=small",
        f"--ssh-identity={cloud.backend.key}",
        "--split=2",
        str(job_script),
    ]
    env = env_for(home) | {
        "CLOUDTASK_LIBCLOUD_KEY": APIKEY,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    result = helpers.run(argv, input=jobs_input(4, "0.1"), env=env, timeout=90)

    helpers.assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 4, 0, 0, 0, 4)
    assert len(cloud.backend.created) == 2
    assert cloud.backend.alive() == []
    assert [name for name, *_ in instances(helpers.summary(result).id)] == [
        "libcloud1",
        "libcloud2",
    ]


def test_a_host_key_other_than_the_one_the_cloud_reports_is_refused(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    cloud.backend.report_wrong_host_keys = True

    result = run(cloud, home, job_script, jobs_input(2), "--split=1", timeout=120)

    assert result.returncode == 1
    assert "host key" in result.stderr and "refused" in result.stderr, result.stderr
    assert starts(tmp_path) == []
    assert cloud.backend.alive() == []


def test_secrets_reach_neither_the_workers_nor_the_process_table(
    cloud: Cloud, tmp_path: Path, home: Path
) -> None:
    script = tmp_path / "env.sh"
    script.write_text(
        f"#!/bin/sh\nenv > {tmp_path}/env.$1\ncat /proc/*/cmdline 2>/dev/null "
        f"| tr '\\0' ' ' > {tmp_path}/cmdlines.$1\nsleep 1\n"
    )
    script.chmod(0o755)
    seen: list[str] = []
    process = start(cloud, home, tmp_path, jobs_input(2), "--split=1", str(script))
    try:
        while process.poll() is None:  # the controller's machine, while it runs
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        seen.append((entry / "cmdline").read_bytes().decode(errors="replace"))
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, (tmp_path / "out").read_text()
    assert any("cloudtask.watchdog" in line for line in seen)
    assert not any(APIKEY in line for line in seen)
    for job in (1, 2):
        # Bytes: another process's command line (any on the machine) need not be UTF-8.
        assert APIKEY.encode() not in (tmp_path / f"env.{job}").read_bytes()
        assert b"CLOUDTASK_HUB_APIKEY" not in (tmp_path / f"env.{job}").read_bytes()
        assert APIKEY.encode() not in (tmp_path / f"cmdlines.{job}").read_bytes()
    session_dir = helpers.sessions_dir() / str(helpers.session_ids()[0])
    for path in session_dir.rglob("*"):
        if path.is_file():
            assert APIKEY.encode() not in path.read_bytes(), path


def test_budget_stops_launching_more_than_it_can_pay_for(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    # $36 an hour each: the first worker's projected hour fits $50, a second does not.
    result = run(
        cloud,
        home,
        job_script,
        jobs_input(4, "0.2"),
        "--split=2",
        "--hourly-price=36",
        "--budget=50",
    )

    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 4, 0, 0, 0, 4)
    assert "--budget=$50: one more worker would bring it to $" in result.stderr
    assert len(cloud.backend.created) == 1
    assert cloud.backend.alive() == []


def test_budget_drains_the_run_once_the_projection_passes_it(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    # 20,000 one-second jobs on one worker at $0.50 an hour: once a job has
    # ended, the projection is some $2.80, past the $1 budget.
    result = run(
        cloud,
        home,
        job_script,
        jobs_input(20_000, "1"),
        "--split=1",
        "--hourly-price=0.5",
        "--budget=1",
    )

    assert result.returncode == 1
    counts = helpers.summary(result)
    assert 1 <= counts.ok <= 3 and counts.pending == 20_000 - counts.ok, counts
    assert "--budget=$1: the projected cost $" in result.stderr
    assert "halted (--budget=$1)" in result.stdout
    assert cloud.backend.alive() == []
    session = counts.id
    with StoreReader.open(helpers.sessions_dir() / str(session)) as store:
        assert store.meta(keys.STATE) == "halted"


def test_ctrl_c_while_a_launched_worker_is_not_answering_ssh_yet_ends_at_once(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    cloud.backend.sshd_down = True
    process = start(cloud, home, tmp_path, jobs_input(2), "--split=1", str(job_script))
    wait_until(lambda: cloud.backend.alive() != [], 30, "the instance booted")
    time.sleep(2)  # cloudtask now tries SSH again and again
    os.killpg(process.pid, signal.SIGINT)
    started = time.monotonic()
    status = process.wait(timeout=30)

    output = (tmp_path / "out").read_text()
    assert status == 1, output
    assert time.monotonic() - started < 10, output
    assert "aborted" in output
    wait_until(lambda: cloud.backend.alive() == [], 30, "the instance destroyed")


def test_a_launch_whose_answer_was_lost_makes_no_second_instance(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    # The Hub launches the instance, then the answer is lost (504): the retry
    # must find that instance by its token rather than make another.
    cloud.hub.fail(504, count=1, endpoint="launch", after=True)

    result = run(cloud, home, job_script, jobs_input(2), "--split=1")

    assert result.returncode == 0, result.stderr
    assert len(cloud.backend.created) == 1
    assert cloud.backend.alive() == []


def test_a_launch_retried_after_an_error_leaves_nothing_uncertain_at_the_end(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    """The Hub's launch looks for its token before it tries again, so a retried
    launch makes no stray instance: a clean run ends clean, with no sweep to wait for."""
    cloud.hub.fail(503, count=1, endpoint="launch")

    started = time.monotonic()
    result = run(cloud, home, job_script, jobs_input(2), "--split=1")
    took = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert "trying again" in result.stderr  # the error was met, and retried
    assert "may still be running" not in result.stderr
    assert took < 60, f"{took:.0f} s: the run waited on a sweep"
    session = helpers.sessions_dir() / str(helpers.summary(result).id)
    assert not watchdogs_of(helpers.sessions_dir())
    assert "the controller destroyed every instance" in (session / "watchdog.log").read_text()
    assert len(cloud.backend.created) == 1
    assert cloud.backend.alive() == []


def test_a_worker_the_cloud_cannot_describe_is_destroyed_and_the_run_ends_cleanly(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    cloud.hub.fail(403, count=100, endpoint="instance")

    result = run(cloud, home, job_script, jobs_input(2), "--split=1")

    assert result.returncode == 1, result.stderr
    assert helpers.counts(result) == (2, 2, 2, 0, 0, 0)
    assert "403" in result.stderr and "the session goes on without it" in result.stderr
    cloud.hub.settle()
    assert cloud.backend.alive() == []
    assert all(destroyed for *_, destroyed in instances(helpers.summary(result).id))


# -- cloud workers as users run them (issue 19) -----------------------------------------


def run_with_identity(
    cloud: Cloud, home: Path, identity: Path, jobs: bytes, *options: str, apikey: str = APIKEY
) -> tuple[subprocess.CompletedProcess[str], float]:
    """cloudtask on the test cloud logging in with `identity`; its result and how long it took."""
    argv = [
        CLOUDTASK,
        "--force",
        "--provider=hub",
        f"--hub-url={cloud.hub.url}",
        f"--ssh-identity={identity}",
        "--keepalive=1",
        *options,
        "true",
    ]
    env = env_for(home) | {"CLOUDTASK_HUB_APIKEY": apikey}
    started = time.monotonic()
    result = helpers.run(argv, input=jobs, env=env, timeout=120)
    helpers.assert_no_traceback(result)
    return result, time.monotonic() - started


def test_a_launched_worker_that_refuses_the_login_is_destroyed_at_once(
    cloud: Cloud, tmp_path: Path, home: Path
) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)

    result, took = run_with_identity(cloud, home, stranger, jobs_input(2), "--split=1")

    assert result.returncode == 1
    assert "permission denied" in result.stderr and "refused for good" in result.stderr
    assert took < 90, f"a refused login was tried for {took:.0f} s (the boot limit is 600)"
    assert helpers.counts(result) == (2, 2, 2, 0, 0, 0)
    (only,) = instances(helpers.summary(result).id)
    assert only[3] is not None  # destroyed, and recorded so
    assert "hub1 destroyed" in result.stdout
    assert cloud.backend.alive() == []


def test_a_worker_that_never_answers_ssh_is_given_up_at_the_boot_timeout(
    cloud: Cloud, tmp_path: Path, home: Path
) -> None:
    cloud.backend.sshd_down = True

    result, took = run_with_identity(
        cloud, home, cloud.backend.key, jobs_input(1), "--split=1", "--boot-timeout=6s"
    )

    assert result.returncode == 1
    assert "hub1: no SSH after 6 s (--boot-timeout)" in result.stderr, result.stderr
    # Said as it goes, not only at the end (a line each quarter of a short limit).
    assert "hub1: waiting for SSH for " in result.stdout
    assert took < 60
    assert cloud.backend.alive() == []


def test_a_destroy_the_cloud_refuses_is_not_reported_as_done(
    cloud: Cloud, tmp_path: Path, home: Path
) -> None:
    # The worker's own destroy and the run's last sweep are refused; the
    # watchdog's sweep, after the run, gets through.
    cloud.hub.fail(403, count=2, endpoint="terminate")

    result, _ = run_with_identity(cloud, home, cloud.backend.key, jobs_input(1), "--split=1")

    assert result.returncode == 1  # every job ok, but a worker may still be billing
    assert helpers.counts(result) == (0, 1, 0, 0, 0, 1)
    assert "hub1 destroyed" not in result.stdout
    assert "hub1 may still be running: the watchdog's sweep is under way" in result.stderr
    wait_until(lambda: cloud.backend.alive() == [], 60, "the watchdog destroyed hub1")


def test_a_wrong_api_key_is_refused_before_anything_runs(
    cloud: Cloud, tmp_path: Path, home: Path
) -> None:
    result, _ = run_with_identity(
        cloud, home, cloud.backend.key, jobs_input(2), "--split=1", apikey="not-the-key"
    )

    assert result.returncode == 2
    assert result.stderr.startswith("cloudtask: --provider=hub: "), result.stderr
    assert "nothing can be launched" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert helpers.session_ids() == []  # nothing ran: no session
    assert cloud.hub.requests["launch"] == 0


def test_a_budget_below_one_worker_is_refused_before_anything_runs(
    cloud: Cloud, tmp_path: Path, home: Path
) -> None:
    result, _ = run_with_identity(
        cloud,
        home,
        cloud.backend.key,
        jobs_input(2),
        "--hourly-price=2",
        "--budget=1.5",
    )

    assert result.returncode == 2
    assert "--budget=$1.5: even one hub worker ($2 an hour" in result.stderr, result.stderr
    assert helpers.session_ids() == []
    assert cloud.hub.requests["launch"] == 0


def test_a_run_that_launches_nothing_starts_no_watchdog(
    make_hosts, tmp_path: Path, home: Path, authorized_keys: KeysSnapshot
) -> None:
    mine: TestHosts = make_hosts(1)
    env = env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY}
    argv = [
        CLOUDTASK,
        "--force",
        f"--hub-url={unreachable_url()}",
        f"--workers={mine[0].login}",
        f"--ssh-identity={mine.client_key}",
        "true",
    ]
    result = helpers.run(argv, input=b"x\n", env=env, timeout=60)

    assert result.returncode == 0, result.stderr
    session = helpers.sessions_dir() / str(helpers.summary(result).id)
    assert not (session / "watchdog.log").exists()
    assert watchdogs_of(helpers.sessions_dir()) == []
    authorized_keys.assert_unchanged()


# -- the lease (SPEC section 14) ---------------------------------------------------------
# A lease keeper runs in its test host's namespace, so destroying the host
# ends it, as the end of an instance ends everything on it.


def lease_deadlines(token_dirs: list[Path]) -> list[float]:
    found = []
    for directory in token_dirs:
        with contextlib.suppress(OSError, ValueError):
            found.append(float((directory / "deadline").read_text()))
    return found


def test_a_healthy_run_renews_the_lease_of_its_launched_workers(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fired = tmp_path / "lease-fired"
    monkeypatch.setenv("CLOUDTASK_LEASE_ACTION", f"touch {fired}")
    before = set(Path("/tmp").glob(f"{LEASE_PREFIX}*"))
    # Two jobs of 1.5 s on one worker: the run outlasts the 2 s lease.
    process = start(
        cloud, home, tmp_path, jobs_input(2, "1.5"), "--split=1", "--lease=2s", str(job_script)
    )
    wait_until(lambda: len(starts(tmp_path)) >= 1, 60, "a job started")
    leases = [d for d in Path("/tmp").glob(f"{LEASE_PREFIX}*") if d not in before]
    assert len(leases) == 1, leases
    seen = set()
    while process.poll() is None:
        seen.update(lease_deadlines(leases))
        time.sleep(0.2)
    assert process.returncode == 0, (tmp_path / "out").read_text()
    # Renewed: a deadline pushed on every third of the lease while jobs ran.
    assert len(seen) >= 3, seen
    assert not fired.exists()
    assert cloud.backend.alive() == []


def test_a_lease_nobody_renews_ends_the_worker_when_the_controller_machine_is_gone(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller and its watchdog both die (a laptop loses power): the
    worker, left running, runs its lease's action once the lease is past."""
    fired = tmp_path / "lease-fired"
    monkeypatch.setenv("CLOUDTASK_LEASE_ACTION", f"touch {fired}")
    process = start(
        cloud, home, tmp_path, jobs_input(2, "30"), "--split=1", "--lease=3s", str(job_script)
    )
    wait_until(lambda: len(starts(tmp_path)) >= 1, 60, "a job started")
    time.sleep(4)  # longer than the lease: the controller renews it meanwhile
    assert not fired.exists()
    for pid in watchdogs_of(helpers.sessions_dir()):
        os.kill(pid, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    killed = time.time()
    process.wait(timeout=10)
    assert len(cloud.backend.alive()) == 1  # nobody is left to destroy it
    wait_until(fired.exists, 15, "the lease's action")
    assert fired.stat().st_mtime >= killed
    # What the user does next: the session's own cleanup command.
    destroyed = helpers.run(
        [
            str(Path(CLOUDTASK).with_name("cloudtask-destroy-workers")),
            "--provider=hub",
            f"--hub-url={cloud.hub.url}",
            "--session=1",
        ],
        env=env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY},
        timeout=120,
    )
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert cloud.backend.alive() == []


def test_a_resume_with_nothing_to_run_exits_1_while_a_launch_is_unsettled(
    cloud: Cloud, tmp_path: Path, home: Path, job_script: Path
) -> None:
    """Found by the chaos run: a session whose jobs are all done while a
    killed run's launch may still make a server. Its resume has nothing to
    run, and says so, but the server may bill: exit 1, as after a run. With
    every server gone, the same resume exits 0."""
    result = run(cloud, home, job_script, jobs_input(2, "0"), "--split=1")
    assert result.returncode == 0, result.stderr
    session = helpers.summary(result).id
    env = env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY}

    idle = helpers.run([CLOUDTASK, f"--resume={session}"], env=env, timeout=120)
    assert idle.returncode == 0, idle.stdout + idle.stderr
    assert "is finished: nothing to run" in idle.stdout
    assert "may still be running" not in idle.stderr

    # As a run SIGKILLed just after recording its launch intent leaves it.
    store = Store.open(helpers.sessions_dir() / str(session))
    store.intend_instance("f00dfeedcafe0001", "hub", "hub9", "t3.small", None, time.time())
    store.close()
    resumed = helpers.run([CLOUDTASK, f"--resume={session}"], env=env, timeout=120)
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    assert "is finished: nothing to run" in resumed.stdout
    assert "0/2 !OK" in resumed.stdout
    assert "hub9 may still be running: the watchdog's sweep is under way" in resumed.stderr
    assert f"cloudtask-destroy-workers --session={session}" in resumed.stderr
