"""--halt=fail=N / fail=P%: when failures pass the threshold, start nothing new."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .scheduler import JobState

_SPEC = re.compile(r"fail=(\d+)(%?)")
FAILURES = (JobState.FAILED, JobState.TIMEOUT, JobState.LOST)
FINISHED = (JobState.OK, *FAILURES)


@dataclass(frozen=True)
class Halt:
    threshold: int
    percent: bool

    @classmethod
    def parse(cls, spec: str) -> Halt:
        match = _SPEC.fullmatch(spec.strip())
        if not match:
            raise ValueError(f"expected fail=N or fail=P%, got {spec!r}")
        halt = cls(int(match[1]), bool(match[2]))
        if halt.threshold < 1 or (halt.percent and halt.threshold > 100):
            raise ValueError(f"threshold out of range: {spec!r}")
        return halt

    def reached(self, counts: Mapping[JobState, int]) -> bool:
        """Whether the jobs finished so far have passed the threshold."""
        failures = sum(counts[state] for state in FAILURES)
        if not self.percent:
            return failures >= self.threshold
        finished = sum(counts[state] for state in FINISHED)
        return finished > 0 and failures * 100 >= self.threshold * finished

    def __str__(self) -> str:
        return f"fail={self.threshold}{'%' if self.percent else ''}"
