"""The scheduler (SPEC section 5): which worker runs which job next."""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtask.scheduler import (
    LOOK_AHEAD,
    Ended,
    JobState,
    Outcome,
    Scheduler,
    SchedulerError,
    Wait,
)

OK, FAILED, TIMEOUT = Outcome.OK, Outcome.FAILED, Outcome.TIMEOUT


def _scheduler(jobs: int, *workers: str, keep_idle: bool = True, **options: int) -> Scheduler:
    scheduler = Scheduler(range(1, jobs + 1), **options)
    for worker in workers:
        scheduler.add_worker(worker, keep_idle=keep_idle)
    return scheduler


def _run(scheduler: Scheduler, worker: str, outcome: Outcome) -> Ended:
    job = scheduler.next_job(worker)
    assert isinstance(job, int)
    return scheduler.end_attempt(worker, job, outcome)


# -- first come, first served ----------------------------------------------------


def test_jobs_are_served_in_input_order() -> None:
    scheduler = Scheduler([3, 1, 2])
    scheduler.add_worker("a")
    assert scheduler.next_job("a") == 3
    scheduler.end_attempt("a", 3, OK)
    assert scheduler.next_job("a") == 1
    scheduler.end_attempt("a", 1, OK)
    assert scheduler.next_job("a") == 2


def test_a_fast_worker_does_more_jobs() -> None:
    scheduler = _scheduler(5, "fast", "slow")
    assert scheduler.next_job("fast") == 1
    assert scheduler.next_job("slow") == 2
    assert scheduler.jobs[1].state is JobState.RUNNING
    assert scheduler.running == 2
    scheduler.end_attempt("fast", 1, OK)
    assert scheduler.next_job("fast") == 3
    scheduler.end_attempt("fast", 3, OK)
    assert scheduler.next_job("fast") == 4
    scheduler.end_attempt("fast", 4, OK)
    assert scheduler.next_job("fast") == 5
    scheduler.end_attempt("fast", 5, OK)
    assert scheduler.next_job("fast") is Wait.WAIT  # job 2 still runs
    scheduler.end_attempt("slow", 2, OK)
    assert scheduler.done
    assert scheduler.finished[JobState.OK] == 5
    assert not scheduler.jobs  # finished jobs leave no record behind
    assert scheduler.next_job("fast") is Wait.RELEASE
    assert scheduler.next_job("slow") is Wait.RELEASE


def test_finished_counts_and_done() -> None:
    earlier = {JobState.OK: 4, JobState.FAILED: 1, JobState.PENDING: 3}
    scheduler = _scheduler(3, "a", retries=0, finished=earlier)
    assert not scheduler.done
    # Counts carried over from earlier runs of the session; only final states count.
    assert scheduler.finished == {
        JobState.OK: 4,
        JobState.FAILED: 1,
        JobState.TIMEOUT: 0,
        JobState.LOST: 0,
    }
    _run(scheduler, "a", OK)
    _run(scheduler, "a", FAILED)
    assert scheduler.next_job("a") == 3
    assert scheduler.finished[JobState.OK] == 5
    assert scheduler.finished[JobState.FAILED] == 2
    assert list(scheduler.jobs) == [3]
    scheduler.end_attempt("a", 3, TIMEOUT)
    assert scheduler.done
    assert scheduler.finished[JobState.TIMEOUT] == 1


def test_pending_jobs_are_taken_from_the_source_lazily() -> None:
    taken: list[int] = []

    def source() -> Iterator[int]:
        for job_id in range(1, 1_000_001):
            taken.append(job_id)
            yield job_id

    scheduler = Scheduler(source())
    scheduler.add_worker("a")
    for expected in range(1, 4):
        assert _run(scheduler, "a", OK).state is JobState.OK
        assert taken[-1] == expected
    assert len(taken) == 3
    assert not scheduler.jobs


def test_no_jobs_is_done_and_releases() -> None:
    scheduler = _scheduler(0, "a")
    assert scheduler.done
    assert scheduler.next_job("a") is Wait.RELEASE


def test_final_states() -> None:
    assert not JobState.PENDING.final
    assert not JobState.RUNNING.final
    assert all(s.final for s in (JobState.OK, JobState.FAILED, JobState.TIMEOUT, JobState.LOST))


# -- retries -------------------------------------------------------------------


def test_failed_job_goes_to_the_back_of_the_queue() -> None:
    scheduler = _scheduler(3, "a", retries=1)
    assert scheduler.next_job("a") == 1
    ended = scheduler.end_attempt("a", 1, FAILED)
    assert ended == Ended(JobState.PENDING, requeued=True, worker_retired=False, attempts=1)
    assert scheduler.jobs[1].state is JobState.PENDING
    assert scheduler.jobs[1].attempts == 1
    assert scheduler.queue.peek(5) == [2, 3, 1]
    order = []
    for _ in range(3):
        job = scheduler.next_job("a")
        assert isinstance(job, int)
        order.append(job)
        last = scheduler.end_attempt("a", job, OK)
    assert order == [2, 3, 1]
    assert last == Ended(JobState.OK, requeued=False, worker_retired=False, attempts=2)


@pytest.mark.parametrize("retries", [0, 1, 3])
@pytest.mark.parametrize(
    ("last", "final"), [(FAILED, JobState.FAILED), (TIMEOUT, JobState.TIMEOUT)]
)
def test_retries_give_at_most_n_plus_one_attempts(
    retries: int, last: Outcome, final: JobState
) -> None:
    scheduler = _scheduler(1, "a", retries=retries)
    other = TIMEOUT if last is FAILED else FAILED
    for attempt in range(1, retries + 1):
        assert scheduler.next_job("a") == 1
        ended = scheduler.end_attempt("a", 1, other)
        assert ended.requeued
        assert ended.state is JobState.PENDING
        assert scheduler.jobs[1].attempts == attempt
    assert scheduler.next_job("a") == 1
    ended = scheduler.end_attempt("a", 1, last)
    assert ended == Ended(final, requeued=False, worker_retired=False, attempts=retries + 1)
    assert scheduler.finished[final] == 1
    assert not scheduler.queue
    assert scheduler.done
    assert scheduler.next_job("a") is Wait.RELEASE


def test_ok_job_is_never_run_again() -> None:
    scheduler = _scheduler(1, "a", retries=3)
    assert scheduler.next_job("a") == 1
    assert scheduler.end_attempt("a", 1, OK) == Ended(JobState.OK, False, False, 1)
    assert scheduler.next_job("a") is Wait.RELEASE


# -- a retry prefers another worker -------------------------------------------


