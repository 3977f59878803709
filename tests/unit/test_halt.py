"""--halt thresholds, as pure decisions over job counts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudtask.halt import GRAMMAR, Halt
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
    assert halt.reached(counts(failed=2, ok=2, pending=100))


def test_a_percent_threshold_needs_three_finished_jobs() -> None:
    halt = Halt.parse("fail=50%")
    assert not halt.reached(counts(failed=1, pending=100))
    assert not halt.reached(counts(failed=2, running=5, pending=100))
    assert halt.reached(counts(failed=2, ok=1, pending=100))
    assert not Halt.parse("success=1%").reached(counts(ok=2))
    assert Halt.parse("success=1%").reached(counts(ok=1, failed=2))


def test_success_counts_ok_jobs_and_done_every_finished_one() -> None:
    success = Halt.parse("soon,success=2")
    assert not success.reached(counts(ok=1, failed=5, timeout=5, lost=5))
    assert success.reached(counts(ok=2))
    done = Halt.parse("done=4")
    assert not done.reached(counts(ok=1, failed=1, timeout=1, running=10, pending=10))
    assert done.reached(counts(ok=1, failed=1, timeout=1, lost=1))


def test_now_and_soon() -> None:
    assert Halt.parse("now,fail=1").now
    assert not Halt.parse("soon,fail=1").now
    assert not Halt.parse("fail=1").now  # the old form means soon


@pytest.mark.parametrize(
    "spec",
    [
        "fail=0",
        "fail=101%",
        "fail=x",
        "ok=1",
        "fail=-1",
        "",
        "now",
        "now,",
        "later,fail=1",
        "now,fail",
        "now;fail=1",
        "NOW,fail=1",
        "now,done=0%",
        "soon,success=1.5",
        "3",
        "fail=1,now",
    ],
)
def test_bad_specs_are_refused_naming_the_grammar(spec: str) -> None:
    with pytest.raises(ValueError, match="N at least 1|" + re.escape(GRAMMAR)) as caught:
        Halt.parse(spec)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "spec", ["fail=10%", "fail=3", "now,fail=1", "soon,success=50%", "done=10", "now,done=100%"]
)
def test_it_shows_as_given(spec: str) -> None:
    assert str(Halt.parse(f" {spec} ")) == spec


@given(
    st.sampled_from(["fail", "success", "done"]),
    st.integers(1, 100),
    st.integers(0, 20),
    st.integers(0, 20),
)
def test_a_percentage_is_reached_only_from_three_finished_jobs_on(
    what: str, percent: int, ok: int, failed: int
) -> None:
    reached = Halt.parse(f"{what}={percent}%").reached(counts(ok=ok, failed=failed))
    counted = {"fail": failed, "success": ok, "done": ok + failed}[what]
    finished = ok + failed
    assert reached == (finished >= 3 and counted * 100 >= percent * finished)
