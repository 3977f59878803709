"""Many jobs through a whole session, SIGKILLed half way and resumed to the end.

The CI-sized run of benchmarks/million_jobs.py's full sessions, through the
same code (tests/support/full_session.py): `true N` jobs on 2 local workers and on 2 SSH test
hosts; the controller's process group is SIGKILLed once half the jobs are
ok, then `--resume` runs the rest. Afterwards the store (read-only) must show
every job ok with exactly one ok attempt, the attempts the kill cut off
closed as lost, and no more jobs run twice than were running at the kill;
each run reaches its first job within 30 s and stays under 300 MB.

The job counts keep each test at 10-20 s on 2 idle cores (the local
provider runs about 1,000 jobs a second, 2 SSH hosts about 250) and under a
minute when other work keeps both cores busy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.full_session import (
    AUTHORIZED_KEYS,
    Session,
    full_session,
    print_full_table,
    remove_lines,
    ssh_env,
    ssh_options,
    write_lines,
)
from tests.support.hosts import TestHosts, unavailable_reason

LOCAL_JOBS = 10_000
SSH_JOBS = 4_000
PROCESS_TIMEOUT = 50.0  # each of the two cloudtask runs


def assert_whole(session: Session) -> None:
    print_full_table([session], [], [])  # shown if the test fails
    assert session.problems == [], "\n".join(session.problems)
    assert session.check is not None
    assert 0 < session.done_at_kill < session.jobs
    assert [step.exit_status for step in session.steps] == [None, 0]  # killed, then done


@pytest.mark.timeout(150)
def test_local_session_killed_half_way_resumes_to_the_end(tmp_path: Path) -> None:
    lines = write_lines(tmp_path / "jobs", LOCAL_JOBS)
    session = full_session(
        "local x2", ["--split=2"], lines, LOCAL_JOBS, os.environ, PROCESS_TIMEOUT, tmp_path
    )
    assert_whole(session)


@pytest.mark.timeout(150)
def test_ssh_session_killed_half_way_resumes_to_the_end(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no test hosts: {reason}")
    lines = write_lines(tmp_path / "jobs", SSH_JOBS)
    with TestHosts(2) as hosts:
        env = ssh_env(tmp_path / "home", tmp_path / "sessions")
        session = full_session(
            "ssh x2",
            ssh_options(hosts),
            lines,
            SSH_JOBS,
            env,
            PROCESS_TIMEOUT,
            tmp_path,
            AUTHORIZED_KEYS,
        )
    if session.keys_left:
        remove_lines(AUTHORIZED_KEYS, session.keys_left)
    # Checked too: neither the killed run's key nor the resume's is left in root's
    # authorized_keys (the test hosts' file).
    assert_whole(session)
