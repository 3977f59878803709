"""A spot interruption notice, end to end in this process: the real agent
(over pipes, tests/support/agent_pipe.py) watches a metadata server on
loopback; the worker that gets the notice takes no new job, and when its
instance goes, its running jobs go back to the queue without using a retry.

The provider is the one stand-in: it "launches" an agent on this machine
where a cloud would launch a spot instance, and says where its metadata is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.support.agent_pipe import start_link
from tests.support.imds import NOTICE, Metadata, metadata_service

import cloudtask
from cloudtask.providers.base import Instance, Provider
from cloudtask.store.reader import StoreReader
from cloudtask.transport.agent import AgentLink
from cloudtask.transport.base import AgentStart, RunResult


@pytest.fixture
def metadata() -> Iterator[Metadata]:
    with metadata_service() as service:
        yield service


@dataclass
class AgentTransport:
    link: AgentLink
    spot: bool  # a spot instance (the others are on-demand: they get no notice)

    async def run(
        self,
        command: str,
        *,
        timeout: float | None,
        output: Callable[[bytes], None],
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        return await self.link.run(command, timeout=timeout, output=output, stop=stop, env=env)

    async def start_agent(self) -> AgentStart:
        return AgentStart(cpus=self.link.cpus)

    def keep_lease(self, seconds: float, action: str, key: str) -> bool:
        return False

    def watch_spot(self, url: str, interval: float, on_notice: Callable[[], None]) -> bool:
        if not self.spot:
            return True
        self.link.on_notice = on_notice
        self.link.watch_spot(url, interval)
        return True

    async def put_overlay(self, directory: Path) -> None:
        raise AssertionError("no overlay was asked for")

    async def close(self) -> None:
        await self.link.close()


@dataclass(eq=False)
class SpotAgents(Provider):
    """Agents on this machine; the first is a spot instance, which watches
    the metadata server."""

    metadata: Metadata
    name: str = "spot"
    links: dict[str, AgentLink] = field(default_factory=dict)
    launches: int = 0

    async def launch(self) -> Instance:
        self.launches += 1
        name = f"spot{self.launches}"
        self.links[name] = await start_link()
        return Instance(name, name, "here")

    async def connect(self, instance: Instance) -> AgentTransport:  # type: ignore[override]
        return AgentTransport(self.links[instance.name], spot=instance.name == "spot1")

    async def destroy(self, instance: Instance) -> bool:
        return True

    def spot_metadata(self) -> str | None:
        return self.metadata.url


def test_a_spot_notice_drains_the_worker_and_its_jobs_survive_it(
    metadata: Metadata, tmp_path: Path
) -> None:
    """Worker spot1 gets the notice while it runs two jobs: one ends after
    the notice, and spot1 starts nothing in its place; then its "instance"
    goes (the agent is killed) and its other job runs again on spot2, though
    no retry is allowed."""
    provider = SpotAgents(metadata)
    marks, noticed = tmp_path / "marks", tmp_path / "noticed"
    marks.mkdir()
    command = f"""touch {marks}/"$CLOUDTASK_JOB-$CLOUDTASK_WORKER"
if [ "$CLOUDTASK_WORKER" = spot1 ]; then
    if mkdir {marks}/first 2>/dev/null; then
        while [ ! -e {noticed} ]; do sleep 0.05; done
    else
        sleep 30
    fi
else
    n=0
    while [ $(ls {marks} | grep -c -- -spot1) -lt 2 ] && [ $n -lt 400 ]; do
        sleep 0.05; n=$((n+1))
    done
fi
true"""

    def the_instance_goes() -> None:
        deadline = time.monotonic() + 30
        while len(list(marks.glob("*-spot1"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        metadata.notice = NOTICE
        time.sleep(1.0)  # the agent looks every 0.2 s here: the notice is in
        noticed.write_text(repr(time.time()))
        time.sleep(1.0)  # spot1's first job ends; its slot takes nothing new
        process = provider.links["spot1"].process.process  # type: ignore[attr-defined]
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)

    from cloudtask import worker

    spot_poll, worker.SPOT_POLL = worker.SPOT_POLL, 0.2
    goes = threading.Thread(target=the_instance_goes)
    goes.start()
    try:
        result = cloudtask.run(
            command,
            [str(n) for n in range(1, 9)],
            provider=provider,
            split=2,
            slots=2,
            retries=0,
            sessions=tmp_path / "sessions",
        )
    finally:
        worker.SPOT_POLL = spot_poll
        goes.join()
        kill_groups_running(str(marks))
    assert result.counts["ok"] == 8, result
    noticed_at = float(noticed.read_text())
    with StoreReader.open(result.path) as store:
        attempts = store.attempts()
    on_spot1 = sorted((a for a in attempts if a.worker == "spot1"), key=lambda a: a.started)
    assert [a.outcome for a in on_spot1] == ["ok", "lost"] or [a.outcome for a in on_spot1] == [
        "lost",
        "ok",
    ], on_spot1
    assert all(a.started < noticed_at for a in on_spot1)  # nothing started after the notice
    (lost,) = (a.job for a in on_spot1 if a.outcome == "lost")
    assert [a.outcome for a in attempts if a.job == lost and a.worker == "spot2"] == ["ok"]
    log = (result.path / "log").read_text()
    assert "spot1: spot interruption notice" in log


def kill_groups_running(needle: str) -> None:
    """Kill the process groups of the jobs that mention `needle`: the killed
    agent's job, which a real instance's end would take with it."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and needle.encode() in (entry / "cmdline").read_bytes():
                os.killpg(os.getpgid(int(entry.name)), signal.SIGKILL)
