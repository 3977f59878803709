"""What a session's run comes to: the one answer the commands and the API give."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import ExitStatus
from ..scheduler import JobState


@dataclass(frozen=True)
class SessionResult:
    """How a run of a session ended.

    `state` is what the store records: finished, aborted (stopped by a signal
    or a lost stream, the rest pending), halted (--halt or --budget), or
    incomplete (no worker was left). `counts` has every job of the session by
    state (pending, running, ok, failed, timeout, lost). `exit_status` is the
    cloudtask command's: 0 when every job is ok and nothing launched may still
    be running, else 1.
    """

    id: int
    path: Path
    state: str
    counts: Mapping[str, int]
    exit_status: int
    elapsed: float = 0.0
    halted: str | None = None  # what halted it: --halt=... or --budget=...
    left_running: tuple[str, ...] = ()  # launched servers not known to be destroyed

    @property
    def ok(self) -> bool:
        return self.exit_status == ExitStatus.OK


def job_counts(counts: Mapping[JobState, int]) -> Mapping[str, int]:
    """Counts by state as plain names, read-only, every state present."""
    return MappingProxyType({str(state.value): counts.get(state, 0) for state in JobState})
