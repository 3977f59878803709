"""The test hosts themselves (tests/support/hosts.py): reachable, clean, breakable, removable."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support.hosts import (
    ROUTE_PROTOCOL,
    TEST_NETWORK,
    Host,
    TestHosts,
    process_alive,
    reap_stale_runs,
    unavailable_reason,
)
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
TESTHOSTS = REPO / "scripts" / "testhosts"

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")


def ssh(
    hosts: TestHosts,
    address: str,
    command: str,
    *options: str,
    known_hosts: Path | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run command with the real OpenSSH client, strict host key checking."""
    known = known_hosts if known_hosts is not None else hosts.known_hosts_file()
    argv = ["ssh", "-F", "none", "-i", str(hosts.client_key), "-o", "BatchMode=yes"]
    argv += ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
    argv += [*options, address, command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def require_hosts() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no test hosts: {reason}")


def wait_for_no_processes(host: Host) -> None:
    """Within 10 s the host runs nothing but its sshd listener (the processes named if not)."""
    try:
        wait_until(lambda: host.processes() == [], 10, f"no process on {host.name}")
    except AssertionError as error:
        raise AssertionError(f"{error}: {host.processes()}") from None


def netns_names() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def link_names() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def block_routes() -> str:
    command = ["ip", "-4", "route", "show", "proto", str(ROUTE_PROTOCOL)]
    return subprocess.run(command, capture_output=True, text=True).stdout


def test_every_host_accepts_the_client_key_with_strict_host_key_checking(
    hosts: TestHosts,
) -> None:
    assert len(hosts.addresses) == 3
    for address in hosts.addresses:
        result = ssh(hosts, address, "true")
        assert result.returncode == 0, result.stderr


def test_ssh_command_helper_reaches_each_host_and_runs_there(hosts: TestHosts) -> None:
    for host in hosts:
        command = hosts.ssh_command(host, "ip -o -4 addr show dev eth0")
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert f"inet {host.address}/30" in result.stdout


def test_addresses_and_names_are_distinct_and_inside_the_test_block(hosts: TestHosts) -> None:
    addresses = [ipaddress.IPv4Address(host.address) for host in hosts]
    root_sides = [ipaddress.IPv4Address(host.root_address) for host in hosts]
    assert all(address in TEST_NETWORK for address in addresses + root_sides)
    assert len(set(addresses + root_sides)) == 2 * len(hosts)
    assert len({host.netns for host in hosts}) == len(hosts)
    assert all(len(host.root_veth) <= 15 for host in hosts)
    assert hosts.workers_file().read_text().split() == hosts.addresses
    assert hosts.addresses == [f"root@{host.address}" for host in hosts]
    assert [line.split()[0] for line in hosts.known_hosts_file().read_text().splitlines()] == [
        host.address for host in hosts
    ]


def test_commands_do_not_run_roots_bashrc(hosts: TestHosts) -> None:
    # root's ~/.bashrc here exports PYENV_ROOT and runs `pyenv init` (~90 ms a command).
    result = ssh(hosts, hosts.addresses[0], 'echo "[$PYENV_ROOT][$PYENV_SHELL]"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[][]\n"


def test_a_fresh_host_has_no_process_but_its_sshd_listener(hosts: TestHosts) -> None:
    for host in hosts:
        # sshd's session processes of earlier tests' connections may still be exiting
        wait_for_no_processes(host)
        assert len(host.pids()) == 1


def test_processes_lists_a_job_left_running_in_the_namespace(hosts: TestHosts) -> None:
    host = hosts[1]
    marker = f"sleep 1000.{os.getpid()}1"
    result = ssh(hosts, host.login, f"setsid {marker} </dev/null >/dev/null 2>&1 &")
    assert result.returncode == 0, result.stderr
    try:
        deadline = time.monotonic() + 10
        while not [p for p in host.processes() if p.cmdline == marker]:
            assert time.monotonic() < deadline, host.processes()
            time.sleep(0.05)
    finally:
        for process in host.processes():
            if process.cmdline == marker:
                os.kill(process.pid, signal.SIGKILL)


def test_cut_makes_connections_time_out_and_heal_restores_them(hosts: TestHosts) -> None:
    cut, other = hosts[0], hosts[2]
    cut.cut()
    try:
        started = time.monotonic()
        result = ssh(hosts, cut.login, "true", "-o", "ConnectTimeout=2")
        elapsed = time.monotonic() - started
        assert result.returncode == 255
        assert "timed out" in result.stderr
        assert elapsed >= 1.9  # packets are lost silently, nothing refuses them
        assert ssh(hosts, other.login, "true").returncode == 0
    finally:
        cut.heal()
    result = ssh(hosts, cut.login, "true", "-o", "ConnectTimeout=5")
    assert result.returncode == 0, result.stderr


def test_an_established_connection_hangs_while_cut_and_resumes_when_healed(
    hosts: TestHosts,
) -> None:
    host = hosts[0]
    command = ["ssh", *hosts.ssh_options(), host.login, "echo started; sleep 2; echo finished"]
    session = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert session.stdout is not None
        assert session.stdout.readline() == "started\n"
        host.cut()
        try:
            time.sleep(3)
            assert session.poll() is None  # the job's output cannot arrive
        finally:
            host.heal()
        stdout, stderr = session.communicate(timeout=30)
    finally:
        if session.poll() is None:
            session.kill()
            session.communicate()
    assert (stdout, session.returncode) == ("finished\n", 0), stderr


def test_kill_all_leaves_no_process_and_restart_sshd_brings_it_back(
    make_hosts: Callable[[int], TestHosts],
) -> None:
    hosts = make_hosts(1)
    host = hosts[0]
    marker = f"sleep 1000.{os.getpid()}2"
    result = ssh(hosts, host.login, f"setsid {marker} </dev/null >/dev/null 2>&1 &")
    assert result.returncode == 0, result.stderr
    # A session still open while the host dies.
    session = subprocess.Popen(
        ["ssh", *hosts.ssh_options(), host.login, "echo up; sleep 1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert session.stdout is not None
        assert session.stdout.readline() == "up\n"
        commands = [process.cmdline for process in host.processes()]
        assert marker in commands
        assert any(command.startswith("sshd: root@") for command in commands)

        host.kill_all()

        assert host.pids() == []
        assert session.wait(timeout=30) == 255  # the connection broke
    finally:
        if session.poll() is None:
            session.kill()
        session.communicate()
    refused = ssh(hosts, host.login, "true", "-o", "ConnectTimeout=5")
    assert refused.returncode == 255
    assert "refused" in refused.stderr

    host.restart_sshd()

    assert ssh(hosts, host.login, "true").returncode == 0
    wait_for_no_processes(host)


def test_change_host_key_fails_strict_checking_against_the_old_key(
    make_hosts: Callable[[int], TestHosts],
) -> None:
    hosts = make_hosts(2)
    changed, unchanged = hosts[0], hosts[1]
    old_known_hosts = hosts.run_dir / "old_known_hosts"
    shutil.copyfile(hosts.known_hosts_file(), old_known_hosts)
    old_line = changed.host_key_line

    changed.change_host_key()

    assert changed.host_key_line != old_line
    result = ssh(hosts, changed.login, "true", known_hosts=old_known_hosts)
    assert result.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr
    assert ssh(hosts, unchanged.login, "true", known_hosts=old_known_hosts).returncode == 0
    assert ssh(hosts, changed.login, "true").returncode == 0  # with the new known_hosts


def test_nothing_of_a_run_is_left_after_its_context_exits() -> None:
    require_hosts()
    with TestHosts(2) as hosts:
        namespaces = [host.netns for host in hosts]
        veths = [host.root_veth for host in hosts]
        sshd_pids = [pid for host in hosts for pid in host.pids()]
        run_dir, block = hosts.run_dir, str(hosts.block)
        assert all(name in netns_names() for name in namespaces)
        assert all(f" {name}@" in link_names() for name in veths)
        assert block in block_routes()
        assert len(sshd_pids) == 2

    assert not any(name in netns_names() for name in namespaces)
    assert not any(f" {name}@" in link_names() for name in veths)
    assert block not in block_routes()
    assert not any(process_alive(pid) for pid in sshd_pids)
    assert not run_dir.exists()


def test_hosts_are_removed_when_the_block_raises() -> None:
    require_hosts()
    with pytest.raises(KeyError), TestHosts(1) as hosts:
        netns = hosts[0].netns
        job = subprocess.run(
            hosts.ssh_command(hosts[0], "setsid sleep 1000 </dev/null >/dev/null 2>&1 &"),
            timeout=30,
        )
        assert job.returncode == 0
        pids = hosts[0].pids()
        assert any(process.cmdline == "sleep 1000" for process in hosts[0].processes())
        raise KeyError("boom")
    assert netns not in netns_names()
    assert not any(process_alive(pid) for pid in pids)


def test_hosts_of_a_killed_owner_are_reaped(tmp_path: Path) -> None:
    require_hosts()
    program = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.support.hosts import TestHosts\n"
        "hosts = TestHosts(1)\n"
        "hosts.start()\n"
        "print(hosts[0].netns, *hosts[0].pids(), flush=True)\n"
        "time.sleep(1000)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    netns, *pid_words = owner.stdout.readline().split()
    owner.kill()  # no cleanup, no atexit
    owner.communicate(timeout=30)
    assert netns in netns_names()

    reaped = reap_stale_runs()

    assert netns in reaped
    assert netns not in netns_names()
    assert not any(process_alive(int(pid)) for pid in pid_words)


def test_testhosts_script_starts_hosts_in_the_background_and_stops_them(
    tmp_path: Path,
) -> None:
    require_hosts()
    directory = tmp_path / "demo"
    started = subprocess.run(
        [str(TESTHOSTS), "start", "2", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    try:
        server = int((directory / "pid").read_text())
        assert process_alive(server)
        workers = (directory / "workers").read_text().split()
        assert len(workers) == 2
        for worker in workers:
            command = ["ssh", "-F", "none", "-i", str(directory / "client_key"), "-o"]
            command += [f"UserKnownHostsFile={directory / 'known_hosts'}", "-o"]
            command += ["StrictHostKeyChecking=yes", "-o", "BatchMode=yes", worker, "true"]
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
    finally:
        stopped = subprocess.run(
            [str(TESTHOSTS), "stop", str(directory)], capture_output=True, text=True, timeout=120
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not process_alive(server)
    assert not (directory / "workers").exists()
    assert not (directory / "pid").exists()
    addresses = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for worker in workers:
        address = ipaddress.IPv4Address(worker.split("@")[1])
        root_side = str(address - 1)
        assert f"inet {root_side}/" not in addresses
        assert f"src {root_side} " not in routes
