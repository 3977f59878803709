"""The worker agent on real SSH workers: jobs through it, slots, resources,
the fallback on a worker without python3 (SPEC section 14)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests.support import helpers
from tests.support.hosts import TestHosts
from tests.support.ssh import KeysSnapshot, assert_no_job_processes, cloudtask, session_dir

# A job that says which program started it: the agent (python3 reading the
# agent's source) or the channel-per-job wrapper (sh).
PARENT = "tr '\\0' ' ' < /proc/$PPID/cmdline; echo"


def store_rows(result: object, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(session_dir(result) / "store.sqlite") as db:  # type: ignore[arg-type]
        return list(db.execute(query))


def test_jobs_run_through_the_agent_with_their_resource_use(
    hosts: TestHosts, home: Path, authorized_keys: KeysSnapshot
) -> None:
    result = cloudtask(
        home,
        f"--workers={hosts[0].login}",
        f"{PARENT}; head -c 3000 /dev/zero; true",
        input=b"a\nb\nc\n",
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("cloudtask-agent") == 3  # each job's parent: the agent
    assert "no agent" not in result.stdout
    rows = store_rows(result, "SELECT user_cpu, system_cpu, max_rss, output_bytes FROM attempts")
    assert len(rows) == 3
    for user_cpu, system_cpu, max_rss, output_bytes in rows:
        assert user_cpu is not None and system_cpu is not None
        assert isinstance(max_rss, int) and max_rss > 0
        assert isinstance(output_bytes, int) and output_bytes > 3000
    authorized_keys.assert_unchanged()


def test_slots_run_jobs_at_once_on_one_worker(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    """Each job waits until 4 have started: they end only if 4 run at once."""
    marks = tmp_path / "marks"
    marks.mkdir()
    command = (
        f"touch {marks}/$CLOUDTASK_JOB; n=0; "
        f"while [ $(ls {marks} | wc -l) -lt 4 ] && [ $n -lt 200 ]; "
        "do sleep 0.05; n=$((n+1)); done; "
        f"[ $(ls {marks} | wc -l) -ge 4 ] && true"
    )
    result = cloudtask(
        home,
        f"--workers={hosts[0].login}",
        "--slots=4",
        command,
        input=b"1\n2\n3\n4\n5\n6\n7\n8\n",
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert helpers.counts(result)[-1] == 8
    assert store_rows(result, "SELECT slots FROM workers") == [(4,)]
    authorized_keys.assert_unchanged()


def test_slots_auto_is_the_worker_cpu_count(
    hosts: TestHosts, home: Path, authorized_keys: KeysSnapshot
) -> None:
    result = cloudtask(
        home,
        f"--workers={hosts[1].login}",
        "--slots=auto",
        "true",
        input=b"x\n",
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    cpus = len(os.sched_getaffinity(0))  # the test hosts share this machine's CPUs
    assert store_rows(result, "SELECT slots FROM workers") == [(cpus,)]


def test_a_worker_without_python3_runs_its_jobs_one_channel_each(
    make_hosts: Callable[[int], TestHosts], home: Path, authorized_keys: KeysSnapshot
) -> None:
    hosts = make_hosts(1)
    hosts[0].hide_python()
    result = cloudtask(
        home,
        f"--workers={hosts[0].login}",
        "--slots=2",
        f"{PARENT}; sleep",
        input=b"0.2\n0.2\n0.2\n",
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    said = [line for line in result.stdout.splitlines() if "no agent" in line]
    assert len(said) == 1 and "no python3" in said[0], result.stdout
    assert "cloudtask-agent" not in result.stdout
    (log_file,) = (session_dir(result) / "workers").iterdir()
    log = log_file.read_text()
    assert "no agent (no python3)" in log
    rows = store_rows(result, "SELECT user_cpu, output_bytes FROM attempts")
    assert len(rows) == 3 and all(cpu is None and out and out > 0 for cpu, out in rows)
    assert_no_job_processes(hosts)
    authorized_keys.assert_unchanged()


def test_a_loud_job_and_a_quiet_one_share_a_worker_and_every_byte_is_counted(
    hosts: TestHosts, home: Path, authorized_keys: KeysSnapshot
) -> None:
    """30 MB of random bytes through the agent while another job runs beside
    it: the channel's flow control holds the agent back, never loses a byte."""
    loud = 30_000_000
    result = cloudtask(
        home,
        f"--workers={hosts[2].login}",
        "--slots=2",
        "sh",
        "-c",
        'if [ "$0" = loud ]; then head -c 30000000 /dev/urandom; else sleep 0.5; echo quiet; fi',
        input=b"loud\nquiet\nquiet\n",
        identity=hosts.client_key,
    )
    assert result.returncode == 0, result.stderr
    rows = store_rows(result, "SELECT job, output_bytes FROM attempts ORDER BY job")
    assert rows == [(1, loud), (2, 6), (3, 6)]
    authorized_keys.assert_unchanged()