def test_a_retried_job_goes_to_another_worker() -> None:
    scheduler = _scheduler(2, "a", "b", retries=1)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") == 2
    scheduler.end_attempt("a", 1, FAILED)
    scheduler.end_attempt("b", 2, TIMEOUT)
    assert scheduler.jobs[1].failed_on == "a"
    assert scheduler.queue.peek(5) == [1, 2]
    # Each worker asks first for the job that failed on it and gets the other.
    assert scheduler.next_job("a") == 2
    assert scheduler.next_job("b") == 1
    assert scheduler.end_attempt("b", 1, OK) == Ended(JobState.OK, False, False, 2)
    assert scheduler.end_attempt("a", 2, OK) == Ended(JobState.OK, False, False, 2)


def test_a_retry_waits_for_a_free_worker_rather_than_run_where_it_failed() -> None:
    scheduler = _scheduler(1, "a", "b", retries=1)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") is Wait.WAIT
    scheduler.end_attempt("a", 1, FAILED)
    # "a" asks first (it was awake): "b" is free, so "a" leaves the retry to it.
    assert scheduler.next_job("a") is Wait.WAIT
    assert scheduler.next_job("b") == 1


def test_a_retry_waits_for_a_busy_worker_and_runs_where_it_failed_once_none_is_left() -> None:
    scheduler = _scheduler(2, "a", "b", retries=1)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") == 2
    scheduler.end_attempt("a", 1, FAILED)
    assert scheduler.next_job("a") is Wait.WAIT  # for "b", busy now
    scheduler.fail_worker("b")
    assert scheduler.next_job("a") == 2  # "b"'s job, back at the front
    scheduler.end_attempt("a", 2, OK)
    assert scheduler.next_job("a") == 1  # no other worker is left: "a" retries it


def test_a_costly_worker_takes_a_retry_it_failed_rather_than_wait() -> None:
    scheduler = Scheduler([1], retries=1)
    scheduler.add_worker("a", keep_idle=False)
    scheduler.add_worker("b")
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") is Wait.WAIT
    scheduler.end_attempt("a", 1, FAILED)
    assert scheduler.next_job("a") == 1


def test_a_worker_passes_over_the_retries_it_failed() -> None:
    scheduler = _scheduler(4, "a", "b", retries=1)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") == 2
    scheduler.end_attempt("a", 1, FAILED)
    scheduler.end_attempt("b", 2, FAILED)
    assert _run(scheduler, "a", OK).state is JobState.OK  # job 3
    assert scheduler.queue.peek(5) == [4, 1, 2]
    assert scheduler.next_job("a") == 4  # fresh jobs first, as before
    scheduler.end_attempt("a", 4, OK)
    # Job 1 failed on "a": it takes job 2, which failed on "b", and job 1 stays first.
    assert scheduler.next_job("a") == 2
    assert scheduler.queue.peek(5) == [1]
    assert scheduler.next_job("b") == 1


def test_with_one_worker_a_retry_runs_on_it() -> None:
    scheduler = _scheduler(2, "a", retries=1)
    assert scheduler.next_job("a") == 1
    scheduler.end_attempt("a", 1, FAILED)
    assert _run(scheduler, "a", OK).state is JobState.OK  # job 2
    assert scheduler.next_job("a") == 1
    assert scheduler.end_attempt("a", 1, OK) == Ended(JobState.OK, False, False, 2)


def test_a_retired_or_removed_worker_is_no_other_worker() -> None:
    scheduler = _scheduler(4, "a", "b", "c", retries=1)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") == 2
    assert scheduler.next_job("c") == 3
    scheduler.end_attempt("a", 1, TIMEOUT)
    scheduler.end_attempt("b", 2, FAILED)
    scheduler.end_attempt("c", 3, OK)
    scheduler.remove_worker("c")
    assert scheduler.fail_worker("b") == []  # retired, not yet removed
    assert scheduler.queue.peek(5) == [4, 1, 2]
    assert scheduler.next_job("a") == 4
    scheduler.end_attempt("a", 4, OK)
    # "b" is retired and "c" gone: "a" takes the queue in order.
    assert scheduler.next_job("a") == 1
    scheduler.end_attempt("a", 1, OK)
    assert scheduler.next_job("a") == 2


def test_a_job_passed_over_keeps_its_place_for_the_others() -> None:
    scheduler = Scheduler([1, 2, 3], retries=1)
    for worker in ("a", "b", "c"):
        scheduler.add_worker(worker)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") == 2
    assert scheduler.next_job("c") == 3
    scheduler.end_attempt("a", 1, FAILED)
    scheduler.end_attempt("b", 2, FAILED)
    scheduler.end_attempt("c", 3, FAILED)
    assert scheduler.queue.peek(5) == [1, 2, 3]
    assert scheduler.next_job("a") == 2  # passes over 1
    assert scheduler.queue.peek(5) == [1, 3]
    assert scheduler.next_job("c") == 1  # 1 is still first for the others
    assert scheduler.next_job("b") == 3


def test_a_job_put_front_remembers_its_last_failure() -> None:
    scheduler = _scheduler(4, "a", "b", "c", retries=1)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") == 2
    assert scheduler.next_job("c") == 3
    scheduler.end_attempt("a", 1, FAILED)
    assert scheduler.next_job("a") == 4
    scheduler.end_attempt("b", 2, FAILED)
    scheduler.end_attempt("c", 3, OK)
    assert scheduler.next_job("c") == 1
    scheduler.interrupt("c", 1)  # an abort puts it at the front
    assert scheduler.queue.peek(5) == [1, 2]
    scheduler.end_attempt("a", 4, OK)
    # Job 1 at the front still last failed on "a": it takes job 2 behind it.
    assert scheduler.next_job("a") == 2
    assert scheduler.next_job("b") == 1


def test_the_look_ahead_is_bounded() -> None:
    jobs = LOOK_AHEAD + 2
    scheduler = Scheduler(range(1, jobs + 1), retries=1)
    scheduler.add_worker("a", keep_idle=False)  # costly: it never waits for "b"
    scheduler.add_worker("b")
    assert scheduler.next_job("b") == 1
    for _ in range(jobs - 1):
        assert _run(scheduler, "a", FAILED).requeued
    # Jobs 2.. failed on "a"; the last one is marked as failed on "b" but is
    # out of a's sight, so "a" takes the first.
    scheduler.jobs[jobs].failed_on = "b"
    assert scheduler.next_job("a") == 2


def test_passing_over_does_not_read_a_large_source() -> None:
    taken: list[int] = []

    def source() -> Iterator[int]:
        for job_id in range(1, 1_000_001):
            taken.append(job_id)
            yield job_id

    scheduler = Scheduler(source(), retries=1)
    scheduler.add_worker("a")
    scheduler.add_worker("b")
    assert scheduler.next_job("a") == 1
    scheduler.interrupt("a", 1)
    assert scheduler.next_job("a") == 1
    scheduler.end_attempt("a", 1, FAILED)
    for expected in range(2, 5):
        # Fresh jobs come before the retry, and "a" reads them one at a time.
        assert scheduler.next_job("a") == expected
        scheduler.end_attempt("a", expected, FAILED if expected == 2 else OK)
    assert len(taken) <= 5
    assert {job: scheduler.jobs[job].failed_on for job in scheduler.jobs} == {1: "a", 2: "a"}


