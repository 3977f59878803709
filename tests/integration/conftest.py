"""Fixtures for tests against real OpenSSH servers in network namespaces (tests/hosts.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from tests.hosts import TestHosts, TestHostsError, unavailable_reason


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
