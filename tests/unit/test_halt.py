"""--halt thresholds, as pure decisions over job counts."""

from __future__ import annotations

import pytest

from cloudtask.halt import Halt
from cloudtask.scheduler import JobState


def counts(**given: int) -> dict[JobState, int]:
    result = dict.fromkeys(JobState, 0)
    for name, value in given.items():
        result[JobState(name)] = value
    return result


def test_a_count_threshold_counts_failed_timed_out_and_lost_jobs() -> None:
    halt = Halt.parse("fail=3")
    assert not halt.reached(counts(failed=1, timeout=1, ok=50, pending=10))
    assert halt.reached(counts(failed=1, timeout=1, lost=1))


def test_a_percent_threshold_is_of_finished_jobs_only() -> None:
    halt = Halt.parse("fail=50%")
    assert not halt.reached(counts(pending=100))
    assert not halt.reached(counts(failed=1, ok=2, pending=100))
    assert halt.reached(counts(failed=1, ok=1, pending=100))


@pytest.mark.parametrize("spec", ["fail=0", "fail=101%", "fail=x", "ok=1", "fail=-1", ""])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        Halt.parse(spec)


def test_it_shows_as_given() -> None:
    assert str(Halt.parse(" fail=10% ")) == "fail=10%"
