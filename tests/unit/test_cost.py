"""Cost so far, projected, and --budget's rules (cost.py): pure functions."""

from __future__ import annotations

import pytest

from cloudtask import cost
from cloudtask.store import InstanceRecord


def record(launched: float, destroyed: float | None, price: float | None) -> InstanceRecord:
    return InstanceRecord(
        "t",
        "ec2",
        "ec2-1",
        "t3.small",
        price,
        "i-1",
        None,
        launched,
        launched,
        None,
        destroyed,
        None,
    )


def test_spent_counts_each_instance_from_launch_to_destruction_or_now() -> None:
    instances = [record(0, 1800, 1.0), record(0, None, 2.0), record(0, None, None)]

    # Half an hour at $1, and an hour at $2 so far; the unpriced one is left out.
    assert cost.spent(instances, 3600) == pytest.approx(2.5)
    assert cost.live_rate(instances) == 2.0
    assert cost.spent([record(0, None, None)], 3600) is None


def test_projection_runs_the_live_instances_for_the_time_left() -> None:
    instances = [record(0, None, 2.0)]

    assert cost.seconds_left(50, 50, 1800) == 1800
    assert cost.projected(instances, 3600, 1800) == pytest.approx(3.0)
    assert cost.seconds_left(0, 0, 0) == 0.0
    assert cost.seconds_left(5, 0, 10) is None  # nothing done yet: unknown


def test_a_launch_is_judged_on_at_least_an_hour_of_every_live_instance() -> None:
    one = [record(0, None, 36.0)]

    assert cost.launch_passes_budget(50, [], 0, None, 36.0) is None
    assert cost.launch_passes_budget(50, one, 0, None, 36.0) == pytest.approx(72.0)
    # Two hours left: both instances for two hours, on top of what was spent.
    assert cost.launch_passes_budget(500, one, 3600, 7200, 36.0) is None
    assert cost.launch_passes_budget(150, one, 3600, 7200, 36.0) == pytest.approx(180.0)


def test_no_projection_before_a_job_has_ended_and_the_budget_holds_the_cost_so_far() -> None:
    instances = [record(0, None, 2.0)]

    figures = cost.projection(instances, 3600, None)

    assert figures == cost.Projection(spent=2.0, projected=None)
    # Not the cost so far repeated as a projection; --budget still holds that to it.
    assert figures.budget_figure == 2.0
    assert cost.projected(instances, 3600, None) == 2.0
    assert figures.passes(1.5) and not figures.passes(2.0)


def test_no_projection_while_jobs_are_left_and_no_instance_is_alive() -> None:
    # A run stopped by --budget: its instances destroyed, jobs left pending.
    gone = [record(0, 1800, 2.0), record(0, 3600, 1.0)]

    stopped = cost.projection(gone, 7200, 5000)
    assert stopped == cost.Projection(spent=2.0, projected=None)
    # Nothing left: the projection is the cost, exactly.
    assert cost.projection(gone, 7200, 0.0) == cost.Projection(spent=2.0, projected=2.0)
    # No known price: no figures at all.
    assert cost.projection([record(0, None, None)], 3600, 10) is None


def test_the_budget_is_held_to_the_projection_once_there_is_one() -> None:
    alive = [record(0, None, 2.0), record(0, 1800, 1.0)]

    figures = cost.projection(alive, 3600, 7200)

    # $2.50 so far; two more hours of the $2 instance alive: $6.50.
    assert figures is not None
    assert figures.spent == pytest.approx(2.5)
    assert figures.projected == pytest.approx(6.5)
    assert figures.budget_figure == figures.projected
    assert cost.projected(alive, 3600, 7200) == figures.projected
    assert figures.passes(6.0) and not figures.passes(7.0)
