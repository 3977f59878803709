"""The Python API, in this process: cloudtask.run, resume and retry on a
scripted provider (whose transport answers each command from a script, as
httpx's MockTransport answers requests), and once on the real local one.

Outcomes are read back from the session itself: its store (through a resume
that has nothing to run) and its directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import cloudtask
from cloudtask.providers.base import Instance, Provider
from cloudtask.transport.base import AgentStart, RunResult, first_event

# A script answers one command: its environment in, its output and exit status out.
Script = Callable[[str, Mapping[str, str]], Awaitable[tuple[bytes, int]]]


@dataclass
class Ran:
    worker: str
    command: str
    env: dict[str, str]


@dataclass
class ScriptedTransport:
    worker: str
    script: Script
    ran: list[Ran]

    async def run(
        self,
        command: str,
        *,
        timeout: float | None,
        output: Callable[[bytes], None],
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        self.ran.append(Ran(self.worker, command, dict(env or {})))
        answer = asyncio.ensure_future(self.script(command, env or {}))
        why = await first_event(answer, timeout, stop)
        if why is not None:
            answer.cancel()
            return RunResult(None, timed_out=why == "timeout", stopped=why == "stop")
        data, status = answer.result()
        output(data)
        return RunResult(status)

    async def start_agent(self) -> AgentStart:
        return AgentStart(cpus=1)  # the script is its own agent

    def keep_lease(self, seconds: float, action: str, key: str) -> bool:
        return False

    def watch_spot(self, url: str, interval: float, on_notice: Callable[[], None]) -> bool:
        return False

    async def put_overlay(self, directory: Path) -> None:
        raise AssertionError("no overlay was asked for")

    async def close(self) -> None:
        return None


@dataclass(eq=False)  # providers are told apart by identity
class ScriptedProvider(Provider):
    script: Script
    name: str = "scripted"
    ran: list[Ran] = field(default_factory=list)
    launched: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)

    async def launch(self) -> Instance:
        name = f"scripted{len(self.launched) + 1}"
        self.launched.append(name)
        return Instance(name, name, "nowhere")

    async def connect(self, instance: Instance) -> ScriptedTransport:  # type: ignore[override]
        return ScriptedTransport(instance.name, self.script, self.ran)

    async def destroy(self, instance: Instance) -> bool:
        self.destroyed.append(instance.name)
        return True


def echoing(status: int = 0) -> Script:
    async def script(command: str, env: Mapping[str, str]) -> tuple[bytes, int]:
        return f"{env.get('CLOUDTASK_JOB')}: {command}\n".encode(), status

    return script


def stored_counts(session: int, sessions: Path) -> Mapping[str, int]:
    """The session's job counts as its store has them (a resume with nothing to run)."""
    again = cloudtask.resume(session, sessions=sessions)
    assert again.state == "finished"
    return again.counts


def test_run_gives_a_frozen_result_and_runs_every_job_once(tmp_path: Path) -> None:
    provider = ScriptedProvider(echoing())
    result = cloudtask.run(
        "gzip -9", ["a.log", "b c.log", "'d e.log'"], provider=provider, split=2, sessions=tmp_path
    )
    assert (result.state, result.exit_status, result.ok) == ("finished", 0, True)
    assert result.counts["ok"] == 3 and sum(result.counts.values()) == 3
    assert result.path == tmp_path / str(result.id) and (result.path / "log").is_file()
    with pytest.raises(AttributeError):
        result.state = "aborted"  # type: ignore[misc]
    jobs = sorted((ran.env["CLOUDTASK_JOB"], ran.command) for ran in provider.ran)
    assert jobs == [("1", "gzip -9 a.log"), ("2", "gzip -9 b c.log"), ("3", "gzip -9 'd e.log'")]
    assert {ran.env["CLOUDTASK_SESSION"] for ran in provider.ran} == {str(result.id)}
    assert len(provider.launched) == 2 and sorted(provider.destroyed) == sorted(provider.launched)
    assert stored_counts(result.id, tmp_path)["ok"] == 3


