"""What launched workers cost, so far and projected, and --budget's two rules.

Pure functions over the store's instance records; the live view, the budget
checks and the report all take their figures from here.

- Spent: each instance's hours (from its launch to its destruction, or now)
  times its hourly price. Instances with no known price are left out.
- Projected (`projection`, the one projection): spent, plus the hourly price
  of the instances still alive for the time the batch still needs at the
  present rate (done jobs per second in this run). None can be made before a
  job has ended in this run (the rate is unknown), nor while jobs are left and
  no instance is alive (the batch does not end at this rate: the run is
  stopping, or waits for workers); it is then shown as none, never as the
  cost so far.
- A launch is judged on the instances alive and the new one all running for
  that time, and for at least MIN_HOURS (the time left is unknown before any
  job has ended, and clouds bill by the hour or minute from the start).
- --budget: no instance is launched if the projection with it passes the
  budget; and once the projection passes it, no new job starts (the running
  ones finish, the workers are destroyed, the session stays resumable).
  While no projection can be made, the cost so far is held to the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .store import InstanceRecord

MIN_HOURS = 1.0


def spent(instances: Sequence[InstanceRecord], now: float) -> float | None:
    """Dollars spent on instances with a known price; None when none has one."""
    priced = [record for record in instances if record.hourly_price is not None]
    if not priced:
        return None
    return sum(_hours(record, now) * (record.hourly_price or 0.0) for record in priced)


def live_rate(instances: Sequence[InstanceRecord]) -> float:
    """Dollars per hour of the instances not destroyed yet."""
    return sum(
        record.hourly_price or 0.0
        for record in instances
        if record.destroyed is None and record.hourly_price is not None
    )


def seconds_left(left: int, done: int, elapsed: float) -> float | None:
    """Time the `left` jobs need at the rate of `done` jobs in `elapsed` seconds."""
    if left <= 0:
        return 0.0
    if done <= 0 or elapsed <= 0:
        return None
    return left * elapsed / done


@dataclass(frozen=True, slots=True)
class Projection:
    """Dollars spent on launched workers, and when the batch ends at the present rate."""

    spent: float
    projected: float | None  # None: no projection can be made (see the module's docstring)

    @property
    def budget_figure(self) -> float:
        """What --budget is held to: the projection, or while there is none, the cost so far."""
        return self.spent if self.projected is None else self.projected

    def passes(self, budget: float) -> bool:
        return self.budget_figure > budget


def projection(
    instances: Sequence[InstanceRecord], now: float, left_seconds: float | None
) -> Projection | None:
    """The cost so far and projected (None: no instance has a known price).

    `left_seconds`: the time the batch still needs (`seconds_left`), None
    while it is unknown."""
    so_far = spent(instances, now)
    if so_far is None:
        return None
    alive = any(record.destroyed is None for record in instances)
    if left_seconds is None or (left_seconds > 0 and not alive):
        return Projection(so_far, None)
    return Projection(so_far, so_far + live_rate(instances) * left_seconds / 3600)


def projected(
    instances: Sequence[InstanceRecord], now: float, left_seconds: float | None
) -> float | None:
    """The figure --budget is held to (Projection.budget_figure); None: no price known."""
    figures = projection(instances, now, left_seconds)
    return None if figures is None else figures.budget_figure


def launch_passes_budget(
    budget: float,
    instances: Sequence[InstanceRecord],
    now: float,
    left_seconds: float | None,
    price: float | None,
) -> float | None:
    """The projected cost if one more instance at `price` would pass the budget, else None."""
    hours = max(MIN_HOURS, (left_seconds or 0.0) / 3600)
    total = (spent(instances, now) or 0.0) + (live_rate(instances) + (price or 0.0)) * hours
    return total if total > budget else None


def _hours(record: InstanceRecord, now: float) -> float:
    start = record.launched or record.intended
    return max(0.0, ((record.destroyed or now) - start) / 3600)
