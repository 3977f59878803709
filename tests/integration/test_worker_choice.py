"""Which listed workers run the jobs: spares, unknown names, names with a port,
and the options a resume keeps (issue 18, items 5 and 7), on the SSH test hosts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_ssh_faults import MakeHosts
from tests.integration.test_ssh_workers import SECOND_PORT, second_sshd
from tests.support import helpers
from tests.support.hosts import TestHosts
from tests.support.ssh import (
    CLOUDTASK,
    KeysSnapshot,
    cloudtask,
    env_for,
    jobs_input,
    session_dir,
    starts,
)

LOGALYZER = str(Path(CLOUDTASK).with_name("cloudtask-logalyzer"))


def failing_pre(tmp_path: Path, address: str) -> str:
    """A --pre that fails on the worker at `address` only."""
    pre = tmp_path / "pre.sh"
    pre.write_text(
        'addr=$(echo "$SSH_CONNECTION" | cut -d" " -f3)\n'
        f'[ "$addr" != {address} ] || {{ echo "not here"; exit 3; }}\n'
    )
    return f"--pre=sh {pre}"


def test_a_spare_listed_worker_takes_the_place_of_one_whose_pre_failed(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    first, spare = hosts[0], hosts[1]
    result = cloudtask(
        home,
        "--split=1",
        f"--workers={first.login} {spare.login}",
        failing_pre(tmp_path, first.address),
        str(job_script),
        input=jobs_input(3, "0"),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 3, 0, 0, 0, 3)
    assert f"{first.address}: --pre exit 3; it gets no jobs" in result.stderr
    assert f"{first.address} failed: a spare worker takes its place" in result.stdout
    assert {addr for _, addr in starts(tmp_path)} == {spare.address}
    authorized_keys.assert_unchanged()


def test_a_spare_listed_worker_takes_the_place_of_one_that_cannot_be_reached(
    make_hosts: MakeHosts,
    home: Path,
    tmp_path: Path,
    job_script: Path,
    authorized_keys: KeysSnapshot,
) -> None:
    hosts = make_hosts(3)
    dead, spare, unused = hosts[0], hosts[1], hosts[2]
    dead.stop_sshd()
    result = cloudtask(
        home,
        "--split=1",
        f"--workers={dead.login},{spare.login},{unused.login}",
        str(job_script),
        input=jobs_input(2, "0"),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 2, 0, 0, 0, 2)
    assert f"{dead.address}: cannot connect" in result.stderr
    assert f"{dead.address} failed: a spare worker takes its place" in result.stdout
    # One spare replaced one failure: the third listed worker was never needed.
    assert {addr for _, addr in starts(tmp_path)} == {spare.address}
    assert sorted(p.name for p in (session_dir(result) / "workers").iterdir()) == sorted(
        [dead.address, spare.address]
    )
    authorized_keys.assert_unchanged()


def test_without_a_spare_the_other_workers_run_the_jobs(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    """The neighbour of the spare rule: split = listed workers, nothing stands by."""
    first, other = hosts[0], hosts[1]
    result = cloudtask(
        home,
        f"--workers={first.login} {other.login}",
        failing_pre(tmp_path, first.address),
        str(job_script),
        input=jobs_input(3, "0"),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert "a spare worker takes its place" not in result.stdout
    assert {addr for _, addr in starts(tmp_path)} == {other.address}
    authorized_keys.assert_unchanged()


def test_a_resume_that_starts_no_job_keeps_the_options_the_session_had(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    host = hosts[0]
    go = tmp_path / "go"
    command = f"test -e {go} && true"  # fails until `go` exists
    first = cloudtask(
        home, f"--workers={host.login}", command, input=b"x\n", identity=hosts.client_key
    )
    assert helpers.counts(first) == (1, 1, 0, 0, 1, 0)
    session = helpers.summary(first).id
    go.touch()

    # Nobody listens on that port: no worker, no job started.
    nowhere = f"--workers={host.login}:2999"
    wrong = cloudtask(home, f"--retry={session}", nowhere, identity=hosts.client_key)
    assert wrong.returncode == 1
    assert "no job started: the options given with this resume are not kept" in wrong.stderr
    assert helpers.counts(wrong) == (1, 1, 1, 0, 0, 0)

    right = cloudtask(home, f"--retry={session}", identity=hosts.client_key)
    assert right.returncode == 0, right.stderr
    assert helpers.counts(right) == (0, 1, 0, 0, 0, 1)
    assert f"{host.address} job 1 ok" in right.stdout
    authorized_keys.assert_unchanged()


def test_a_worker_on_another_port_is_named_host_colon_port(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    host = hosts[0]
    with second_sshd(host):
        result = cloudtask(
            home,
            f"--workers={host.login}:{SECOND_PORT} {host.login}",
            "sleep 1; echo",  # a job each: both workers are at work at once
            input=b"a\nb\n",
            identity=hosts.client_key,
        )
    assert result.returncode == 0, result.stderr
    name = f"{host.address}:{SECOND_PORT}"
    assert f"{name} job " in result.stdout
    assert sorted(p.name for p in (session_dir(result) / "workers").iterdir()) == sorted(
        [host.address, name]
    )
    authorized_keys.assert_unchanged()


def test_an_unknown_host_in_a_list_leaves_out_only_its_worker(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    result = cloudtask(
        home,
        f"--workers={hosts[0].login} root@no-such-host.invalid {hosts[1].login}",
        "echo",
        input=b"a\nb\nc\n",
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert "--workers: unknown host 'no-such-host.invalid': its worker is left out" in result.stderr
    assert helpers.counts(result) == (0, 3, 0, 0, 0, 3)
    assert helpers.split_shown(result.stdout) == 2
    authorized_keys.assert_unchanged()


def test_a_failed_job_is_retried_on_another_worker(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    """Each job fails once, wherever it runs first: its retry goes to the other worker.

    A first attempt fails only once both workers have started a job: a retry
    goes elsewhere when another worker is there, and one still connecting
    (or starting its agent) is not there yet."""
    tried = tmp_path / "tried"
    tried.mkdir()
    marks = tmp_path / "marks"
    command = (
        'addr=$(echo "$SSH_CONNECTION" | cut -d" " -f3); '
        f'echo "$1 $addr" >> {marks}; n=0; '
        f"while [ $(cut -d' ' -f2 {marks} | sort -u | wc -l) -lt 2 ] && [ $n -lt 300 ]; "
        "do sleep 0.05; n=$((n+1)); done; "
        f"mkdir {tried}/$1 2>/dev/null && exit 1; true"
    )
    result = cloudtask(
        home,
        f"--workers={hosts[0].login} {hosts[1].login}",
        "--retries=1",
        "sh",
        "-c",
        command,
        "job",
        input=b"1\n2\n3\n4\n",
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, 4, 0, 0, 0, 4)
    runs: dict[str, list[str]] = {}
    for line in marks.read_text().splitlines():
        job, addr = line.split()
        runs.setdefault(job, []).append(addr)
    assert sorted(runs) == ["1", "2", "3", "4"]
    for job, where in runs.items():
        assert len(where) == 2 and where[0] != where[1], (job, where)
    authorized_keys.assert_unchanged()


def test_the_logalyzer_lists_a_listed_worker_that_ran_no_job(
    hosts: TestHosts, home: Path, tmp_path: Path, job_script: Path, authorized_keys: KeysSnapshot
) -> None:
    first, other = hosts[0], hosts[1]
    result = cloudtask(
        home,
        f"--workers={first.login} {other.login}",
        failing_pre(tmp_path, first.address),
        str(job_script),
        input=jobs_input(2, "0"),
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    session = helpers.summary(result).id
    digest = helpers.run([LOGALYZER, "--json", str(session)], env=env_for(home))
    assert digest.returncode == 0, digest.stderr
    workers = {w["name"]: w["attempts"] for w in json.loads(digest.stdout)["workers"]}
    assert workers == {first.address: 0, other.address: 2}
    authorized_keys.assert_unchanged()