# -- strikes -------------------------------------------------------------------


def test_strikes_retire_a_worker_after_n_consecutive_failures() -> None:
    scheduler = _scheduler(10, "a", "b", strikes=2)
    assert not _run(scheduler, "a", FAILED).worker_retired
    assert not _run(scheduler, "a", OK).worker_retired  # resets the count
    assert not _run(scheduler, "a", TIMEOUT).worker_retired  # timeouts count too
    assert scheduler.workers["a"].strikes == 1
    ended = _run(scheduler, "a", FAILED)
    assert ended == Ended(JobState.FAILED, requeued=False, worker_retired=True, attempts=1)
    assert scheduler.workers["a"].retired
    # Jobs are still waiting, but a retired worker gets none of them.
    assert scheduler.queue
    assert scheduler.next_job("a") is Wait.RELEASE
    scheduler.remove_worker("a")
    assert scheduler.next_job("b") == 5


def test_strikes_retire_even_when_the_job_is_retried() -> None:
    scheduler = _scheduler(1, "a", "b", strikes=1, retries=1)
    ended = _run(scheduler, "a", TIMEOUT)
    assert ended == Ended(JobState.PENDING, requeued=True, worker_retired=True, attempts=1)
    assert scheduler.next_job("a") is Wait.RELEASE
    assert scheduler.next_job("b") == 1


def test_strikes_zero_never_retires() -> None:
    scheduler = _scheduler(20, "a", strikes=0)
    for _ in range(20):
        assert not _run(scheduler, "a", FAILED).worker_retired
    assert not scheduler.workers["a"].retired
    assert scheduler.finished[JobState.FAILED] == 20


def test_strikes_are_per_worker() -> None:
    scheduler = _scheduler(10, "a", "b", strikes=2)
    assert not _run(scheduler, "a", FAILED).worker_retired
    assert not _run(scheduler, "b", FAILED).worker_retired
    assert not _run(scheduler, "b", OK).worker_retired
    assert _run(scheduler, "a", FAILED).worker_retired
    assert not scheduler.workers["b"].retired


# -- worker failures -------------------------------------------------------------


def test_failed_worker_puts_its_job_at_the_front_without_a_retry() -> None:
    scheduler = _scheduler(3, "a", "b", retries=0)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") == 2
    ended = scheduler.fail_worker("a")
    assert ended == [Ended(JobState.PENDING, requeued=True, worker_retired=True, attempts=0)]
    assert scheduler.jobs[1].state is JobState.PENDING
    assert scheduler.queue.peek(5) == [1, 3]
    assert scheduler.next_job("a") is Wait.RELEASE
    scheduler.remove_worker("a")
    scheduler.end_attempt("b", 2, OK)
    assert scheduler.next_job("b") == 1
    # retries=0: the one real attempt still ends it, the lost one did not count.
    assert scheduler.end_attempt("b", 1, FAILED) == Ended(JobState.FAILED, False, False, 1)


def test_job_is_lost_after_lost_after_worker_failures_in_a_row() -> None:
    scheduler = Scheduler([1, 2], lost_after=3, retries=5)
    for n in range(1, 4):
        scheduler.add_worker(f"w{n}")
        assert scheduler.next_job(f"w{n}") == 1
        [ended] = scheduler.fail_worker(f"w{n}")
        if n < 3:
            assert ended == Ended(JobState.PENDING, True, True, attempts=0)
            assert scheduler.queue.peek(1) == [1]
        else:
            assert ended == Ended(JobState.LOST, False, True, attempts=0)
    assert scheduler.finished[JobState.LOST] == 1
    assert scheduler.queue.peek(5) == [2]
    scheduler.add_worker("w4")
    assert scheduler.next_job("w4") == 2


def test_worker_losses_in_a_row_are_reset_by_a_real_attempt() -> None:
    scheduler = Scheduler([1], lost_after=2, retries=1)
    scheduler.add_worker("w1")
    scheduler.add_worker("w2")
    scheduler.add_worker("w3")
    assert scheduler.next_job("w1") == 1
    assert scheduler.fail_worker("w1") == [Ended(JobState.PENDING, True, True, 0)]
    assert scheduler.next_job("w2") == 1
    assert scheduler.end_attempt("w2", 1, FAILED).requeued
    assert scheduler.next_job("w3") == 1
    # One worker failure since the last real attempt: not lost yet.
    assert scheduler.fail_worker("w3") == [Ended(JobState.PENDING, True, True, 1)]
    scheduler.add_worker("w4")
    assert scheduler.next_job("w4") == 1
    assert scheduler.fail_worker("w4") == [Ended(JobState.LOST, False, True, 1)]


def test_fail_idle_worker() -> None:
    scheduler = _scheduler(2, "a", "b")
    assert scheduler.fail_worker("a") == []
    assert scheduler.workers["a"].retired
    assert scheduler.next_job("a") is Wait.RELEASE
    assert scheduler.queue.peek(5) == [1, 2]
    assert scheduler.next_job("b") == 1


# -- wait or release -------------------------------------------------------------


def test_idle_worker_waits_if_cheap_and_is_released_otherwise() -> None:
    scheduler = _scheduler(1, "busy")
    scheduler.add_worker("cheap", keep_idle=True)
    scheduler.add_worker("costly", keep_idle=False)
    assert scheduler.next_job("busy") == 1
    assert scheduler.next_job("cheap") is Wait.WAIT
    assert scheduler.next_job("costly") is Wait.RELEASE
    scheduler.end_attempt("busy", 1, OK)
    assert scheduler.next_job("cheap") is Wait.RELEASE


def test_waiting_worker_picks_up_a_retried_job() -> None:
    scheduler = _scheduler(1, "a", "b", retries=1)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") is Wait.WAIT
    scheduler.end_attempt("a", 1, FAILED)
    assert scheduler.next_job("b") == 1
    assert scheduler.next_job("a") is Wait.WAIT
    scheduler.end_attempt("b", 1, OK)
    assert scheduler.next_job("a") is Wait.RELEASE
    assert scheduler.next_job("b") is Wait.RELEASE


def test_waiting_worker_picks_up_the_job_of_a_failed_worker() -> None:
    scheduler = _scheduler(1, "a", "b")
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") is Wait.WAIT
    scheduler.fail_worker("a")
    assert scheduler.next_job("b") == 1


def test_keep_idle_does_not_wait_when_nothing_runs() -> None:
    scheduler = _scheduler(1, "a", "b")
    _run(scheduler, "a", OK)
    assert scheduler.next_job("b") is Wait.RELEASE


# -- stop and interrupt ----------------------------------------------------------


