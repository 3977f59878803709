"""The live view's picture (live.py), from made-up run states: pure functions."""

from __future__ import annotations

from cloudtask.live import clock, lines, snapshot
from cloudtask.scheduler import JobState
from cloudtask.store import InstanceRecord

FINAL = {JobState.OK: 40, JobState.FAILED: 2, JobState.TIMEOUT: 1, JobState.LOST: 0}


def instance(name: str, launched: float, destroyed: float | None, price: float | None):
    return InstanceRecord(
        name,
        "hub",
        name,
        "t3.small",
        price,
        f"i-{name}",
        "198.18.0.9",
        launched,
        launched,
        launched + 1,
        destroyed,
        None,
    )


def test_counts_rate_eta_and_workers() -> None:
    doing = {"w1": "job 44: echo 44", "w2": "idle, waiting for jobs that may come back"}
    state = snapshot(3, 100, FINAL, 3, 1, 20.0, doing, [], 0.0)

    shown = lines(state, 30)

    assert shown[0] == "session 3: 43/100 done - 40 ok, 2 failed, 1 timeouts, 0 lost"
    # 40 done in this run's 20 s: 2 jobs/s, 57 left: 28.5 s.
    assert shown[1] == "2.0 jobs/s, elapsed 0:20, ETA 0:28; 1 running, 56 pending"
    assert shown[2] == "2 workers"
    assert shown[3:] == ["  w1  job 44: echo 44", "  w2  idle, waiting for jobs that may come back"]


def test_more_workers_than_a_screenful_are_summed_up() -> None:
    doing = {f"w{n}": f"job {n}: true" for n in range(200)}
    doing |= {"(hub #1)": "booting", "(hub #2)": "booting"}
    state = snapshot(1, 1000, FINAL, 0, 200, 5.0, doing, [], 0.0)

    shown = lines(state, 12)

    assert len(shown) == 12
    assert shown[2] == "202 workers, booting 2 instances"
    assert shown[-1] == "  ... and 194 more (192 running a job)"


def test_cost_so_far_and_projected_for_launched_workers() -> None:
    # One instance ran an hour at $0.10 and is gone; one has run half an hour at $0.20.
    records = [instance("a", 0.0, 3600.0, 0.10), instance("b", 5400.0, None, 0.20)]
    now = 7200.0
    state = snapshot(
        1,
        100,
        {JobState.OK: 50, JobState.FAILED: 0, JobState.TIMEOUT: 0, JobState.LOST: 0},
        0,
        1,
        3600.0,
        {"b": "job 51: x"},
        records,
        now,
    )

    # $0.10 + $0.10 so far; 50 left at 50 per hour: one more hour of b at $0.20.
    assert state.cost is not None and abs(state.cost - 0.20) < 1e-9
    assert state.projected is not None and abs(state.projected - 0.40) < 1e-9
    assert lines(state, 10)[2] == "1 worker; cost $0.20 so far, $0.40 projected"


def test_no_price_no_cost_and_unknown_eta_before_any_job_ends() -> None:
    records = [instance("a", 0.0, None, None)]
    state = snapshot(1, 10, dict.fromkeys(FINAL, 0), 0, 0, 3.0, {"a": "connecting"}, records, 9.0)

    assert state.cost is None
    assert "ETA ?" in lines(state, 10)[1]
    assert lines(state, 10)[2] == "1 worker"


def test_clock() -> None:
    assert clock(None) == "?"
    assert clock(59.9) == "0:59"
    assert clock(3725) == "1:02:05"
