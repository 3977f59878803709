"""The worker agent, run here over pipes as it runs over an SSH channel.

The agent program is started exactly as on a worker (python3 -c reading its
source from its input) and driven by the controller's AgentLink; only the
channel is a pair of pipes. The SSH side is tested in
tests/integration/test_agent_ssh.py.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from tests.support.agent_pipe import start_link
from tests.support.imds import NOTICE, metadata_service
from tests.support.wait import wait_until

from cloudtask.transport import agent_program
from cloudtask.transport.agent import AgentLink


def on_agent(body: Callable[[AgentLink], Awaitable[None]]) -> None:
    """Run `body` with a fresh agent, closed after it."""

    async def main() -> None:
        link = await start_link()
        try:
            await body(link)
        finally:
            await link.close()

    asyncio.run(main())


def test_the_agent_is_python_3_6() -> None:
    """It runs on the worker's python3, which may be old: no newer syntax."""
    source = Path(agent_program.__file__).read_text()
    ast.parse(source, feature_version=(3, 6))


def test_hello_names_the_cpus() -> None:

    async def body(link: AgentLink) -> None:
        assert link.cpus == len(os.sched_getaffinity(0))

    on_agent(body)


def test_output_every_byte_value_and_the_exit(tmp_path: Path) -> None:

    async def body(link: AgentLink) -> None:
        data = bytes(range(256)) * 1000 + b"no newline at the end"
        (tmp_path / "data").write_bytes(data)
        out: list[bytes] = []
        result = await link.run(f"cat {tmp_path / 'data'}; exit 7", timeout=None, output=out.append)
        assert b"".join(out) == data
        assert result.exit_status == 7 and result.signal is None and not result.ok
        assert result.usage is not None and result.usage.output_bytes == len(data)

    on_agent(body)


def test_stdout_and_stderr_both_arrive() -> None:

    async def body(link: AgentLink) -> None:
        out: list[bytes] = []
        result = await link.run("echo out; echo err >&2", timeout=None, output=out.append)
        assert sorted(b"".join(out).split()) == [b"err", b"out"] and result.ok

    on_agent(body)


def test_resource_use_of_a_busy_job() -> None:

    async def body(link: AgentLink) -> None:
        busy = (
            "python3 -c 'import time\nx = bytearray(80 << 20)\nt = time.process_time()\n"
            "while time.process_time() - t < 0.3: pass'"
        )
        result = await link.run(busy, timeout=None, output=lambda data: None)
        assert result.ok and result.usage is not None
        assert result.usage.cpu is not None and result.usage.cpu >= 0.25
        assert result.usage.max_rss is not None and result.usage.max_rss >= 80 << 20

    on_agent(body)


def test_jobs_run_at_once_on_one_agent(tmp_path: Path) -> None:
    """Four jobs that each wait for all four to have started: they only end
    if the agent runs them at the same time."""

    async def body(link: AgentLink) -> None:
        script = (
            f"touch {tmp_path}/started.$N; "
            f"while [ $(ls {tmp_path} | grep -c started) -lt 4 ]; do sleep 0.05; done; echo $N"
        )
        runs = [
            link.run(script, timeout=20, output=lambda data: None, env={"N": str(n)})
            for n in range(4)
        ]
        results = await asyncio.gather(*runs)
        assert [result.ok for result in results] == [True] * 4

    on_agent(body)


def test_a_timeout_kills_the_whole_group(tmp_path: Path) -> None:

    async def body(link: AgentLink) -> None:
        marker = f"agent-test-{os.getpid()}-{time.monotonic_ns()}"
        command = f"trap '' TERM; sh -c 'sleep 300; : {marker}' & sleep 300"
        result = await link.run(command, timeout=0.5, output=lambda data: None)
        assert result.timed_out and result.signal == 9
        assert not _processes_with(marker)

    on_agent(body)


