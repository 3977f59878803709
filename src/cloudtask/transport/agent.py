"""The controller's end of a worker agent: many commands over one channel.

The agent (agent_program.py) is sent over the worker's kept-open connection
and runs from one channel; each command is a RUN frame, and its output and
end come back as frames carrying its number. So a job costs the worker one
fork and exec, not an sshd session, a login shell and a wrapper, and several
jobs run at once on one worker. The agent also reports each job's resource
use, keeps the lease of a launched worker and watches for spot notices.

A worker without python3 (or too old a one) has no agent: `start_agent`
returns why, and its transport runs one channel per command as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from ..errors import WorkerError
from ..usage import Usage
from . import agent_program as program
from .base import KILL_GRACE, RunResult, first_event

# The agent's source is read by python3 from the channel, then the same
# channel carries the frames: nothing is written to the worker's disk.
_BOOT = (
    "import sys; source = sys.stdin.buffer.read(int(sys.argv[1])); "
    "exec(compile(source, 'cloudtask-agent', 'exec'))"
)
_NO_PYTHON = 97  # the exit status that says the worker has no python3
START_LIMIT = 30.0  # seconds for the agent to say hello before the worker runs without it


def _source() -> bytes:
    return Path(program.__file__).read_bytes()


def start_command(size: int) -> str:
    """The remote command that starts the agent, whatever the login shell."""
    script = (
        f"command -v python3 >/dev/null 2>&1 || exit {_NO_PYTHON}; "
        f"exec python3 -c {shlex.quote(_BOOT)} {size}"
    )
    return f"exec /bin/sh -c {shlex.quote(script)}"


@dataclass
class _Command:
    """A command the agent runs for us, as its frames come back."""

    output: Callable[[bytes], None]
    ended: asyncio.Future[dict[str, Any]]
    output_bytes: int = 0


@dataclass
class AgentLink:
    """One agent on one worker, over one channel of its connection."""

    process: Any  # the asyncssh process of the agent's channel
    cpus: int
    lost: Callable[[], str | None]  # why the connection is gone, or None
    # A spot interruption notice, once the agent has seen one; then on_notice runs.
    notice: bytes | None = None
    on_notice: Callable[[], None] | None = None
    on_problem: Callable[[str], None] | None = None
    _commands: dict[int, _Command] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _reader: asyncio.Task[None] | None = None
    _ended: str | None = None  # why the agent's channel is gone

    def listen(self) -> None:
        self._reader = asyncio.ensure_future(self._read_frames())

    async def run(
        self,
        command: str,
        *,
        timeout: float | None,
        output: Callable[[bytes], None],
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        number = next(self._numbers)
        ended: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        state = _Command(output, ended)
        self._commands[number] = state
        request = {"command": command, "env": dict(env or {})}
        try:
            self._send(program.RUN, number, json.dumps(request).encode("utf-8", "surrogatepass"))
            reason = await first_event(ended, timeout, stop)
            if reason is not None:
                self._send(program.SIGNAL, number, b"TERM")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ended), KILL_GRACE)
                if not ended.done():
                    self._send(program.SIGNAL, number, b"KILL")
            report = await ended
        except asyncio.CancelledError:
            with contextlib.suppress(WorkerError):
                self._send(program.SIGNAL, number, b"KILL")
            raise
        finally:
            self._commands.pop(number, None)
            if ended.done() and not ended.cancelled():
                ended.exception()  # seen, even when this run was cancelled first
        usage = Usage(
            report.get("user_cpu"),
            report.get("system_cpu"),
            report.get("max_rss"),
            state.output_bytes,
        )
        return RunResult(
            report.get("status"),
            report.get("signal"),
            reason == "timeout",
            reason == "stop",
            held_open=bool(report.get("held_open")),
            usage=usage,
        )

    def keep_lease(self, seconds: float, action: str, key: str) -> None:
        """Set (or renew) the worker's lease: `action` runs there unless renewed in time."""
        request = {"seconds": seconds, "action": action, "key": key}
        self._send(program.LEASE, 0, json.dumps(request).encode())

    def watch_spot(self, url: str, interval: float) -> None:
        self._send(program.SPOT, 0, json.dumps({"url": url, "interval": interval}).encode())

    async def close(self) -> None:
        """End the agent's input (it kills what still runs and exits) and wait for it."""
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            self.process.stdin.write_eof()
        with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
            await asyncio.wait_for(self.process.wait_closed(), KILL_GRACE * 5)
        self.process.close()
        if self._reader is not None:
            self._reader.cancel()

    def _send(self, kind: bytes, number: int, payload: bytes) -> None:
        if self._ended is not None:
            raise WorkerError(self._ended)
        try:
            self.process.stdin.write(program.HEADER.pack(kind, number, len(payload)) + payload)
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            raise WorkerError(self.lost() or f"the agent's channel closed: {exc}") from exc

    async def _read_frames(self) -> None:
        stdout = self.process.stdout
        try:
            while True:
                kind, number, length = program.HEADER.unpack(
                    await stdout.readexactly(program.HEADER.size)
                )
                payload = await stdout.readexactly(length) if length else b""
                self._dispatch(kind, number, payload)
        except (asyncio.IncompleteReadError, asyncssh.Error, OSError) as exc:
            why = self.lost() or _ended_why(exc, self.process)
        except Exception as exc:  # a frame we cannot read: the agent is not ours to trust
            why = f"the agent sent what it should not: {type(exc).__name__}: {exc}"
        self._ended = why
        for state in self._commands.values():
            if not state.ended.done():
                state.ended.set_exception(WorkerError(why))

    def _dispatch(self, kind: bytes, number: int, payload: bytes) -> None:
        if kind in (program.STDOUT, program.STDERR):
            state = self._commands.get(number)
            if state is not None:
                state.output_bytes += len(payload)
                state.output(payload)
        elif kind == program.EXIT:
            state = self._commands.get(number)
            if state is not None and not state.ended.done():
                state.ended.set_result(json.loads(payload))
        elif kind == program.NOTICE:
            self.notice = payload
            if self.on_notice is not None:
                self.on_notice()
        elif kind == program.PROBLEM and self.on_problem is not None:
            self.on_problem(payload.decode(errors="replace"))


