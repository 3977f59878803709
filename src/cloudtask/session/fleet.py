"""Workers outside a run: launched for `--workers` lists, destroyed by address,
or swept after a session (cloudtask-launch-workers, cloudtask-destroy-workers)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..addresses import parse_address
from ..errors import CloudtaskError
from ..providers import Cloud
from ..providers.cloud import LaunchSpec, ProviderError, with_retries
from ..providers.launched import BOOT_LIMIT, sweep_and_close, wait_running
from ..store import Store
from .directory import SessionDir

NO_SESSION = 0  # the session tag of workers launched outside a session


async def launch_all(
    cloud: Cloud, count: int, key: str | None, warn: Callable[[str], None]
) -> list[str | CloudtaskError]:
    """Launch `count` workers at once; each one's address, or why it failed.

    Interrupted (Ctrl-C), it destroys every instance it launched: their
    addresses would never be written anywhere, so nobody would destroy them.
    """
    launched: list[str] = []

    async def one(number: int) -> str:
        name = f"{cloud.name}-w{number}"
        spec = LaunchSpec(NO_SESSION, secrets.token_hex(8), name, key)
        instance_id = await with_retries(
            lambda: cloud.launch(spec), f"{name}: launch", on_retry=warn
        )
        launched.append(instance_id)
        try:
            running = await wait_running(cloud, instance_id, name, BOOT_LIMIT, warn)
        except CloudtaskError:
            await destroy_one(cloud, instance_id)
            raise
        assert running.address is not None
        return running.address

    try:
        launches = (one(number) for number in range(1, count + 1))
        results = await asyncio.gather(*launches, return_exceptions=True)
    except BaseException:
        destroyed = []
        for instance_id in launched:
            with contextlib.suppress(CloudtaskError):
                await asyncio.shield(destroy_one(cloud, instance_id))
                destroyed.append(instance_id)
        if launched:
            warn(
                f"stopped: destroyed {len(destroyed)} of the {len(launched)} instances "
                f"launched so far ({' '.join(destroyed) or 'none'}); no address was written"
            )
        raise
    finally:
        await cloud.close()
    found: list[str | CloudtaskError] = []
    for result in results:
        if isinstance(result, CloudtaskError | str):
            found.append(result)
        elif isinstance(result, BaseException):
            raise result
    return found


async def destroy_one(cloud: Cloud, instance_id: str) -> None:
    await with_retries(lambda: cloud.destroy(instance_id), f"destroy {instance_id}")


async def destroy_addresses(cloud: Cloud, addresses: list[str]) -> dict[str, str | None]:
    """Each address: None when destroyed, else why not."""
    try:
        listed = await with_retries(lambda: cloud.instances(None), "list instances")
        by_address = {found.address: found.id for found in listed if found.address}
        outcome: dict[str, str | None] = {}
        for address in addresses:
            instance_id = by_address.get(parse_address(address).host)
            if instance_id is None:
                outcome[address] = "no instance of cloudtask's has this address"
                continue
            try:
                await destroy_one(cloud, instance_id)
                outcome[address] = None
            except ProviderError as exc:
                outcome[address] = str(exc)
        return outcome
    finally:
        await cloud.close()


@dataclass(frozen=True)
class SweepOutcome:
    destroyed: list[str]  # instance ids
    left: list[str]  # what may still be running: "NAME (ID)"


def sweep_session(
    cloud: Cloud, sessions: Path, session_id: int, warn: Callable[[str], None]
) -> SweepOutcome:
    """Destroy whatever session `session_id` left running, under its lock."""
    session = SessionDir.find(sessions, session_id, f"--session={session_id}")
    session.lock()
    store = Store.open(session.path)
    try:
        destroyed = asyncio.run(sweep_and_close(cloud, store, session_id, warn))
        left = [
            f"{record.name} ({record.instance_id or 'no id'})"
            for record in store.instances(open_only=True)
        ]
    finally:
        store.close()
        session.unlock()
    return SweepOutcome(destroyed, left)
