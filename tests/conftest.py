"""Fixtures for every test: no configuration leaks in from the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Drop CLOUDTASK_* variables and keep sessions inside the test's directory."""
    for name in list(os.environ):
        if name.startswith("CLOUDTASK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLOUDTASK_SESSIONS", str(tmp_path / "sessions"))
    yield
