"""The local transport runs real processes: these tests look at the process table."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.support.processes import live_processes_with

from cloudtask.transport.local import LocalTransport


def run(command: str, timeout: float | None = 10, stop_after: float | None = None):
    chunks: list[bytes] = []

    async def go():
        stop = asyncio.Event()
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, stop.set)
        return await LocalTransport().run(command, timeout=timeout, output=chunks.append, stop=stop)

    result = asyncio.run(go())
    return result, b"".join(chunks)


def marker() -> str:
    """A sleep duration unique to this test, to find its processes by command line."""
    return f"1000.{uuid.uuid4().int % 10**9}"


def test_exit_status_and_output_are_reported() -> None:
    result, output = run("echo out; echo err >&2; exit 3")
    assert result.exit_status == 3
    assert not result.ok and not result.timed_out
    assert output == b"out\nerr\n"


def test_stdin_is_empty_so_a_reading_job_ends() -> None:
    result, output = run("cat; read line || echo no-input", timeout=5)
    assert result.ok
    assert output == b"no-input\n"


def test_timeout_kills_the_job_and_its_background_children() -> None:
    sleep = marker()
    started = time.monotonic()
    result, _ = run(f"sleep {sleep} & sleep {sleep} & sleep {sleep}", timeout=0.5)
    assert result.timed_out
    assert time.monotonic() - started < 5
    assert live_processes_with(f"sleep {sleep}") == []


def test_a_job_that_ignores_sigterm_is_killed_anyway() -> None:
    sleep = marker()
    result, _ = run(f"trap '' TERM; sleep {sleep}", timeout=0.3)
    assert result.timed_out
    assert live_processes_with(f"sleep {sleep}") == []


def test_children_left_behind_by_a_finished_job_are_killed() -> None:
    sleep = marker()
    result, output = run(f"sleep {sleep} & echo started")
    assert result.ok
    assert output == b"started\n"
    assert live_processes_with(f"sleep {sleep}") == []


def test_stop_kills_the_job_and_reports_it_stopped() -> None:
    sleep = marker()
    result, _ = run(f"sleep {sleep} & sleep {sleep}", stop_after=0.3)
    assert result.stopped and not result.timed_out and not result.ok
    assert live_processes_with(f"sleep {sleep}") == []


def test_output_after_exit_is_not_lost() -> None:
    result, output = run("seq 1 20000")
    assert result.ok
    assert output.splitlines()[-1] == b"20000"
    assert len(output.splitlines()) == 20000


def test_killed_by_a_signal_is_not_an_exit_status() -> None:
    result, _ = run("kill -KILL $$")
    assert result.exit_status is None
    assert result.signal == 9
    assert not result.ok
