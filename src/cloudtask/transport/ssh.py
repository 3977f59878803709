"""Run commands on a worker over one kept-open SSH connection, a channel per command.

Each command runs under a small POSIX sh wrapper on the worker. The wrapper
starts the command in a session of its own (setsid: a process group the
wrapper can kill whole) with stdin from /dev/null, and watches the channel's
stdin: a line names a signal to send to the group, and end of file (the
controller closed it, or the connection is gone) kills the group. So a
timeout, an abort and a lost controller all leave nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import asyncssh

from ..errors import WorkerError
from ..overlay import UNPACK_COMMAND, overlay_tar
from ..usage import Usage
from .agent import AgentLink, start_agent
from .base import DRAIN_LIMIT, KILL_GRACE, AgentStart, RunResult, first_event

_WRAPPER = r"""exec 3<&0 </dev/null
setsid /bin/sh -c "$1" & job=$!
{ while read -r sig <&3; do kill -s "$sig" -- "-$job" 2>/dev/null; done
  kill -s KILL -- "-$job" 2>/dev/null; } &
watch=$!
exec 3<&-
wait "$job"; status=$?
kill -s KILL -- "-$job" 2>/dev/null
kill "$watch" 2>/dev/null
exit "$status"
"""
_READ_SIZE = 65536


def wrapped(command: str, env: Mapping[str, str] | None = None) -> str:
    """The remote command line that runs `command` under the wrapper, whatever
    the login shell; `env` goes through env(1): sshd passes no variables on
    (workers need not AcceptEnv)."""
    assignments = "".join(
        f"{shlex.quote(f'{name}={value}')} " for name, value in (env or {}).items()
    )
    prefix = f"env {assignments}" if assignments else ""
    return f"exec {prefix}/bin/sh -c {shlex.quote(_WRAPPER)} cloudtask-job {shlex.quote(command)}"


class SSHTransport:
    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        lost: Callable[[], str | None],
        reconnect: Callable[[], Awaitable[SSHTransport]] | None = None,
    ) -> None:
        self.conn = conn
        self._lost = lost  # why the connection is gone, or None while it is up
        self._reconnect = reconnect
        self._before_close: list[Callable[[SSHTransport], Awaitable[None]]] = []
        self.agent: AgentLink | None = None  # once started, every command goes through it

    async def start_agent(self) -> AgentStart:
        started = await start_agent(self.conn, self._lost)
        if isinstance(started, str):
            return AgentStart(cpus=1, without_agent=started)
        self.agent = started
        return AgentStart(cpus=started.cpus)

    def keep_lease(self, seconds: float, action: str, key: str) -> bool:
        if self.agent is None:
            return False
        self.agent.keep_lease(seconds, action, key)
        return True

    def watch_spot(self, url: str, interval: float, on_notice: Callable[[], None]) -> bool:
        if self.agent is None:
            return False
        self.agent.on_notice = on_notice
        self.agent.watch_spot(url, interval)
        return True

    def on_close(self, cleanup: Callable[[SSHTransport], Awaitable[None]]) -> None:
        """Run `cleanup` over a live connection to the worker when closing."""
        self._before_close.append(cleanup)

    async def run(
        self,
        command: str,
        *,
        timeout: float | None,
        output: Callable[[bytes], None],
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        if self.agent is not None:
            return await self.agent.run(command, timeout=timeout, output=output, stop=stop, env=env)
        counted = 0

        def count(data: bytes) -> None:
            nonlocal counted
            counted += len(data)
            output(data)

        try:
            process = await self.conn.create_process(
                wrapped(command, env), stderr=asyncssh.STDOUT, encoding=None
            )
        except (asyncssh.Error, OSError) as exc:
            raise WorkerError(self._why(exc)) from exc
        pump = asyncio.ensure_future(_pump(process.stdout, count))
        exited = _exit_reported(process)
        closed = asyncio.ensure_future(process.wait_closed())
        ended = asyncio.ensure_future(_first(exited, closed))
        try:
            reason = await first_event(ended, timeout, stop)
            if reason is not None:
                await self._kill(process, ended)
            await ended
            # The channel closes once nothing holds the job's output open; a
            # process that left the job's group (setsid, a daemon) can hold it
            # for ever: its output is read for a short while only.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(closed), DRAIN_LIMIT)
            held_open = not closed.done()
            if not held_open:
                await closed
                await pump
        except (asyncssh.Error, OSError) as exc:
            raise WorkerError(self._why(exc)) from exc
        finally:
            pump.cancel()
            closed.cancel()
            ended.cancel()
            process.close()
        if self._lost() is not None or (
            process.exit_status is None and process.exit_signal is None
        ):
            raise WorkerError(self._why(None))
        status = process.exit_status
        signal_number = None
        if process.exit_signal is not None:
            status, signal_number = None, _signal_number(process.exit_signal[0])
        return RunResult(
            status,
            signal_number,
            reason == "timeout",
            reason == "stop",
            held_open=held_open,
            usage=Usage(output_bytes=counted),
        )

    async def _kill(self, process: Any, ended: asyncio.Future[Any]) -> None:
        """SIGTERM the command's group, then end the channel's input: the wrapper kills it."""
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            process.stdin.write(b"TERM\n")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ended), KILL_GRACE)
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            process.stdin.write_eof()

    async def put_overlay(self, directory: Path) -> None:
        """Unpack the overlay directory onto the worker's root file system."""
        try:
            process = await self.conn.create_process(
                UNPACK_COMMAND, stderr=asyncssh.STDOUT, encoding=None
            )
            process.stdin.write(overlay_tar(directory))
            process.stdin.write_eof()
            said = await process.stdout.read()
            await process.wait_closed()
        except (asyncssh.Error, OSError) as exc:
            raise WorkerError(self._why(exc)) from exc
        if process.exit_status != 0:
            lines = said.decode(errors="replace").strip().splitlines()
            raise WorkerError(
                f"--overlay: tar exit {process.exit_status}" + (f": {lines[-1]}" if lines else "")
            )

    def _why(self, exc: BaseException | None) -> str:
        return self._lost() or (str(exc) if exc else "the connection closed")

    async def close(self) -> None:
        """Run the cleanups, then disconnect.

        When the connection is gone, the cleanups run over a new one. If they
        cannot run, WorkerError says why, and they stay for another close().
        """
        if self.agent is not None:
            agent, self.agent = self.agent, None
            await agent.close()
        try:
            if self._before_close:
                over = self
                if self._lost() is not None:
                    if self._reconnect is None:
                        raise WorkerError(f"cannot clean up: {self._lost()}")
                    over = await self._reconnect()
                try:
                    for cleanup in reversed(self._before_close):
                        await cleanup(over)
                finally:
                    if over is not self:
                        await over.disconnect()
                self._before_close.clear()
        finally:
            await self.disconnect()

    @property
    def needs_cleanup(self) -> bool:
        return bool(self._before_close)

    async def disconnect(self) -> None:
        self.conn.close()
        with contextlib.suppress(asyncssh.Error, OSError):
            await self.conn.wait_closed()


def _exit_reported(process: Any) -> asyncio.Future[None]:
    """Done when the worker reports how the wrapper ended (exit status or
    signal), which can come long before the channel closes."""
    reported: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def report(*_: object) -> None:
        if not reported.done():
            reported.set_result(None)

    # asyncssh's session hooks for these are no-ops meant to be overridden;
    # this process object is ours alone, so its own hooks are set here.
    process.exit_status_received = report
    process.exit_signal_received = report
    if process.exit_status is not None or process.exit_signal is not None:
        report()  # reported while the process was being set up
    return reported


async def _first(*waits: asyncio.Future[Any]) -> None:
    """Return once any of these is done (they are left running)."""
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)


async def _pump(stream: Any, output: Callable[[bytes], None]) -> None:
    while True:
        data = await stream.read(_READ_SIZE)
        if not data:
            return
        output(data)


def _signal_number(name: str) -> int | None:
    import signal

    with contextlib.suppress(KeyError):
        return int(signal.Signals["SIG" + name])
    return None
