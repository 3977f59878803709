"""Waiting for something a test expects to happen soon."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL = 0.05  # seconds between two looks


def wait_until(condition: Callable[[], object], limit: float, what: str) -> None:
    """Return once condition() is true; AssertionError naming `what` if not within `limit` s."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit} s: {what}")
        time.sleep(POLL)
