"""--halt: when the outcomes of a run pass a threshold, start nothing new.

GNU parallel's grammar, `[now|soon,](fail|success|done)=(N|P%)`: `soon` lets
the running jobs finish, `now` stops them too; `fail` counts the jobs that are
not ok (failed, timed out, lost), `success` the ok ones, `done` both. The old
`fail=N` means `soon,fail=N`. A percentage is of the jobs finished, and needs
at least MIN_FOR_PERCENT of them (parallel's own rule), so the first jobs
alone never trigger it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .scheduler import JobState

GRAMMAR = "[now|soon,](fail|success|done)=(N|P%)"
_SPEC = re.compile(r"(?:(now|soon),)?(fail|success|done)=(\d+)(%?)")
FAILURES = (JobState.FAILED, JobState.TIMEOUT, JobState.LOST)
FINISHED = (JobState.OK, *FAILURES)
COUNTED = {"fail": FAILURES, "success": (JobState.OK,), "done": FINISHED}
MIN_FOR_PERCENT = 3


@dataclass(frozen=True)
class Halt:
    threshold: int
    percent: bool
    counts: str = "fail"  # fail, success or done
    when: str | None = None  # now or soon; None: not given, which means soon

    @classmethod
    def parse(cls, spec: str) -> Halt:
        match = _SPEC.fullmatch(spec.strip())
        if not match:
            raise ValueError(
                f"expected {GRAMMAR}, e.g. now,fail=1 or soon,success=50%; got {spec!r}"
            )
        halt = cls(int(match[3]), bool(match[4]), match[2], match[1])
        if halt.threshold < 1 or (halt.percent and halt.threshold > 100):
            raise ValueError(f"threshold out of range (N at least 1, P% 1-100): {spec!r}")
        return halt

    @property
    def now(self) -> bool:
        """Whether reaching it stops the running jobs too."""
        return self.when == "now"

    def reached(self, counts: Mapping[JobState, int]) -> bool:
        """Whether the jobs finished so far have passed the threshold."""
        counted = sum(counts[state] for state in COUNTED[self.counts])
        if not self.percent:
            return counted >= self.threshold
        finished = sum(counts[state] for state in FINISHED)
        return finished >= MIN_FOR_PERCENT and counted * 100 >= self.threshold * finished

    def __str__(self) -> str:
        """As given: the old `fail=N` stays without its implied `soon,`."""
        when = f"{self.when}," if self.when else ""
        return f"{when}{self.counts}={self.threshold}{'%' if self.percent else ''}"