def test_stop_releases_every_worker_once_its_job_ends() -> None:
    scheduler = _scheduler(5, "a", "b", retries=2)
    assert scheduler.next_job("a") == 1
    scheduler.stop()
    assert scheduler.next_job("b") is Wait.RELEASE
    assert scheduler.end_attempt("a", 1, FAILED).requeued
    assert scheduler.next_job("a") is Wait.RELEASE
    assert scheduler.queue.peek(10) == [2, 3, 4, 5, 1]
    assert not scheduler.finished[JobState.FAILED]
    assert not scheduler.done


def test_interrupt_puts_the_job_back_as_if_never_run() -> None:
    scheduler = _scheduler(3, "a", "b", retries=0)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("b") == 2
    scheduler.interrupt("b", 2)
    assert scheduler.jobs[2].state is JobState.PENDING
    assert scheduler.jobs[2].attempts == 0
    assert scheduler.workers["b"].jobs == set()
    assert scheduler.queue.peek(5) == [2, 3]
    assert scheduler.running == 1
    assert scheduler.next_job("b") == 2
    assert scheduler.end_attempt("b", 2, OK).state is JobState.OK


# -- slots -----------------------------------------------------------------------


def test_a_worker_with_4_slots_takes_4_jobs_and_a_5th_ask_is_an_error() -> None:
    scheduler = Scheduler(range(1, 7))
    scheduler.add_worker("a", slots=4)
    assert scheduler.workers["a"].free == 4
    assert [scheduler.next_job("a") for _ in range(4)] == [1, 2, 3, 4]
    assert scheduler.workers["a"].jobs == {1, 2, 3, 4}
    assert scheduler.workers["a"].free == 0
    assert scheduler.running == 4
    assert all(scheduler.jobs[j].state is JobState.RUNNING for j in (1, 2, 3, 4))
    with pytest.raises(SchedulerError, match="no slot free"):
        scheduler.next_job("a")
    # The refused question changed nothing.
    assert scheduler.queue.peek(5) == [5, 6]
    assert scheduler.workers["a"].jobs == {1, 2, 3, 4}


def test_slots_must_be_at_least_one() -> None:
    scheduler = Scheduler([1])
    for slots in (0, -1):
        with pytest.raises(SchedulerError):
            scheduler.add_worker("a", slots=slots)
    assert not scheduler.workers
    scheduler.add_worker("a", slots=1)
    assert scheduler.workers["a"].slots == 1


def test_ending_or_interrupting_a_job_frees_its_slot() -> None:
    scheduler = Scheduler(range(1, 7), retries=1)
    scheduler.add_worker("a", slots=3)
    assert [scheduler.next_job("a") for _ in range(3)] == [1, 2, 3]
    assert scheduler.end_attempt("a", 2, OK).state is JobState.OK
    assert scheduler.workers["a"].jobs == {1, 3}
    assert scheduler.workers["a"].free == 1
    assert scheduler.next_job("a") == 4
    assert scheduler.end_attempt("a", 3, FAILED).requeued
    scheduler.interrupt("a", 1)
    assert scheduler.workers["a"].jobs == {4}
    assert scheduler.running == 1
    assert scheduler.queue.peek(5) == [1, 5, 6, 3]
    # Each slot freed asks again, in any order.
    assert [scheduler.next_job("a") for _ in range(2)] == [1, 5]
    with pytest.raises(SchedulerError):
        scheduler.next_job("a")


def test_running_counts_the_jobs_on_every_slot() -> None:
    scheduler = Scheduler(range(1, 10))
    scheduler.add_worker("a", slots=3)
    scheduler.add_worker("b", slots=2)
    scheduler.add_worker("c")
    for worker, asks in (("a", 3), ("b", 2), ("c", 1)):
        for _ in range(asks):
            assert isinstance(scheduler.next_job(worker), int)
    assert scheduler.running == 6
    scheduler.end_attempt("b", 5, OK)
    assert scheduler.running == 5


def test_a_slot_with_nothing_to_start_waits_while_its_worker_runs_a_job() -> None:
    scheduler = Scheduler([1, 2], retries=1)
    scheduler.add_worker("cheap", slots=2)
    scheduler.add_worker("costly", keep_idle=False, slots=3)
    assert scheduler.next_job("cheap") == 1
    assert scheduler.next_job("costly") == 2
    # The queue is empty and jobs run: a cheap worker's slot waits, as ever,
    # and so does a costly worker's, as it stays anyway for the job it runs.
    assert scheduler.next_job("cheap") is Wait.WAIT
    assert scheduler.next_job("costly") is Wait.WAIT
    assert scheduler.end_attempt("costly", 2, OK).state is JobState.OK
    # It runs nothing now: a costly worker's slot goes, a cheap one's waits.
    assert scheduler.next_job("costly") is Wait.RELEASE
    assert scheduler.next_job("cheap") is Wait.WAIT
    scheduler.remove_worker("costly")  # every slot of it got RELEASE
    scheduler.end_attempt("cheap", 1, OK)
    assert scheduler.next_job("cheap") is Wait.RELEASE
    assert scheduler.next_job("cheap") is Wait.RELEASE  # its other slot


def test_a_retry_passes_over_every_slot_of_the_worker_it_failed_on() -> None:
    scheduler = Scheduler([1, 2, 3, 4], retries=1)
    scheduler.add_worker("a", slots=3)
    scheduler.add_worker("b")
    assert [scheduler.next_job("a") for _ in range(3)] == [1, 2, 3]
    assert scheduler.next_job("b") == 4
    assert scheduler.end_attempt("a", 1, FAILED).requeued
    assert scheduler.jobs[1].failed_on == "a"
    # Another slot of "a" leaves job 1 to "b", busy now.
    assert scheduler.next_job("a") is Wait.WAIT
    assert scheduler.end_attempt("a", 2, OK).state is JobState.OK
    assert scheduler.next_job("a") is Wait.WAIT
    assert scheduler.end_attempt("b", 4, OK).state is JobState.OK
    assert scheduler.next_job("b") == 1
    assert scheduler.end_attempt("b", 1, OK) == Ended(JobState.OK, False, False, 2)


def test_a_multi_slot_worker_takes_a_retry_it_failed_behind_others() -> None:
    scheduler = Scheduler(range(1, 6), retries=1)
    scheduler.add_worker("a", slots=2)
    scheduler.add_worker("b")
    assert [scheduler.next_job("a") for _ in range(2)] == [1, 2]
    assert scheduler.next_job("b") == 3
    assert scheduler.end_attempt("a", 1, FAILED).requeued
    assert scheduler.end_attempt("b", 3, FAILED).requeued
    assert scheduler.queue.peek(5) == [4, 5, 1, 3]
    assert scheduler.next_job("a") == 4
    assert scheduler.end_attempt("a", 4, OK).state is JobState.OK
    assert scheduler.next_job("a") == 5
    assert scheduler.end_attempt("a", 2, OK).state is JobState.OK
    # Job 1 failed on "a": its free slot takes job 3 behind it.
    assert scheduler.next_job("a") == 3
    assert scheduler.queue.peek(5) == [1]
    assert scheduler.next_job("b") == 1


