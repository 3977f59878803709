"""Fixtures for every test: no configuration leaks in from the environment."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.hosts import HARMLESS_LEASE_ACTION, runs_of_this_process
from tests.support.testcloud import remove_leases


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Drop CLOUDTASK_* variables and keep sessions inside the test's directory."""
    for name in list(os.environ):
        if name.startswith("CLOUDTASK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLOUDTASK_SESSIONS", str(tmp_path / "sessions"))
    # A launched test worker's lease never shuts this machine down.
    monkeypatch.setenv("CLOUDTASK_LEASE_ACTION", HARMLESS_LEASE_ACTION)
    # boto3 must never look for credentials or a region beyond this machine:
    # no instance metadata service (a link-local address), no user's AWS files.
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    yield


@pytest.fixture(autouse=True, scope="module")
def no_test_host_left() -> Iterator[None]:
    """Every test host a module's tests start is removed by the module's end."""
    before = runs_of_this_process()
    yield
    left = runs_of_this_process() - before
    assert not left, f"test hosts left running after the module: {sorted(left)}"


@pytest.fixture(autouse=True, scope="session")
def no_lease_keeper_left() -> Iterator[None]:
    """The lease keepers launched test workers leave (their leases outlive the
    run by design) are stopped at the end of the tests."""
    started = time.time()
    yield
    remove_leases(started)
