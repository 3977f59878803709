"""Fixtures for tests against real OpenSSH servers in network namespaces.

The hosts are tests/support/hosts.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.hosts import TestHosts, TestHostsError, unavailable_reason
from tests.support.ssh import JOB_SCRIPT, KeysSnapshot


def _skip_unless_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no test hosts: {reason}")


@pytest.fixture(scope="module")
def hosts() -> Iterator[TestHosts]:
    """Three test hosts shared by a module's tests; leave them as you found them."""
    _skip_unless_available()
    with TestHosts(3) as made:
        yield made


@pytest.fixture
def make_hosts() -> Iterator[Callable[[int], TestHosts]]:
    """make_hosts(n) starts n test hosts of the test's own, removed after the test."""
    _skip_unless_available()
    made: list[TestHosts] = []

    def make(count: int) -> TestHosts:
        hosts = TestHosts(count)
        made.append(hosts)
        hosts.start()
        return hosts

    yield make
    problems = []
    for hosts in reversed(made):
        try:
            hosts.close()
        except TestHostsError as error:
            problems.append(str(error))
    if problems:
        pytest.fail("test hosts not cleaned up: " + "; ".join(problems))


# Shared by the SSH worker and fault tests.


@pytest.fixture
def authorized_keys() -> Iterator[KeysSnapshot]:
    """Snapshot of root's authorized_keys; put back after the test if a test left it changed."""
    snapshot = KeysSnapshot.take()
    yield snapshot
    snapshot.restore()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """HOME for cloudtask: an empty ~/.ssh of the test's own."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True, mode=0o700)
    return path


@pytest.fixture
def job_script(tmp_path: Path) -> Path:
    path = tmp_path / "job.sh"
    path.write_text(JOB_SCRIPT)
    path.chmod(0o755)
    return path