def test_a_costly_multi_slot_worker_takes_its_failed_retry_once_it_runs_nothing() -> None:
    scheduler = Scheduler([1, 2, 3], retries=1)
    scheduler.add_worker("a", keep_idle=False, slots=2)
    scheduler.add_worker("b")
    assert [scheduler.next_job("a") for _ in range(2)] == [1, 2]
    assert scheduler.next_job("b") == 3
    assert scheduler.end_attempt("a", 1, FAILED).requeued
    assert scheduler.next_job("a") is Wait.WAIT  # it stays for job 2 anyway
    assert scheduler.end_attempt("a", 2, OK).state is JobState.OK
    # Idle now, it takes the retry rather than wait at a cost: as with one slot.
    assert scheduler.next_job("a") == 1


def test_with_one_multi_slot_worker_a_retry_runs_on_it() -> None:
    scheduler = Scheduler([1, 2], retries=1)
    scheduler.add_worker("a", slots=2)
    assert [scheduler.next_job("a") for _ in range(2)] == [1, 2]
    assert scheduler.end_attempt("a", 1, FAILED).requeued
    assert scheduler.next_job("a") == 1  # while job 2 still runs on the other slot


def test_strikes_count_the_ends_of_every_slot_in_order() -> None:
    scheduler = Scheduler(range(1, 10), strikes=2)
    scheduler.add_worker("a", slots=3)
    scheduler.add_worker("b")
    assert [scheduler.next_job("a") for _ in range(3)] == [1, 2, 3]
    assert not scheduler.end_attempt("a", 2, FAILED).worker_retired
    assert not scheduler.end_attempt("a", 1, OK).worker_retired  # resets the count
    assert scheduler.next_job("a") == 4
    assert not scheduler.end_attempt("a", 4, TIMEOUT).worker_retired
    ended = scheduler.end_attempt("a", 3, FAILED)
    assert ended == Ended(JobState.FAILED, False, worker_retired=True, attempts=1)
    assert scheduler.workers["a"].retired
    # Retired: no slot starts a job, and the worker is no other worker for a retry.
    assert scheduler.next_job("a") is Wait.RELEASE
    assert scheduler.next_job("b") == 5


def test_a_retired_worker_s_running_jobs_end_as_usual() -> None:
    scheduler = Scheduler(range(1, 10), strikes=1, retries=1)
    scheduler.add_worker("a", slots=3)
    assert [scheduler.next_job("a") for _ in range(3)] == [1, 2, 3]
    assert scheduler.end_attempt("a", 1, FAILED) == Ended(JobState.PENDING, True, True, 1)
    assert scheduler.next_job("a") is Wait.RELEASE
    # Only the end that retired it says so.
    assert scheduler.end_attempt("a", 2, FAILED) == Ended(JobState.PENDING, True, False, 1)
    assert scheduler.end_attempt("a", 3, OK) == Ended(JobState.OK, False, False, 1)
    assert scheduler.workers["a"].retired
    assert scheduler.next_job("a") is Wait.RELEASE
    scheduler.remove_worker("a")
    assert scheduler.queue.peek(10) == [4, 5, 6, 7, 8, 9, 1, 2]


def test_fail_worker_puts_every_running_job_back_at_the_front_in_order() -> None:
    scheduler = Scheduler(range(1, 8), retries=1, lost_after=2)
    scheduler.add_worker("a", slots=4)
    scheduler.add_worker("b", slots=4)
    assert [scheduler.next_job("a") for _ in range(3)] == [1, 2, 3]
    assert scheduler.next_job("b") == 4
    ended = scheduler.fail_worker("a")
    assert ended == [Ended(JobState.PENDING, requeued=True, worker_retired=True, attempts=0)] * 3
    assert scheduler.workers["a"].retired
    assert scheduler.workers["a"].jobs == set()
    assert scheduler.running == 1
    assert scheduler.queue.peek(10) == [1, 2, 3, 5, 6, 7]
    assert [scheduler.jobs[j].worker_losses for j in (1, 2, 3)] == [1, 1, 1]
    assert all(scheduler.jobs[j].state is JobState.PENDING for j in (1, 2, 3))
    assert scheduler.next_job("a") is Wait.RELEASE
    scheduler.remove_worker("a")
    # "b" takes them first; one ends, then "b" fails too: the two it still
    # runs reach lost_after, the one it took since is put back.
    assert [scheduler.next_job("b") for _ in range(3)] == [1, 2, 3]
    assert scheduler.end_attempt("b", 2, OK).state is JobState.OK
    assert scheduler.next_job("b") == 5
    assert scheduler.fail_worker("b") == [
        Ended(JobState.LOST, False, True, 0),  # job 1
        Ended(JobState.LOST, False, True, 0),  # job 3
        Ended(JobState.PENDING, True, True, 0),  # job 4
        Ended(JobState.PENDING, True, True, 0),  # job 5
    ]
    assert scheduler.finished[JobState.LOST] == 2
    assert scheduler.queue.peek(10) == [4, 5, 6, 7]
    assert scheduler.running == 0


def test_fail_worker_gives_its_jobs_in_job_order() -> None:
    scheduler = Scheduler([3, 1, 2], retries=1)
    scheduler.add_worker("a", slots=3)
    assert [scheduler.next_job("a") for _ in range(2)] == [3, 1]
    assert scheduler.end_attempt("a", 1, FAILED).requeued
    assert [scheduler.next_job("a") for _ in range(2)] == [2, 1]
    # Taken as 3, 2, 1; put back, and told, as 1, 2, 3: job 1 made an attempt.
    assert scheduler.fail_worker("a") == [
        Ended(JobState.PENDING, True, True, 1),
        Ended(JobState.PENDING, True, True, 0),
        Ended(JobState.PENDING, True, True, 0),
    ]
    assert scheduler.queue.peek(5) == [1, 2, 3]


def test_a_worker_fails_with_jobs_lost_after_a_real_attempt_elsewhere() -> None:
    scheduler = Scheduler([1, 2], lost_after=2, retries=1)
    scheduler.add_worker("a", slots=2)
    scheduler.add_worker("b", slots=2)
    assert [scheduler.next_job("a") for _ in range(2)] == [1, 2]
    assert scheduler.fail_worker("a") == [Ended(JobState.PENDING, True, True, 0)] * 2
    assert [scheduler.next_job("b") for _ in range(2)] == [1, 2]
    assert scheduler.end_attempt("b", 1, FAILED).requeued  # a real attempt: losses reset
    assert scheduler.next_job("b") == 1
    assert scheduler.fail_worker("b") == [
        Ended(JobState.PENDING, True, True, 1),  # job 1: one loss in a row
        Ended(JobState.LOST, False, True, 0),  # job 2: the second
    ]


