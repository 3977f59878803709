"""cloudtask --workers against real OpenSSH servers (test hosts in network namespaces).

cloudtask runs as a real subprocess with HOME set to a directory of the test's
own (its ~/.ssh/config and ~/.ssh/known_hosts). The hosts share the file
system with the test: jobs append to files in tmp_path, and the remote side's
authorized_keys is the real /root/.ssh/authorized_keys, which every session
must leave exactly as it found it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import helpers
from tests.support.hosts import Host, TestHosts
from tests.support.ssh import (
    CLOUDTASK,
    RUN_TIMEOUT,
    KeysSnapshot,
    assert_no_job_processes,
    cloudtask,
    ends,
    env_for,
    jobs_input,
    marks,
    session_dir,
    starts,
)


def test_batch_on_three_hosts(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    result = cloudtask(
        home,
        f"--workers={hosts.workers_file()}",
        str(job_script),
        input=jobs_input(12, "0.3"),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 12, 0, 0, 0, 12)
    summary = helpers.summary(result)
    assert result.stdout.splitlines()[-1].startswith(f"session {summary.id} (")

    # Every job ran once, to its end, with empty stdin, spread over all hosts.
    started = starts(tmp_path)
    assert sorted(job for job, _ in started) == list(range(1, 13))
    assert sorted(job for job, _ in ends(tmp_path)) == list(range(1, 13))
    assert all(m[3] == "stdin=0" for m in marks(tmp_path) if m[0] == "start")
    assert {addr for _, addr in started} == {host.address for host in hosts}

    # One log per worker under SESSIONS/ID/workers/, with its jobs' output.
    logs = session_dir(result) / "workers"
    assert sorted(p.name for p in logs.iterdir()) == sorted(h.address for h in hosts)
    for job, addr in started:
        assert f"job {job} on {addr}\n" in (logs / addr).read_text()
    authorized_keys.assert_unchanged()


def test_address_listed_twice_is_two_slots(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    a, b = hosts[0].login, hosts[1].login
    result = cloudtask(
        home,
        f"--workers={a}, {a} {b}",
        str(job_script),
        input=jobs_input(3, "1.5"),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 3, 0, 0, 0, 3)
    assert helpers.split_shown(result.stdout) == 3
    logs = session_dir(result) / "workers"
    names = sorted(p.name for p in logs.iterdir())
    assert names == sorted([hosts[0].address, f"{hosts[0].address}-2", hosts[1].address])
    for name in names:  # three slots, three 1.5 s jobs: one each, at once
        assert (logs / name).read_text().count("== job ") == 2, name  # started + ended
    assert sorted(addr for _, addr in starts(tmp_path)) == sorted(
        [hosts[0].address, hosts[0].address, hosts[1].address]
    )
    authorized_keys.assert_unchanged()


def test_timeout_kills_every_process_of_the_job(
    hosts: TestHosts, home: Path, authorized_keys: KeysSnapshot
) -> None:
    marker = f"sleep 1000.{uuid.uuid4().int % 1000}"
    started = time.monotonic()
    result = cloudtask(
        home,
        f"--workers={hosts[0].login} {hosts[1].login}",
        "--timeout=1",
        "sh",
        "-c",
        f"{marker} & {marker}",
        input=b"a\nb\n",
        identity=hosts.client_key,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    assert helpers.counts(result) == (2, 2, 0, 2, 0, 0)
    assert_no_job_processes(hosts, marker)
    authorized_keys.assert_unchanged()


# --- ~/.ssh/config ----------------------------------------------------------------------------


def write_ssh_config(home: Path, text: str) -> None:
    path = home / ".ssh" / "config"
    path.write_text(text)
    path.chmod(0o600)


def test_ssh_config_alias_hostname_user_port_identityfile(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    shutil.copy(hosts.known_hosts_file(), home / ".ssh" / "known_hosts")
    config = "".join(
        f"Host alias{i}\n  HostName {host.address}\n  User root\n  Port 22\n"
        f"  IdentityFile {hosts.client_key}\n"
        for i, host in enumerate(hosts)
    )
    write_ssh_config(home, config)
    result = cloudtask(
        home,
        "--workers=alias0,alias1 alias2",
        "--user=nobody",  # --user given on the command line beats the config's User
        str(job_script),
        input=jobs_input(6, "0.2"),
    )
    # So the login as nobody fails on every worker (no key of its own): nothing runs.
    assert result.returncode == 1
    assert helpers.counts(result)[2] == 6  # all pending: no worker could log in
    assert not starts(tmp_path)

    result = cloudtask(
        home, "--workers=alias0,alias1 alias2", str(job_script), input=jobs_input(6, "0.2")
    )
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 6, 0, 0, 0, 6)
    logs = session_dir(result) / "workers"
    assert sorted(p.name for p in logs.iterdir()) == ["alias0", "alias1", "alias2"]
    assert {addr for _, addr in starts(tmp_path)} <= {h.address for h in hosts}
    assert len(starts(tmp_path)) == 6
    authorized_keys.assert_unchanged()


def test_ssh_config_without_identity_file_cannot_log_in(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    """The control for the test above: with no IdentityFile, no key, no login (no password)."""
    shutil.copy(hosts.known_hosts_file(), home / ".ssh" / "known_hosts")
    write_ssh_config(home, f"Host alias0\n  HostName {hosts[0].address}\n  User root\n")
    env_agent = {k: v for k, v in env_for(home).items() if k != "SSH_AUTH_SOCK"}
    result = helpers.run(
        [CLOUDTASK, "--force", "--workers=alias0", str(job_script)],
        input=jobs_input(2),
        env=env_agent,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 1
    assert helpers.counts(result) == (2, 2, 2, 0, 0, 0)
    assert "alias0" in result.stderr and "permission denied" in result.stderr
    assert not starts(tmp_path)
    authorized_keys.assert_unchanged()


def _namespace_can_reach(source: Host, target: Host) -> bool:
    """Whether a TCP connection from inside source's namespace reaches target's sshd."""
    probe = (
        "import socket,sys\n"
        "s=socket.create_connection((sys.argv[1],22),timeout=2)\n"
        "print(s.recv(4).decode())\n"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", source.netns, sys.executable, "-c", probe, target.address],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.returncode == 0 and done.stdout.startswith("SSH-")


def test_ssh_config_proxyjump(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    jump, target = hosts[0], hosts[1]
    if not _namespace_can_reach(jump, target):
        # The hosts' namespaces are joined only to the root namespace: a jump
        # host can reach no other test host, so jump through the target itself
        # (its own address is routable inside its namespace).
        target = jump
        if not _namespace_can_reach(jump, target):
            pytest.skip(f"{jump.name} cannot reach any sshd from inside its namespace")
    shutil.copy(hosts.known_hosts_file(), home / ".ssh" / "known_hosts")
    write_ssh_config(
        home,
        f"Host behind\n  HostName {target.address}\n  ProxyJump jumphost\n"
        f"Host jumphost\n  HostName {jump.address}\n"
        f"Host *\n  User root\n  IdentityFile {hosts.client_key}\n",
    )
    result = cloudtask(home, "--workers=behind", str(job_script), input=jobs_input(3))
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 3, 0, 0, 0, 3)
    # Through the jump host, the client end of each job's connection is the jump host
    # (inside the namespace), not the root namespace's end of the link.
    connections = [m for m in marks(tmp_path) if m[0] == "start"]
    assert len(connections) == 3
    log = (session_dir(result) / "workers" / "behind").read_text()
    assert log.count("== job ") == 6
    # $SSH_CONNECTION's client address, seen by the job: the jump host's.
    probe = cloudtask(
        home, "--workers=behind", "sh", "-c", 'echo "client=${SSH_CONNECTION%% *}"', input=b"x\n"
    )
    assert probe.returncode == 0, probe.stderr
    assert f"client={jump.address}" in helpers.job_output(probe.stdout)
    authorized_keys.assert_unchanged()


# --- host keys --------------------------------------------------------------------------------


def test_known_hosts_entries_are_used_and_nothing_pinned(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    shutil.copy(hosts.known_hosts_file(), home / ".ssh" / "known_hosts")
    result = cloudtask(
        home,
        f"--workers={hosts.workers_file()}",
        str(job_script),
        input=jobs_input(3),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 3, 0, 0, 0, 3)
    pins = session_dir(result) / "known_hosts"
    assert not pins.exists() or pins.read_text().strip() == ""
    authorized_keys.assert_unchanged()


def test_unknown_host_key_is_pinned_for_the_session(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    assert not (home / ".ssh" / "known_hosts").exists()
    result = cloudtask(
        home,
        f"--workers={hosts.workers_file()}",
        str(job_script),
        input=jobs_input(3),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    pins = (session_dir(result) / "known_hosts").read_text()
    for host in hosts:
        assert host.host_public_key in pins
        assert any(line.split()[0] == host.address for line in pins.splitlines())
    assert stat.S_IMODE((session_dir(result) / "known_hosts").stat().st_mode) == 0o600
    assert not (home / ".ssh" / "known_hosts").exists()  # the user's file is not touched
    authorized_keys.assert_unchanged()


def test_changed_host_key_is_refused_and_others_finish(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    old = hosts.known_hosts_file().read_text()
    changed = hosts[1]
    changed.change_host_key()
    (home / ".ssh" / "known_hosts").write_text(old)
    result = cloudtask(
        home,
        f"--workers={hosts.workers_file()}",
        str(job_script),
        input=jobs_input(6, "0.1"),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 6, 0, 0, 0, 6)
    assert changed.address not in {addr for _, addr in starts(tmp_path)}
    assert sorted(job for job, _ in starts(tmp_path)) == list(range(1, 7))
    refusal = [line for line in result.stderr.splitlines() if "changed" in line]
    assert refusal and changed.address in refusal[0], result.stderr
    assert "it does not match known_hosts" in refusal[0]
    # And how to accept the change when it is expected.
    assert f"if the change is expected: ssh-keygen -R {changed.address})" in refusal[0]
    pins = session_dir(result) / "known_hosts"
    assert not pins.exists() or changed.host_public_key not in pins.read_text()
    authorized_keys.assert_unchanged()


# --- setup: overlay, pre, post ---------------------------------------------------------------


def test_overlay_files_modes_symlinks_and_tmp_keeps_its_mode(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    name = f"ct-overlay-{uuid.uuid4().hex}"
    target = Path("/tmp") / name
    overlay = tmp_path / "overlay"
    tree = overlay / "tmp" / name
    (tree / "sub").mkdir(parents=True)
    (tree / "file").write_text("overlay file\n")
    (tree / "file").chmod(0o640)
    (tree / "sub" / "inner").write_text("inner\n")
    (tree / "link").symlink_to("file")
    (overlay / "tmp").chmod(0o755)  # what a careless overlay has: must not reach /tmp
    tmp_mode = stat.S_IMODE(os.stat("/tmp").st_mode)
    assert tmp_mode == 0o1777
    try:
        result = cloudtask(
            home,
            f"--workers={hosts.workers_file()}",
            f"--overlay={overlay}",
            "sh",
            "-c",
            # The hosts share one file system: a job waits a moment so that it
            # reads the files after every host's overlay has been unpacked.
            f'sleep 1; cd {target} && stat -c "%a %n" file && cat sub/inner && readlink link',
            input=b"1\n2\n3\n",
            identity=hosts.client_key,
        )
        assert result.returncode == 0, result.stderr
        assert helpers.counts(result) == (0, 3, 0, 0, 0, 3)
        out = helpers.job_output(result.stdout)
        assert out.count("640 file") == 3 and out.count("inner") == 3 and out.count("file") == 3
        assert stat.S_IMODE((target / "file").stat().st_mode) == 0o640
        assert (target / "sub").is_dir() and (target / "sub" / "inner").read_text() == "inner\n"
        assert (target / "link").is_symlink() and os.readlink(target / "link") == "file"
        assert stat.S_IMODE(os.stat("/tmp").st_mode) == 0o1777
        authorized_keys.assert_unchanged()
    finally:
        shutil.rmtree(target, ignore_errors=True)
        assert stat.S_IMODE(os.stat("/tmp").st_mode) == 0o1777


def test_bad_overlay_worker_gets_no_jobs(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    # /proc takes no new directories: tar fails on every worker.
    overlay = tmp_path / "overlay"
    (overlay / "proc" / f"ct-overlay-{uuid.uuid4().hex}").mkdir(parents=True)
    (overlay / "proc").chmod(0o555)
    result = cloudtask(
        home,
        f"--workers={hosts[0].login} {hosts[1].login}",
        f"--overlay={overlay}",
        str(job_script),
        input=jobs_input(4),
        identity=hosts.client_key,
    )
    (overlay / "proc").chmod(0o755)
    assert result.returncode == 1
    assert helpers.counts(result) == (4, 4, 4, 0, 0, 0)
    assert not starts(tmp_path)
    for host in hosts[:2]:
        why = [line for line in result.stderr.splitlines() if host.address in line]
        assert why and "overlay" in why[0] and "tar" in why[0], result.stderr
    log = (session_dir(result) / "log").read_text()
    assert log.count("setup failed") == 2 and "tar" in log
    authorized_keys.assert_unchanged()


def test_bad_overlay_reason_is_in_the_worker_log(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    """Issue 3: a worker whose setup fails gets no jobs, and "its log says why"."""
    overlay = tmp_path / "overlay"
    (overlay / "proc" / f"ct-overlay-{uuid.uuid4().hex}").mkdir(parents=True)
    result = cloudtask(
        home,
        f"--workers={hosts[0].login}",
        f"--overlay={overlay}",
        str(job_script),
        input=jobs_input(1),
        identity=hosts.client_key,
    )
    assert result.returncode == 1
    worker_log = session_dir(result) / "workers" / hosts[0].address
    text = worker_log.read_text() if worker_log.exists() else ""
    assert "overlay" in text and "tar" in text, f"worker log {worker_log}: {text!r}"
    authorized_keys.assert_unchanged()


def test_failing_pre_gets_no_jobs_and_post_runs_after_the_last_job(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    refused = hosts[1]
    pre = tmp_path / "pre.sh"
    pre.write_text(
        'addr=$(echo "$SSH_CONNECTION" | cut -d" " -f3)\n'
        f'echo "pre $addr" >> {tmp_path}/marks\n'
        f'[ "$addr" != {refused.address} ] || {{ echo "no pre for you"; exit 3; }}\n'
    )
    post = tmp_path / "post.sh"
    post.write_text(f'echo "post $(echo "$SSH_CONNECTION" | cut -d" " -f3)" >> {tmp_path}/marks\n')
    result = cloudtask(
        home,
        f"--workers={hosts.workers_file()}",
        f"--pre=sh {pre}",
        f"--post=sh {post}",
        str(job_script),
        input=jobs_input(6, "0.2"),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 6, 0, 0, 0, 6)
    lines = marks(tmp_path)
    assert sorted(m[1] for m in lines if m[0] == "pre") == sorted(h.address for h in hosts)
    assert refused.address not in {addr for _, addr in starts(tmp_path)}
    assert any(refused.address in line and "--pre" in line for line in result.stderr.splitlines())
    for host in (hosts[0], hosts[2]):
        mine = [i for i, m in enumerate(lines) if host.address in m[1:3] and m[0] != "pre"]
        assert lines[mine[-1]] == ["post", host.address], lines
        assert [m[0] for m in lines].count("post") == 2
        assert sum(1 for m in lines if m == ["post", host.address]) == 1
    assert ["post", refused.address] not in lines
    authorized_keys.assert_unchanged()


# -- ~/.ssh/config's User and Port ---------------------------------------------------

SECOND_PORT = 2222


@contextlib.contextmanager
def second_sshd(host: Host, port: int = SECOND_PORT) -> Iterator[None]:
    """The host's sshd again, on another port of the same address, for this test."""
    config = (host.directory / "sshd_config").read_text()
    config = config.replace(f":{host.port}\n", f":{port}\n", 1)
    config = config.replace("sshd.pid", f"sshd-{port}.pid")
    path = host.directory / f"sshd_config_{port}"
    path.write_text(config)
    command = ["ip", "netns", "exec", host.netns, "/usr/sbin/sshd", "-D", "-f", str(path)]
    sshd = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((host.address, port), timeout=1) as probe:
                    if probe.recv(4) == b"SSH-":
                        probe.sendall(b"SSH-2.0-probe\r\n")
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the second sshd never answered"
            time.sleep(0.05)
        yield
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)


