from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a command ended. A non-zero exit is a result, not an exception."""

    exit_status: int | None  # None when killed by a signal
    signal: int | None = None
    timed_out: bool = False
    stopped: bool = False  # killed because the run was aborted

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


class Transport(Protocol):
    async def run(
        self,
        command: str,
        *,
        timeout: float | None,
        output: Callable[[bytes], None],
        stop: asyncio.Event | None = None,
    ) -> RunResult:
        """Run `command` in a shell; stream its stdout and stderr to `output`.

        Returns when the command and every process it started are gone.
        """
        ...

    async def close(self) -> None: ...