def test_removing_a_worker_with_any_job_is_an_error() -> None:
    scheduler = Scheduler([1, 2])
    scheduler.add_worker("a", slots=2)
    assert [scheduler.next_job("a") for _ in range(2)] == [1, 2]
    scheduler.end_attempt("a", 1, OK)
    with pytest.raises(SchedulerError, match="running jobs 2"):
        scheduler.remove_worker("a")
    scheduler.end_attempt("a", 2, OK)
    scheduler.remove_worker("a")
    assert not scheduler.workers


def test_ending_a_job_another_slot_does_not_run_is_an_error() -> None:
    scheduler = Scheduler([1, 2, 3])
    scheduler.add_worker("a", slots=2)
    scheduler.add_worker("b", slots=2)
    assert [scheduler.next_job("a") for _ in range(2)] == [1, 2]
    assert scheduler.next_job("b") == 3
    for worker, job in (("a", 3), ("b", 1), ("a", 4)):
        with pytest.raises(SchedulerError):
            scheduler.end_attempt(worker, job, OK)
        with pytest.raises(SchedulerError):
            scheduler.interrupt(worker, job)
    scheduler.end_attempt("a", 1, OK)
    with pytest.raises(SchedulerError):
        scheduler.end_attempt("a", 1, OK)  # ended already
    assert scheduler.workers["a"].jobs == {2}
    assert scheduler.jobs[3].state is JobState.RUNNING


def test_stop_releases_every_free_slot_while_the_jobs_end() -> None:
    scheduler = Scheduler(range(1, 6))
    scheduler.add_worker("a", slots=3)
    assert [scheduler.next_job("a") for _ in range(2)] == [1, 2]
    scheduler.stop()
    assert scheduler.next_job("a") is Wait.RELEASE
    assert scheduler.end_attempt("a", 1, OK).state is JobState.OK
    assert scheduler.next_job("a") is Wait.RELEASE
    assert scheduler.end_attempt("a", 2, OK).state is JobState.OK
    scheduler.remove_worker("a")
    assert scheduler.queue.peek(5) == [3, 4, 5]


# -- drain -----------------------------------------------------------------------


def test_a_drained_worker_starts_nothing_and_its_jobs_end_as_usual() -> None:
    scheduler = Scheduler(range(1, 7), retries=1, strikes=2)
    scheduler.add_worker("spot", slots=3)
    scheduler.add_worker("b")
    assert [scheduler.next_job("spot") for _ in range(2)] == [1, 2]
    assert scheduler.end_attempt("spot", 1, FAILED).requeued
    assert scheduler.next_job("spot") == 3
    assert scheduler.workers["spot"].strikes == 1
    scheduler.drain("spot")
    record = scheduler.workers["spot"]
    # No strike, not retired: draining is no failure.
    assert record.draining
    assert not record.retired
    assert record.strikes == 1
    assert record.jobs == {2, 3}
    assert scheduler.next_job("spot") is Wait.RELEASE  # its free slot
    assert scheduler.end_attempt("spot", 2, OK) == Ended(JobState.OK, False, False, 1)
    assert scheduler.next_job("spot") is Wait.RELEASE
    with pytest.raises(SchedulerError):
        scheduler.remove_worker("spot")  # job 3 still runs
    assert scheduler.end_attempt("spot", 3, FAILED) == Ended(JobState.PENDING, True, False, 1)
    assert scheduler.next_job("spot") is Wait.RELEASE
    assert not scheduler.workers["spot"].retired
    scheduler.remove_worker("spot")
    # The jobs left, the retries that failed on it first, go to "b".
    assert scheduler.queue.peek(10) == [4, 5, 6, 1, 3]
    assert [_run(scheduler, "b", OK).state for _ in range(5)] == [JobState.OK] * 5
    assert scheduler.done


def test_a_drained_worker_is_no_other_worker_for_a_retry() -> None:
    scheduler = Scheduler([1, 2], retries=1)
    scheduler.add_worker("a", slots=2)
    scheduler.add_worker("spot", slots=2)
    assert scheduler.next_job("a") == 1
    assert scheduler.next_job("spot") == 2
    assert scheduler.end_attempt("a", 1, FAILED).requeued
    assert scheduler.next_job("a") is Wait.WAIT  # left to "spot"
    scheduler.drain("spot")
    # Nobody else will take it: "a" does (the runner wakes its waiting slots).
    assert scheduler.next_job("a") == 1


def test_a_drained_worker_may_still_fail() -> None:
    scheduler = Scheduler([1, 2, 3])
    scheduler.add_worker("spot", slots=2)
    assert [scheduler.next_job("spot") for _ in range(2)] == [1, 2]
    scheduler.drain("spot")
    scheduler.drain("spot")  # twice is as once
    assert scheduler.fail_worker("spot") == [Ended(JobState.PENDING, True, True, 0)] * 2
    assert scheduler.workers["spot"].retired
    assert scheduler.queue.peek(5) == [1, 2, 3]


def test_draining_an_unknown_worker_is_an_error() -> None:
    scheduler = Scheduler([1])
    with pytest.raises(SchedulerError):
        scheduler.drain("nobody")


# -- misuse ----------------------------------------------------------------------


def test_asking_for_a_job_while_running_is_an_error() -> None:
    scheduler = _scheduler(2, "a")
    assert scheduler.next_job("a") == 1
    with pytest.raises(SchedulerError):
        scheduler.next_job("a")
    # The refused question changed nothing.
    assert scheduler.queue.peek(5) == [2]
    assert scheduler.workers["a"].jobs == {1}


def test_unknown_worker_is_an_error() -> None:
    scheduler = _scheduler(2, "a")
    with pytest.raises(SchedulerError):
        scheduler.next_job("nobody")
    with pytest.raises(SchedulerError):
        scheduler.end_attempt("nobody", 1, OK)
    with pytest.raises(SchedulerError):
        scheduler.fail_worker("nobody")
    with pytest.raises(SchedulerError):
        scheduler.remove_worker("nobody")
    with pytest.raises(SchedulerError):
        scheduler.interrupt("nobody", 1)
    assert scheduler.queue.peek(5) == [1, 2]


def test_removing_a_running_worker_is_an_error() -> None:
    scheduler = _scheduler(1, "a")
    assert scheduler.next_job("a") == 1
    with pytest.raises(SchedulerError):
        scheduler.remove_worker("a")
    assert "a" in scheduler.workers
    scheduler.end_attempt("a", 1, OK)
    scheduler.remove_worker("a")
    assert "a" not in scheduler.workers
    with pytest.raises(SchedulerError):
        scheduler.remove_worker("a")