def test_nothing_is_printed_unless_asked(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cloudtask.run("true", ["x"], provider=ScriptedProvider(echoing()), sessions=tmp_path)
    assert capfd.readouterr() == ("", "")
    result = cloudtask.run(
        "true", ["y"], provider=ScriptedProvider(echoing()), sessions=tmp_path, echo=True
    )
    out = capfd.readouterr().out
    last = out.splitlines()[-1]
    assert last.startswith(f"session {result.id} (") and last.endswith(" 1 OK")


def test_a_retry_runs_the_failed_jobs_again_and_only_them(tmp_path: Path) -> None:
    failing = ScriptedProvider(echoing(status=3))
    first = cloudtask.run("check", ["1", "2"], provider=failing, sessions=tmp_path, split=1)
    assert (first.exit_status, first.counts["failed"]) == (1, 2)
    fixed = ScriptedProvider(echoing())
    second = cloudtask.retry(first.id, provider=fixed, sessions=tmp_path)
    assert (second.id, second.exit_status, second.counts["ok"]) == (first.id, 0, 2)
    assert sorted(ran.command for ran in fixed.ran) == ["check 1", "check 2"]
    assert [ran.env["CLOUDTASK_ATTEMPT"] for ran in fixed.ran] == ["2", "2"]


def test_an_interrupt_aborts_the_run_and_a_resume_finishes_it(tmp_path: Path) -> None:
    started = threading.Event()

    async def hanging(command: str, env: Mapping[str, str]) -> tuple[bytes, int]:
        if command.endswith(" 1"):
            return b"", 0
        started.set()
        await asyncio.sleep(60)  # until the abort stops it
        return b"", 0

    def interrupt() -> None:
        if started.wait(20):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    provider = ScriptedProvider(hanging)
    result = cloudtask.run("job", ["1", "2", "3"], provider=provider, sessions=tmp_path, split=1)
    assert started.is_set()
    assert (result.state, result.exit_status) == ("aborted", 1)
    assert (result.counts["ok"], result.counts["pending"]) == (1, 2)
    assert provider.destroyed == provider.launched  # the worker was let go all the same

    rest = ScriptedProvider(echoing())
    resumed = cloudtask.resume(result.id, provider=rest, sessions=tmp_path)
    assert (resumed.state, resumed.counts["ok"]) == ("finished", 3)
    assert sorted(ran.command for ran in rest.ran) == ["job 2", "job 3"]


def test_the_local_provider_runs_jobs_in_process_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = cloudtask.run(
        ["sh", "-c", 'echo "$1" > "$0/$CLOUDTASK_JOB"', str(out)],
        ["one", "two"],
        lines=True,
        sessions=tmp_path / "sessions",
    )
    assert result.ok
    assert {path.name: path.read_text() for path in out.iterdir()} == {"1": "one\n", "2": "two\n"}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"splt": 3}, "splt=: unknown option (did you mean split?)"),
        ({"split": True}, "split=: expected a value, got True"),
        ({"split": "many"}, "--split"),
        ({"force": "yes"}, "force=: expected True or False, got 'yes'"),
        ({"resume": 1}, "resume=: not an option of this function: use cloudtask.resume()"),
        ({"null": True, "lines": True}, "--null"),
    ],
)
def test_a_bad_option_raises_a_usage_error_and_makes_no_session(
    tmp_path: Path, options: dict[str, object], error: str
) -> None:
    with pytest.raises(cloudtask.UsageError, match=re.escape(error)):
        cloudtask.run("true", ["x"], sessions=tmp_path, **options)
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_the_ordinary_option_values_are_taken(tmp_path: Path) -> None:
    provider = ScriptedProvider(echoing())
    result = cloudtask.run(
        "run",
        ["x"],
        provider=provider,
        sessions=tmp_path,  # a Path
        split=1,  # an int
        timeout="15m",
        retries=0,
        force=True,
        halt="soon,fail=1",
        hourly_price=0.25,  # a float
    )
    assert result.ok


def test_bad_jobs_raise_with_the_line_and_leave_no_session(tmp_path: Path) -> None:
    with pytest.raises(cloudtask.InputError, match="line 2"):
        cloudtask.run(
            "echo", ["ok", "it's"], provider=ScriptedProvider(echoing()), sessions=tmp_path
        )
    with pytest.raises(cloudtask.UsageError, match="not one string"):
        cloudtask.run("echo", "a\nb\n", sessions=tmp_path)
    with pytest.raises(cloudtask.UsageError, match="no jobs"):
        cloudtask.run("echo", [], sessions=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_resume_of_no_such_session_is_a_session_error(tmp_path: Path) -> None:
    (tmp_path / "sessions").mkdir()
    with pytest.raises(cloudtask.SessionError, match="7"):
        cloudtask.resume(7, sessions=tmp_path / "sessions")


class Gzip(cloudtask.Task):
    COMMAND = "gzip -9"
    SPLIT = 2
    RETRIES = 1


def test_a_template_runs_in_process_with_its_values_under_the_options(tmp_path: Path) -> None:
    provider = ScriptedProvider(echoing())
    result = Gzip.run(["a", "b", "c"], provider=provider, sessions=tmp_path)
    assert result.ok and len(provider.launched) == 2  # the template's SPLIT
    assert sorted(ran.command for ran in provider.ran) == ["gzip -9 a", "gzip -9 b", "gzip -9 c"]

    one = ScriptedProvider(echoing())
    assert Gzip.run(["d", "e"], provider=one, sessions=tmp_path, split=1).ok
    assert len(one.launched) == 1  # the option given wins over the template


def test_a_template_without_a_command_cannot_run(tmp_path: Path) -> None:
    class Nothing(cloudtask.Task):
        SPLIT = 2

    with pytest.raises(cloudtask.UsageError, match=r"Nothing.run: the template has no COMMAND"):
        Nothing.run(["x"], sessions=tmp_path)


def test_a_provider_object_calls_no_cloud_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Hub key in the environment would make the Hub the provider: its URL is
    # a listener here that counts who connects.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    connections = []

    def count() -> None:
        with contextlib.suppress(OSError):
            while True:
                with contextlib.suppress(TimeoutError):
                    connections.append(listener.accept()[0])

    threading.Thread(target=count, daemon=True).start()
    monkeypatch.setenv("CLOUDTASK_HUB_APIKEY", "not-a-key")
    monkeypatch.setenv("CLOUDTASK_HUB_URL", f"http://127.0.0.1:{listener.getsockname()[1]}/")
    try:
        provider = ScriptedProvider(echoing())
        result = cloudtask.run("x", ["1"], provider=provider, sessions=tmp_path, split=1)
        assert result.ok and provider.ran
        assert connections == []
    finally:
        listener.close()
        for connection in connections:
            connection.close()


def test_a_session_runs_from_another_thread_without_taking_signals(tmp_path: Path) -> None:
    results: list[object] = []

    def run() -> None:
        try:
            provider = ScriptedProvider(echoing())
            results.append(cloudtask.run("x", ["1", "2"], provider=provider, sessions=tmp_path))
        except BaseException as error:  # the test's failure, not the thread's
            results.append(error)

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    (result,) = results
    assert isinstance(result, cloudtask.SessionResult) and result.ok, result
    assert signal.getsignal(signal.SIGINT) is before
