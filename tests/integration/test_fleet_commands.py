"""cloudtask-launch-workers and cloudtask-destroy-workers on the test cloud.

The cloud is the Hub API test server whose instances are real SSH test hosts
(tests/support/testcloud.py). Exit statuses as SPEC section 7 says: 0 all done, 1 a
fatal error, 2 some could not be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import helpers
from tests.support.hubserver import HubServer
from tests.support.processes import stop_watchdogs
from tests.support.ssh import (
    CLOUDTASK,
    KeysSnapshot,
    env_for,
    jobs_input,
    starts,
)
from tests.support.testcloud import HostsBackend
from tests.support.wait import wait_until

BIN = Path(sys.executable).parent
LAUNCH = str(BIN / "cloudtask-launch-workers")
DESTROY = str(BIN / "cloudtask-destroy-workers")
APIKEY = "fleet-key-0b9e"


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[HubServer, HostsBackend]]:
    backend = HostsBackend(tmp_path)
    hub = HubServer(APIKEY, backend).start()
    yield hub, backend
    stop_watchdogs(helpers.sessions_dir())  # before their cloud goes away
    hub.stop()
    left = backend.close()
    assert left == [], f"test hosts of launched instances left running: {left}"


def fleet(
    command: str, hub: HubServer, home: Path, *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    env = env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY}
    result = helpers.run(
        [command, "--provider=hub", f"--hub-url={hub.url}", *args],
        input=input,
        env=env,
        timeout=90,
    )
    helpers.assert_no_traceback(result)
    assert APIKEY not in result.stdout + result.stderr
    return result


def test_launch_use_then_destroy_workers(
    cloud: tuple[HubServer, HostsBackend],
    tmp_path: Path,
    home: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
) -> None:
    hub, backend = cloud
    workers = tmp_path / "workers"

    launched = fleet(LAUNCH, hub, home, "2", str(workers))

    assert launched.returncode == 0, launched.stderr
    addresses = workers.read_text().split()
    assert sorted(addresses) == sorted(backend.addresses.values())
    assert len(backend.alive()) == 2

    # They are pre-launched workers now: a session uses them and leaves them running.
    env = env_for(home)
    result = helpers.run(
        [
            CLOUDTASK,
            "--force",
            f"--workers={workers}",
            f"--ssh-identity={backend.key}",
            str(job_script),
        ],
        input=jobs_input(4),
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert {address for _, address in starts(tmp_path)} == set(addresses)
    assert len(backend.alive()) == 2
    authorized_keys.assert_unchanged()

    destroyed = fleet(DESTROY, hub, home, str(workers))

    assert destroyed.returncode == 0, destroyed.stderr
    assert sorted(destroyed.stdout.split()) == sorted(["destroyed"] * 2 + addresses)
    assert workers.read_text() == ""
    hub.settle()
    assert backend.alive() == []


def test_destroy_keeps_and_reports_the_addresses_it_could_not_destroy(
    cloud: tuple[HubServer, HostsBackend], tmp_path: Path, home: Path
) -> None:
    hub, backend = cloud
    workers = tmp_path / "workers"
    assert fleet(LAUNCH, hub, home, "1", str(workers)).returncode == 0
    (address,) = workers.read_text().split()
    workers.write_text(f"{address}\n198.18.255.254\n")

    result = fleet(DESTROY, hub, home, str(workers))

    assert result.returncode == 2
    assert "198.18.255.254" in result.stderr
    assert workers.read_text() == "198.18.255.254\n"
    hub.settle()
    assert backend.alive() == []


def test_a_launch_that_fails_for_some_exits_2_and_for_all_exits_1(
    cloud: tuple[HubServer, HostsBackend], tmp_path: Path, home: Path
) -> None:
    hub, backend = cloud
    hub.fail(403, count=1, endpoint="launch")
    some = fleet(LAUNCH, hub, home, "2", "-")

    assert some.returncode == 2, some.stderr
    assert len(some.stdout.split()) == 1
    assert "403" in some.stderr

    hub.fail(403, count=5, endpoint="launch")
    none = fleet(LAUNCH, hub, home, "2", "-")
    assert none.returncode == 1
    assert none.stdout == ""

    assert fleet(DESTROY, hub, home, "-", input=some.stdout.encode()).returncode == 0
    hub.settle()
    assert backend.alive() == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--provider=local", "1", "-"], "local launches nothing"),
        (["1"], "expected N"),
        (["0", "-"], "expected N"),
        (["--no-such=1", "1", "-"], "unknown option --no-such"),
    ],
)
def test_bad_launch_arguments_are_one_line_fatal_errors(
    args: list[str], needle: str, home: Path
) -> None:
    result = helpers.run([LAUNCH, *args], env=env_for(home), input=None)

    assert result.returncode == 1
    first, *rest = result.stderr.splitlines()
    assert first.startswith("cloudtask-launch-workers: ") and needle in first
    assert all(line.startswith("usage: ") for line in rest)
    helpers.assert_no_traceback(result)


def children_of(parent: int, marker: str) -> list[int]:
    """Child processes of `parent` whose command line contains marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" in status and marker in cmdline:
            found.append(int(entry.name))
    return found