# The port the job's connection came in on (sshd sets SSH_CONNECTION).
SERVER_PORT = ("sh", "-c", "echo port=${SSH_CONNECTION##* }")
WHOAMI = ("sh", "-c", "whoami")


def test_ssh_config_port_is_used_unless_the_address_gives_one(
    hosts: TestHosts, home: Path, authorized_keys: KeysSnapshot
) -> None:
    """Before, asyncssh was told the port was given (None): Port was skipped, 22 used."""
    host = hosts[0]
    write_ssh_config(
        home,
        f"Host portalias\n  HostName {host.address}\n  User root\n  Port {SECOND_PORT}\n"
        f"  IdentityFile {hosts.client_key}\n",
    )
    with second_sshd(host):
        by_config = cloudtask(home, "--workers=portalias", *SERVER_PORT, input=b"x\n")
        by_address = cloudtask(home, "--workers=portalias:22", *SERVER_PORT, input=b"x\n")
    assert by_config.returncode == 0, by_config.stderr
    assert helpers.job_output(by_config.stdout) == [f"port={SECOND_PORT}"]
    assert by_address.returncode == 0, by_address.stderr
    assert helpers.job_output(by_address.stdout) == ["port=22"]
    authorized_keys.assert_unchanged()


def test_ssh_config_user_comes_after_the_address_and_user_option(
    hosts: TestHosts, home: Path, authorized_keys: KeysSnapshot
) -> None:
    """The config's User counts, below `user@` and --user, above the default (root).
    A user with no login here shows which was used: the login is refused."""
    host = hosts[0]
    write_ssh_config(
        home,
        f"Host useralias\n  HostName {host.address}\n  User cloudtask-nologin\n"
        f"  IdentityFile {hosts.client_key}\n",
    )
    shutil.copy(hosts.known_hosts_file(), home / ".ssh" / "known_hosts")
    by_config = cloudtask(home, "--workers=useralias", "true", input=b"x\n")
    assert by_config.returncode == 1
    assert "cloudtask-nologin@" in by_config.stderr, by_config.stderr
    assert helpers.counts(by_config) == (1, 1, 1, 0, 0, 0)
    by_address = cloudtask(home, "--workers=root@useralias", *WHOAMI, input=b"x\n")
    assert by_address.returncode == 0, by_address.stderr
    assert helpers.job_output(by_address.stdout) == ["root"]
    by_option = cloudtask(home, "--workers=useralias", "--user=root", *WHOAMI, input=b"x\n")
    assert by_option.returncode == 0, by_option.stderr
    assert helpers.job_output(by_option.stdout) == ["root"]
    authorized_keys.assert_unchanged()


