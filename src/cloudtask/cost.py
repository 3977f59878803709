"""What launched workers cost, so far and projected, and --budget's two rules.

Pure functions over the store's instance records; the live view, the budget
checks and the report all take their figures from here.

- Spent: each instance's hours (from its launch to its destruction, or now)
  times its hourly price. Instances with no known price are left out.
- Projected: spent, plus the hourly price of the instances still alive for the
  time the batch still needs at the present rate (done jobs per second in
  this run).
- A launch is judged on the instances alive and the new one all running for
  that time, and for at least MIN_HOURS (the time left is unknown before any
  job has ended, and clouds bill by the hour or minute from the start).
- --budget: no instance is launched if the projection with it passes the
  budget; and once the projection passes it, no new job starts (the running
  ones finish, the workers are destroyed, the session stays resumable).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def projected(
    instances: Sequence[InstanceRecord], now: float, left_seconds: float | None
) -> float | None:
    """Dollars when the batch ends at the present rate (None: no price known)."""
    so_far = spent(instances, now)
    if so_far is None:
        return None
    return so_far + live_rate(instances) * (left_seconds or 0.0) / 3600


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