def _ended_why(exc: BaseException, process: Any) -> str:
    status = getattr(process, "exit_status", None)
    if status is not None:
        return f"the agent exited (status {status})"
    return f"the agent's channel closed ({type(exc).__name__})"


async def start_agent(
    conn: asyncssh.SSHClientConnection, lost: Callable[[], str | None]
) -> AgentLink | str:
    """Start the agent on the worker: its link, or why the worker has none
    (no python3, too old a one, or it did not answer in START_LIMIT)."""
    source = _source()
    try:
        process = await conn.create_process(start_command(len(source)), encoding=None)
    except (asyncssh.Error, OSError) as exc:
        raise WorkerError(lost() or str(exc)) from exc
    stderr = asyncio.ensure_future(process.stderr.read(65536))
    try:
        process.stdin.write(source)
        header = await asyncio.wait_for(
            process.stdout.readexactly(program.HEADER.size), START_LIMIT
        )
        kind, _, length = program.HEADER.unpack(header)
        hello = json.loads(await process.stdout.readexactly(length))
        if kind != program.HELLO:
            raise ValueError(f"its first frame is {kind!r}, not hello")
    except (asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
        why = await _why_no_agent(process, stderr, exc)
        if lost() is not None:
            raise WorkerError(lost() or why) from exc
        return why
    except (asyncssh.Error, OSError) as exc:
        process.close()
        raise WorkerError(lost() or str(exc)) from exc
    except BaseException:  # cancelled (an abort): the channel goes with it
        process.close()
        raise
    finally:
        _let_go(stderr)
    link = AgentLink(process, int(hello.get("cpus") or 1), lost)
    link.listen()
    return link


def _let_go(task: asyncio.Future[Any]) -> None:
    """Stop a task we no longer wait for; an error it ended with is seen (asyncio
    would otherwise print it, traceback and all, when the task is collected)."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


async def _why_no_agent(process: Any, stderr: asyncio.Future[bytes], exc: Exception) -> str:
    """Why the agent did not start, in a few words, from what its channel said."""
    process.close()
    with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
        await asyncio.wait_for(process.wait_closed(), 5)
    said = b""
    if stderr.done() and not stderr.cancelled() and stderr.exception() is None:
        said = stderr.result()
    if process.exit_status == _NO_PYTHON:
        return "no python3"
    lines = said.decode(errors="replace").strip().splitlines()
    if lines:
        return f"python3 could not run it: {lines[-1][:200]}"
    if isinstance(exc, TimeoutError):
        return f"it did not answer in {START_LIMIT:g} s"
    return f"it ended at start (exit {process.exit_status})"