def test_a_pinned_key_that_changed_says_how_to_accept_it_and_the_retry_then_runs(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    host = hosts[2]
    go = tmp_path / "go"
    command = f"test -e {go} && true"  # fails until `go` exists; the job's word goes to true
    first = cloudtask(
        home, f"--workers={host.login}", command, input=b"x\n", identity=hosts.client_key
    )
    assert helpers.counts(first) == (1, 1, 0, 0, 1, 0)  # failed; its key pinned on first use
    session = helpers.summary(first).id
    pins = session_dir(first) / "known_hosts"
    host.change_host_key()
    go.touch()

    refused = cloudtask(home, f"--retry={session}", identity=hosts.client_key)
    assert refused.returncode == 1
    hint = f"if the change is expected: ssh-keygen -f {pins} -R {host.address}"
    assert hint in refused.stderr, refused.stderr

    subprocess.run(
        ["ssh-keygen", "-f", str(pins), "-R", host.address], check=True, capture_output=True
    )
    accepted = cloudtask(home, f"--retry={session}", identity=hosts.client_key)
    assert accepted.returncode == 0, accepted.stderr
    assert helpers.counts(accepted) == (0, 1, 0, 0, 0, 1)
    assert host.host_public_key in pins.read_text()  # the new key, pinned in its turn
    authorized_keys.assert_unchanged()