def test_adding_a_worker_twice_is_an_error() -> None:
    scheduler = _scheduler(1, "a")
    with pytest.raises(SchedulerError):
        scheduler.add_worker("a")


def test_ending_a_job_the_worker_does_not_run_is_an_error() -> None:
    scheduler = _scheduler(2, "a", "b")
    assert scheduler.next_job("a") == 1
    with pytest.raises(SchedulerError):
        scheduler.end_attempt("b", 1, OK)
    with pytest.raises(SchedulerError):
        scheduler.end_attempt("a", 2, OK)
    with pytest.raises(SchedulerError):
        scheduler.interrupt("a", 2)
    assert scheduler.jobs[1].state is JobState.RUNNING
    assert scheduler.jobs[1].attempts == 0


# -- simulation --------------------------------------------------------------------


@dataclass
class _Model:
    """An independent account of what the docstring rules say must happen."""

    retries: int
    strikes: int
    lost_after: int
    queue: deque[int]
    state: dict[int, JobState]
    keep_idle: dict[str, bool]
    slots: dict[str, int]
    attempts: Counter[int] = field(default_factory=Counter)
    losses: Counter[int] = field(default_factory=Counter)
    consecutive: Counter[str] = field(default_factory=Counter)
    holding: dict[str, set[int]] = field(default_factory=dict)  # the jobs each worker runs
    retired: set[str] = field(default_factory=set)
    draining: set[str] = field(default_factory=set)
    failed_on: dict[int, str] = field(default_factory=dict)
    stopped: bool = False

    def runs(self, worker: str) -> set[int]:
        return self.holding.setdefault(worker, set())


def _check(scheduler: Scheduler, model: _Model) -> None:
    held = [j for r in scheduler.workers.values() for j in r.jobs]
    # No job is on two workers (or two slots) at once.
    assert len(held) == len(set(held))
    assert {w: r.jobs for w, r in scheduler.workers.items() if r.jobs} == {
        w: jobs for w, jobs in model.holding.items() if jobs
    }
    for job_id, record in scheduler.jobs.items():
        # RUNNING exactly when one worker holds it.
        assert (record.state is JobState.RUNNING) == (job_id in held)
        assert record.state is model.state[job_id]
        assert record.attempts <= model.retries + 1
        assert record.attempts == model.attempts[job_id]
    # Only jobs in play have a record; the final ones are only counted.
    in_play = {j for j, state in model.state.items() if not state.final and model.attempts[j]}
    in_play |= {j for j, state in model.state.items() if state is JobState.RUNNING}
    assert in_play <= set(scheduler.jobs)
    assert not any(model.state[j].final for j in scheduler.jobs)
    tally = Counter(state for state in model.state.values() if state.final)
    assert scheduler.finished == {s: tally[s] for s in JobState if s.final}
    # The queue holds exactly the pending jobs, once each, in the model's order.
    assert scheduler.queue.peek(len(model.queue) + 1) == list(model.queue)
    assert bool(scheduler.queue) == bool(model.queue)
    assert scheduler.running == len(held)
    assert scheduler.done == all(state.final for state in model.state.values())
    for worker, record in scheduler.workers.items():
        assert record.retired == (worker in model.retired)
        assert record.draining == (worker in model.draining)
        assert record.slots == model.slots[worker]
        assert 0 <= record.free == record.slots - len(model.runs(worker))


_Slot = tuple[str, int]  # a worker and the number of one of its slots