def test_a_stop_is_a_stop() -> None:

    async def body(link: AgentLink) -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        result = await link.run("sleep 30", timeout=None, output=lambda data: None, stop=stop)
        assert result.stopped and not result.timed_out

    on_agent(body)


def test_output_held_open_by_an_escaped_process_is_not_waited_for() -> None:

    async def body(link: AgentLink) -> None:
        marker = f"agent-held-{os.getpid()}-{time.monotonic_ns()}"
        command = f"setsid sh -c 'sleep 30; : {marker}' & sleep 0.5; echo started"
        out: list[bytes] = []
        started = time.monotonic()
        result = await link.run(command, timeout=None, output=out.append)
        assert result.ok and result.held_open and b"started" in b"".join(out)
        assert time.monotonic() - started < 10
        for pid in _processes_with(marker):
            os.kill(pid, 9)

    on_agent(body)


def test_the_end_of_its_input_kills_every_job() -> None:

    async def body() -> None:
        link = await start_link()
        marker = f"agent-eof-{os.getpid()}-{time.monotonic_ns()}"
        task = asyncio.ensure_future(
            link.run(f"sleep 300; : {marker}", timeout=None, output=lambda data: None)
        )
        await asyncio.sleep(0.3)
        assert _processes_with(marker)
        await link.close()
        task.cancel()
        wait_until(lambda: not _processes_with(marker), 5, "the job killed")

    asyncio.run(body())


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# -- the lease -------------------------------------------------------------------


@pytest.fixture
def lease_key() -> Iterator[str]:
    key = f"test-{os.getpid()}-{time.monotonic_ns()}"
    yield key
    directory = Path("/tmp") / f"{agent_program.LEASE_PREFIX}{key}"
    keeper = directory / "keeper"
    if keeper.exists():
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(keeper.read_text()), 9)
    if directory.exists():
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


def test_a_lease_not_renewed_runs_its_action_after_the_agent_is_gone(
    lease_key: str, tmp_path: Path
) -> None:

    async def body() -> None:
        fired = tmp_path / "fired"
        link = await start_link()
        link.keep_lease(1.5, f"touch {fired}", lease_key)
        await asyncio.sleep(0.3)
        await link.close()  # the controller is gone: nobody renews it
        assert not fired.exists()
        wait_until(fired.exists, 10, "the lease's action to run")
        assert not (Path("/tmp") / f"{agent_program.LEASE_PREFIX}{lease_key}").exists()

    asyncio.run(body())


def test_a_renewed_lease_does_not_fire_and_a_cancel_ends_its_keeper(
    lease_key: str, tmp_path: Path
) -> None:

    async def body(link: AgentLink) -> None:
        fired = tmp_path / "fired"
        for _ in range(7):  # 1.75 s of renewals of a 1 s lease
            link.keep_lease(1.0, f"touch {fired}", lease_key)
            await asyncio.sleep(0.25)
        assert not fired.exists()
        directory = Path("/tmp") / f"{agent_program.LEASE_PREFIX}{lease_key}"
        keeper = int((directory / "keeper").read_text())
        link.keep_lease(0, f"touch {fired}", lease_key)
        wait_until(lambda: not directory.exists(), 5, "the lease cancelled")
        wait_until(lambda: not Path(f"/proc/{keeper}").exists(), 5, "the keeper gone")
        await asyncio.sleep(1.2)
        assert not fired.exists()

    on_agent(body)


# -- spot notices ----------------------------------------------------------------


def test_a_spot_notice_reaches_the_controller() -> None:
    async def body(link: AgentLink) -> None:
        noticed = asyncio.Event()
        link.on_notice = noticed.set
        with metadata_service() as metadata:
            link.watch_spot(metadata.url, 0.1)
            await asyncio.sleep(0.5)
            assert not noticed.is_set() and metadata.tokens >= 1 and metadata.refused == 0
            metadata.notice = NOTICE
            await asyncio.wait_for(noticed.wait(), 5)
            assert link.notice == NOTICE

    on_agent(body)
