"""Run commands as local processes: the transport of the local provider."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..errors import WorkerError
from ..usage import Usage
from .base import DRAIN_LIMIT, KILL_GRACE, AgentStart, RunResult, first_event

# Every local job of one controller run carries RUN_TAG=<tag> in its
# environment, so the next run of the session finds what a killed controller
# left running (its jobs are in sessions of their own: nothing else reaches them).
RUN_TAG = "CLOUDTASK_LOCAL_RUN"
_READ_SIZE = 65536
# Strong references to fire-and-forget tasks, which asyncio holds only weakly.
_background: set[asyncio.Task[None]] = set()


class LocalTransport:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)

    async def run(
        self,
        command: str,
        *,
        timeout: float | None,
        output: Callable[[bytes], None],
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        loop = asyncio.get_running_loop()
        # A session of its own makes the job a process group we can kill whole,
        # and keeps the terminal's Ctrl-C away from it (the controller decides).
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**self.environ, **(env or {})},
            )
        except OSError as exc:
            raise WorkerError(f"cannot start a process: {exc.strerror or exc}") from exc
        assert proc.stdout is not None
        counted = 0

        def count(data: bytes) -> None:
            nonlocal counted
            counted += len(data)
            output(data)

        eof = _stream(loop, proc.stdout.fileno(), count)
        exited = _exit_future(loop, proc)
        try:
            reason = await first_event(exited, timeout, stop)
            if reason is not None:
                await _terminate(proc.pid, exited)
            status, resources = _reap(proc)
        finally:
            # Whatever happened, nothing the job started outlives it.
            _kill_group(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(eof), DRAIN_LIMIT)
            held_open = not eof.done()
            loop.remove_reader(proc.stdout.fileno())
            proc.stdout.close()
        timed_out, stopped = reason == "timeout", reason == "stop"
        usage = Usage(resources.ru_utime, resources.ru_stime, resources.ru_maxrss * 1024, counted)
        if status < 0:
            return RunResult(None, -status, timed_out, stopped, held_open, usage)
        return RunResult(status, None, timed_out, stopped, held_open, usage)

    async def start_agent(self) -> AgentStart:
        # Local jobs need no agent: this process runs them (and measures them).
        return AgentStart(cpus=len(os.sched_getaffinity(0)))

    def keep_lease(self, seconds: float, action: str, key: str) -> bool:
        return False  # this machine is the user's: never leased

    def watch_spot(self, url: str, interval: float, on_notice: Callable[[], None]) -> bool:
        return False

    async def put_overlay(self, directory: Path) -> None:
        raise WorkerError("the local provider does not copy an overlay onto this machine")

    async def close(self) -> None:
        return None


def _stream(
    loop: asyncio.AbstractEventLoop, fd: int, output: Callable[[bytes], None]
) -> asyncio.Future[None]:
    """Feed everything read from fd to output; the future is done at EOF."""
    eof: asyncio.Future[None] = loop.create_future()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            output(data)
            return
        loop.remove_reader(fd)
        if not eof.done():
            eof.set_result(None)

    loop.add_reader(fd, readable)
    return eof


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, resource.struct_rusage]:
    """Wait for the process and take its exit and its resource use (wait4):
    Popen's own wait would drop the use."""
    while True:
        try:
            _, status, resources = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, resources


def _exit_future(
    loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]
) -> asyncio.Future[None]:
    """A future done when the process exits (it is not reaped here)."""
    exited: asyncio.Future[None] = loop.create_future()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, on_exit)
        return exited

    async def poll() -> None:  # no pidfd here (not Linux): poll instead
        while proc.poll() is None:
            await asyncio.sleep(0.02)
        if not exited.done():
            exited.set_result(None)

    task = loop.create_task(poll())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return exited


async def _terminate(pgid: int, exited: asyncio.Future[None]) -> None:
    """SIGTERM the group, then SIGKILL it if the job has not ended in KILL_GRACE."""
    _kill_group(pgid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(exited), KILL_GRACE)
    _kill_group(pgid, signal.SIGKILL)
    await exited


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_leftovers(tags: Iterable[str], grace: float = KILL_GRACE) -> int:
    """Kill the process groups of jobs started under these run tags; how many groups.

    Only this user's processes are looked at (others' environments are not
    readable anyway). Each group gets SIGTERM, then SIGKILL after `grace`.
    """
    wanted = {f"{RUN_TAG}={tag}".encode() for tag in tags}
    if not wanted:
        return 0
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            environment = (entry / "environ").read_bytes().split(b"\0")
            if wanted.intersection(environment):
                groups.add(os.getpgid(int(entry.name)))
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    found = len(groups)
    for pgid in groups:
        _kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        groups = {pgid for pgid in groups if _group_alive(pgid)}
        time.sleep(0.05)
    for pgid in groups:
        _kill_group(pgid, signal.SIGKILL)
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