def test_destroy_session_destroys_what_a_killed_controller_and_watchdog_left(
    cloud: tuple[HubServer, HostsBackend], tmp_path: Path, home: Path, job_script: Path
) -> None:
    hub, backend = cloud
    argv = [
        CLOUDTASK,
        "--force",
        "--provider=hub",
        f"--hub-url={hub.url}",
        f"--ssh-identity={backend.key}",
        "--split=2",
        str(job_script),
    ]
    env = env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY}
    (tmp_path / "jobs").write_bytes(jobs_input(4, "30"))
    with (tmp_path / "jobs").open("rb") as stdin:
        process = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    wait_until(lambda: len(starts(tmp_path)) >= 2, 60, "two jobs started")
    # Everything that would clean up dies at once: the controller and its watchdog.
    (watchdog,) = children_of(process.pid, "cloudtask.watchdog")
    os.kill(watchdog, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert len(backend.alive()) == 2
    session = helpers.session_ids()[0]

    # The next run in that sessions directory, of anything, says so.
    later = helpers.run(
        [CLOUDTASK, "--force", "--split=1", "echo"], input=b"x\n", env=env_for(home)
    )
    assert later.returncode == 0, later.stderr
    assert f"session {session}: 2 launched servers may still be running" in later.stderr
    assert f"cloudtask-destroy-workers --session={session}" in later.stderr

    result = fleet(DESTROY, hub, home, f"--session={session}")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("destroyed ") == 2
    hub.settle()
    assert backend.alive() == []
    quiet = helpers.run(
        [CLOUDTASK, "--force", "--split=1", "echo"], input=b"x\n", env=env_for(home)
    )
    assert "may still be running" not in quiet.stderr
    again = fleet(DESTROY, hub, home, f"--session={session}")
    assert again.returncode == 0 and again.stdout == ""


def test_an_interrupted_launch_says_it_destroyed_what_it_launched(
    cloud: tuple[HubServer, HostsBackend], tmp_path: Path, home: Path
) -> None:
    hub, backend = cloud
    # The instance is made, but the Hub cannot say it runs: the launch waits.
    hub.fail(503, count=1000, endpoint="instance")
    env = env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY}
    launch = subprocess.Popen(
        [LAUNCH, "--provider=hub", f"--hub-url={hub.url}", "1", "-"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(lambda: len(backend.alive()) == 1, 30, "the instance made")
        launch.send_signal(signal.SIGINT)
        out, err = launch.communicate(timeout=60)
    finally:
        if launch.poll() is None:
            launch.kill()

    assert launch.returncode == 1, err
    assert out == ""
    assert "stopped: destroyed 1 of the 1 instances launched so far (" in err, err
    assert "no address was written" in err
    assert "Traceback" not in err and APIKEY not in err
    hub.settle()
    assert backend.alive() == []
