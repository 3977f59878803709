from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..usage import Usage

# After SIGTERM a timed-out or stopped command gets this long to end before SIGKILL.
KILL_GRACE = 1.0
# Output still coming once the command has ended is read for at most this long:
# a process that left the command's group may hold its output open for ever.
DRAIN_LIMIT = 2.0


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a command ended. A non-zero exit is a result, not an exception."""

    exit_status: int | None  # None when killed by a signal
    signal: int | None = None
    timed_out: bool = False
    stopped: bool = False  # killed because the run was aborted
    # Its output was still open DRAIN_LIMIT after it ended (a process that
    # left its group holds it): what that process writes is not read.
    held_open: bool = False
    usage: Usage | None = None  # what it used; None when not measured

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out and not self.stopped

    def describe(self) -> str:
        if self.stopped:
            return "stopped"
        if self.timed_out:
            return "timed out"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit {self.exit_status}"


@dataclass(frozen=True, slots=True)
class AgentStart:
    """What starting a worker's agent found."""

    cpus: int  # the CPUs its jobs may use (--slots=auto)
    without_agent: str | None = None  # why commands run one channel each, or None


class Transport(Protocol):
    async def run(
        self,
        command: str,
        *,
        timeout: float | None,
        output: Callable[[bytes], None],
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run `command` in a shell, with `env` added to its environment; stream
        its stdout and stderr to `output`.

        Returns when the command and every process it started are gone.
        """
        ...

    async def start_agent(self) -> AgentStart:
        """Start running commands through the worker's agent where it can;
        what the worker is (its CPUs) and, when it runs without one, why."""
        ...

    def keep_lease(self, seconds: float, action: str, key: str) -> bool:
        """Set or renew the worker's lease; False when it cannot keep one (no agent)."""
        ...

    def watch_spot(self, url: str, interval: float, on_notice: Callable[[], None]) -> bool:
        """Watch the instance metadata at `url` for a spot interruption notice;
        `on_notice` runs when one comes. False when it cannot (no agent)."""
        ...

    async def put_overlay(self, directory: Path) -> None:
        """Copy a directory onto the worker's /; existing directories keep mode and owner."""
        ...

    async def close(self) -> None:
        """Clean up what connecting set up (the session key) and disconnect."""
        ...


async def first_event(
    ended: asyncio.Future[Any], timeout: float | None, stop: asyncio.Event | None
) -> str | None:
    """Wait for a command to end: None, or why it must be killed first ("timeout", "stop")."""
    stopping = asyncio.ensure_future(stop.wait()) if stop is not None else None
    waits: set[asyncio.Future[Any]] = {ended} if stopping is None else {ended, stopping}
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if stopping is not None:
            stopping.cancel()
    if ended in done:
        return None
    return "stop" if stopping is not None and stopping in done else "timeout"