_RUNNING_ACTIONS = [
    *["ok"] * 5,
    *["failed"] * 3,
    *["timeout"] * 2,
    *["fail_worker"] * 2,
    "interrupt",
    "drain",
]
_IDLE_ACTIONS = ["ask"] * 12 + ["fail_worker", "drain"]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_simulation(data: st.DataObject) -> None:
    n_jobs = data.draw(st.integers(0, 30), label="jobs")
    n_workers = data.draw(st.integers(1, 5), label="workers")
    retries = data.draw(st.integers(0, 3), label="retries")
    strikes = data.draw(st.integers(0, 3), label="strikes")
    lost_after = data.draw(st.integers(1, 3), label="lost_after")
    keep = data.draw(st.lists(st.booleans(), min_size=n_workers, max_size=n_workers))
    n_slots = st.integers(1, 4)
    slot_counts = data.draw(st.lists(n_slots, min_size=n_workers, max_size=n_workers))
    job_ids = data.draw(st.permutations(range(1, n_jobs + 1)), label="job order")
    stop_at = data.draw(st.one_of(st.none(), st.none(), st.integers(1, 120)), label="stop at")

    scheduler = Scheduler(job_ids, retries=retries, strikes=strikes, lost_after=lost_after)
    names = [f"w{n}" for n in range(n_workers)]
    keep_idle = dict(zip(names, keep, strict=True))
    slots = dict(zip(names, slot_counts, strict=True))
    for name in names:
        scheduler.add_worker(name, keep_idle=keep_idle[name], slots=slots[name])
    model = _Model(
        retries=retries,
        strikes=strikes,
        lost_after=lost_after,
        queue=deque(job_ids),
        state=dict.fromkeys(job_ids, JobState.PENDING),
        keep_idle=keep_idle,
        slots=slots,
    )
    # Where each slot of each worker is, from the runner's side.
    status: dict[_Slot, str] = {}  # idle | waiting | running | released
    slot_job: dict[_Slot, int] = {}
    for name in names:
        status.update(dict.fromkeys(((name, n) for n in range(slots[name])), "idle"))
    removed: list[str] = []  # the workers the runner ended, in order
    interrupts = drains = replacements = 0
    _check(scheduler, model)

    def slots_of(worker: str) -> list[_Slot]:
        return [(worker, n) for n in range(slots[worker])]

    def replace(gone: str) -> None:
        """Sometimes the runner launches a new worker in place of a failed or drained one."""
        nonlocal replacements
        if replacements < 5 and data.draw(st.booleans(), label=f"replace {gone}"):
            replacements += 1
            name = f"r{replacements}"
            keep_idle[name] = data.draw(st.booleans(), label=f"keep {name} idle")
            slots[name] = data.draw(n_slots, label=f"{name} slots")
            scheduler.add_worker(name, keep_idle=keep_idle[name], slots=slots[name])
            names.append(name)
            status.update(dict.fromkeys(slots_of(name), "idle"))

    def wake_waiting() -> None:
        """Something changed: every waiting slot asks again (the runner's run.changed())."""
        for slot, where in status.items():
            if where == "waiting":
                status[slot] = "idle"

    def end_worker(worker: str) -> None:
        """The runner ends the worker: every slot of it got RELEASE, it runs nothing."""
        assert all(status[slot] == "released" for slot in slots_of(worker))
        assert not scheduler.workers[worker].jobs
        scheduler.remove_worker(worker)
        removed.append(worker)
        wake_waiting()

    def release(slot: _Slot) -> None:
        status[slot] = "released"
        if all(status[s] == "released" for s in slots_of(slot[0])):
            end_worker(slot[0])

    def fail(worker: str) -> None:
        ended = scheduler.fail_worker(worker)
        model.retired.add(worker)
        expected, put_back = [], []
        for job in sorted(model.holding.pop(worker, set())):
            model.losses[job] += 1
            if model.losses[job] >= lost_after:
                model.state[job] = JobState.LOST
                expected.append(Ended(JobState.LOST, False, True, model.attempts[job]))
            else:
                model.state[job] = JobState.PENDING
                put_back.append(job)
                expected.append(Ended(JobState.PENDING, True, True, model.attempts[job]))
        model.queue.extendleft(reversed(put_back))
        assert ended == expected
        assert not scheduler.workers[worker].jobs
        assert scheduler.next_job(worker) is Wait.RELEASE
        # The runner stops every slot of a failed worker and ends it.
        for slot in slots_of(worker):
            status[slot] = "released"
            slot_job.pop(slot, None)
        end_worker(worker)
        replace(worker)

    def drain(worker: str) -> None:
        nonlocal drains
        drains += 1
        strikes_before = scheduler.workers[worker].strikes
        scheduler.drain(worker)
        model.draining.add(worker)
        assert scheduler.workers[worker].strikes == strikes_before
        replace(worker)
        wake_waiting()

    for step in range(1, 100_000):
        if all(where == "released" for where in status.values()):
            break
        if step == stop_at:
            scheduler.stop()
            model.stopped = True
            wake_waiting()
        actors = [slot for slot, where in status.items() if where in ("idle", "running")]
        # Liveness: a waiting slot waits on a running job, whose end wakes it.
        assert actors, f"every slot waits and nothing runs: {status}"
        slot = data.draw(st.sampled_from(actors))
        worker = slot[0]

        if status[slot] == "idle":
            action = data.draw(st.sampled_from(_IDLE_ACTIONS))
            if action == "drain" and drains >= 2:
                action = "ask"
            if action == "fail_worker":
                fail(worker)
            elif action == "drain":
                drain(worker)
            else:
                answer = scheduler.next_job(worker)
                mine_running = model.runs(worker)
                # A slot may wait if that costs nothing: its worker is cheap to
                # keep, or stays anyway for a job it runs in another slot.
                may_wait = keep_idle[worker] or bool(mine_running)
                expected: int | Wait
                if worker in model.retired or worker in model.draining or model.stopped:
                    expected = Wait.RELEASE
                elif model.queue:
                    others = [w for w in names if w != worker and w not in removed]
                    others = [w for w in others if w not in model.retired | model.draining]
                    mine = [j for j in model.queue if others and model.failed_on.get(j) == worker]
                    sight = itertools.islice(model.queue, LOOK_AHEAD)
                    if others and all(j in mine for j in sight) and may_wait:
                        expected = Wait.WAIT
                    else:
                        expected = next((j for j in model.queue if j not in mine), model.queue[0])
                elif any(model.holding.values()) and may_wait:
                    expected = Wait.WAIT
                else:
                    expected = Wait.RELEASE
                assert answer == expected
                if isinstance(answer, int):
                    # A retired or drained worker never gets a job.
                    assert worker not in model.retired | model.draining
                    assert model.state[answer] is JobState.PENDING
                    model.queue.remove(answer)
                    model.state[answer] = JobState.RUNNING
                    mine_running.add(answer)
                    slot_job[slot] = answer
                    status[slot] = "running"
                elif answer is Wait.WAIT:
                    status[slot] = "waiting"
                else:
                    if worker not in model.retired | model.draining and not model.stopped:
                        # Released only when there is nothing to run, and the
                        # worker runs nothing itself...
                        assert not scheduler.queue
                        assert not scheduler.workers[worker].jobs
                        # ...and, for a worker cheap to keep, nothing that may come back.
                        if keep_idle[worker]:
                            assert scheduler.running == 0
                    release(slot)
            _check(scheduler, model)
            continue

        # The slot is running a job.
        job = slot_job[slot]
        action = data.draw(st.sampled_from(_RUNNING_ACTIONS))
        if (action == "interrupt" and interrupts >= 3) or (action == "drain" and drains >= 2):
            action = "ok"
        if action == "interrupt":
            interrupts += 1
            scheduler.interrupt(worker, job)
            model.runs(worker).remove(job)
            del slot_job[slot]
            model.state[job] = JobState.PENDING
            model.queue.appendleft(job)
            status[slot] = "idle"
        elif action == "fail_worker":
            fail(worker)
        elif action == "drain":
            drain(worker)  # the job runs on
        else:
            outcome = Outcome(action)
            ended = scheduler.end_attempt(worker, job, outcome)
            model.runs(worker).remove(job)
            del slot_job[slot]
            model.attempts[job] += 1
            model.losses[job] = 0
            if outcome is Outcome.OK:
                model.consecutive[worker] = 0
                expected_state = JobState.OK
            else:
                # Consecutive in the order the attempts end, whichever slot ran them.
                model.consecutive[worker] += 1
                if model.attempts[job] <= retries:
                    expected_state = JobState.PENDING
                    model.queue.append(job)
                    model.failed_on[job] = worker
                elif outcome is Outcome.FAILED:
                    expected_state = JobState.FAILED
                else:
                    expected_state = JobState.TIMEOUT
            model.state[job] = expected_state
            retire = (
                strikes > 0 and model.consecutive[worker] >= strikes and worker not in model.retired
            )
            if retire:
                # Retired at exactly `strikes` consecutive failures, not later.
                assert model.consecutive[worker] == strikes
                model.retired.add(worker)
            assert ended == Ended(
                expected_state,
                requeued=expected_state is JobState.PENDING,
                worker_retired=retire,
                attempts=model.attempts[job],
            )
            status[slot] = "idle"
        wake_waiting()
        _check(scheduler, model)
    else:
        pytest.fail("the simulation did not end")

    # Every worker has been ended.
    assert not scheduler.workers
    assert scheduler.running == 0
    assert sorted(removed) == sorted(names)
    assert JobState.RUNNING not in model.state.values()
    assert sum(scheduler.finished.values()) + len(model.queue) == n_jobs
    unfinished = [j for j, state in model.state.items() if not state.final]
    if unfinished:
        assert scheduler.queue.peek(n_jobs + 1) == list(model.queue)
        assert sorted(model.queue) == sorted(unfinished)
        assert not scheduler.done
        if not model.stopped:
            # Work was left only because the workers that could do it were
            # retired or drained: every worker cheap to keep, and the last one to go.
            gone = model.retired | model.draining
            assert all(w in gone for w in names if keep_idle[w])
            assert removed[-1] in gone
            if all(keep_idle.values()):
                assert gone == set(names)
    else:
        assert scheduler.done
        assert not scheduler.jobs
