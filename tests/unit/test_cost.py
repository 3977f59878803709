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
