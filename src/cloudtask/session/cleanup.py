"""Who cleans up what, and when.

A run cleans up after itself: each worker's lifecycle destroys what it
launched and removes this run's session key (worker.py). What a killed
controller left, the next run of the session cleans up first (`plan_resume`):
attempts left open are closed as lost (the store), local jobs still running
are stopped (`stop_leftover_jobs`), instances earlier runs launched are swept
(`destroy_leftovers`), and session keys earlier runs may have left are
removed from every worker of the session beside the run's jobs
(`earlier_keys_removal`, `alongside`). At the end of a run, launches whose
outcome is unknown are looked for by the session's tag (`settle_launches`);
what is not known to be gone is the watchdog's (`watched`), and is named.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..config import Config
from ..console import Console, plural
from ..errors import CloudtaskError, SessionError, SessionWriteError
from ..providers import Cloud, get_cloud, is_cloud
from ..providers.launched import settled, sweep_and_close
from ..providers.local import LocalProvider
from ..session_keys import remove_left_keys
from ..ssh import HostKeys, SSHOptions, Target
from ..store import Store
from ..transport.local import kill_leftovers
from .directory import SessionDir

T = TypeVar("T")


def cloud_of(config: Config) -> Cloud | None:
    """The cloud that launches workers, when the provider is one; its options checked.

    Each step makes a cloud of its own and closes it at its end, so no API
    client outlives the step (or the event loop) it was made for.
    """
    if not is_cloud(config.provider):
        return None
    return get_cloud(config.provider).from_config(config)


def watched(config: Config, launching: bool) -> Config | None:
    """What the watchdog is given: a run that launches nothing has nothing for
    a watchdog to watch (and no reason to call the cloud)."""
    return config if launching else None


def after_the_run(session: SessionDir, write: Callable[[], None]) -> None:
    """A store write once the run is over. On a full disk it is reported, not
    raised: the store then still says what a resume needs to know (jobs running
    or pending, keys that may be on workers), so the session stays resumable."""
    try:
        write()
    except SessionWriteError as exc:
        session.trouble.report(str(exc))


def settle_launches(
    config: Config, session: SessionDir, store: Store, console: Console, loop: asyncio.Runner
) -> None:
    """Launches whose outcome is unknown (the call failed midway) are looked for by
    the session's tag, and what they made destroyed; else the watchdog tries later."""
    if settled(store, time.time()):
        return
    cloud = cloud_of(config)
    assert cloud is not None
    try:
        loop.run(sweep_and_close(cloud, store, session.id, console.warn))
    except CloudtaskError as exc:
        console.warn(f"cannot check the session's instances now ({exc}): the watchdog will")


def destroy_leftovers(
    config: Config,
    session: SessionDir,
    store: Store,
    cloud: Cloud | None,
    console: Console,
    loop: asyncio.Runner,
) -> None:
    """Destroy what earlier runs of the session launched and left (a killed controller)."""
    records = store.instances(open_only=True)
    if settled(store, time.time()) or (cloud is None and not records):
        return  # every instance the session launched is recorded as destroyed
    if cloud is None or any(record.provider != cloud.name for record in records):
        names = sorted({record.provider for record in records})
        raise SessionError(
            f"session {session.id} has instances of {', '.join(names)} that may still run; "
            f"give that --provider (and its options) to destroy them first"
        )
    try:
        destroyed = loop.run(sweep_and_close(cloud, store, session.id, console.warn))
    except CloudtaskError as exc:
        console.warn(f"cannot destroy what earlier runs left now ({exc}): they stay recorded")
        return
    for instance_id in destroyed:
        console.line(f"destroyed {instance_id}, left by an earlier run of session {session.id}")


def stop_leftover_jobs(
    provider: LocalProvider, session: SessionDir, store: Store, console: Console
) -> None:
    """Local jobs of an earlier, killed controller run on in sessions of their own:
    stop them before their jobs run again. This run's tag is recorded first."""
    stale = store.local_runs()
    tag = f"{session.id}-{secrets.token_hex(8)}"
    store.add_local_run(tag)
    provider.tag_jobs(tag)
    stopped = kill_leftovers(stale)
    if stopped:
        console.line(f"stopped {plural(stopped, 'job')} that an earlier run of the session left")


def ssh_options(config: Config, session: SessionDir) -> SSHOptions:
    return SSHOptions(
        identity=config.ssh_identity,
        keepalive=config.keepalive,
        host_keys=HostKeys(session.known_hosts_path),
        connect_timeout=config.connect_timeout,
    )


def earlier_keys_removal(
    config: Config,
    session: SessionDir,
    store: Store,
    console: Console,
    left: dict[str, tuple[Target, list[str]]],
    keep: str | None = None,
) -> Coroutine[Any, Any, None]:
    """Remove the keys that earlier runs (killed, or stopped before their
    cleanup) may have left on the session's workers, whether this run uses
    them or not; `keep` is this run's own key."""
    options = ssh_options(config, session)
    resume = resume_command(config, session)
    return remove_left_keys(left, options, store, console, "an earlier run's", resume, keep)


async def alongside(
    main: Awaitable[T], chore: Coroutine[Any, Any, None] | None, session: SessionDir
) -> T:
    """`main`'s result; `chore` goes on beside it and is cancelled if it is
    still going when `main` is done (nothing waits on it then)."""
    if chore is None:
        return await main
    task = asyncio.ensure_future(chore)
    try:
        return await main
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except SessionWriteError as exc:
            session.trouble.report(str(exc))


def resume_command(config: Config, session: SessionDir) -> str:
    return f"cloudtask --resume={session.id}" + sessions_option(config)


def sessions_option(config: Config) -> str:
    """--sessions for the resume command, when it is not the default."""
    if config.sources.get("sessions", "default") == "default":
        return ""
    return f" --sessions={shlex.quote(str(config.sessions))}"
