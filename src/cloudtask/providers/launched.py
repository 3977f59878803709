"""Workers that cloudtask launches on a cloud, and destroys when they are done.

Nothing launched is ever forgotten: the intent is committed to the store
before the launch call (its token goes with the call and into the instance's
tags), the instance id as soon as the call returns, and the destruction when
the cloud has accepted it. Whatever a run leaves open, the next run, the
watchdog or `cloudtask-destroy-workers --session` finds in the store and by
the session's tag (`sweep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import secrets
import time
from collections.abc import Callable

from ..addresses import Address
from ..errors import WorkerError
from ..session.directory import SessionDir
from ..ssh import HostKeyRefused, HostKeys, LoginRefused, SessionKey, SSHOptions, Target, connect
from ..store import Store
from ..transport import Transport
from .base import Instance, Provider
from .cloud import (
    Cloud,
    CloudInstance,
    InstanceState,
    LaunchSpec,
    ProviderError,
    with_retries,
)

# From the launch call to SSH answering: past this, the instance is given up
# (--boot-timeout).
BOOT_LIMIT = 600.0
# sshd may refuse the login for a moment after it first answers, until the
# cloud's agent (cloud-init) has put the key in place; past this it is refused
# for good and the instance is given up at once.
LOGIN_GRACE = 15.0
# While a worker boots, a line says so this often (the live view says it all along).
BOOT_NOTE_EVERY = 60.0
# Polls of a booting instance start often and slow down (seconds).
POLL_FIRST, POLL_MOST = 0.5, 5.0
# How long after a launch call with an unknown outcome (a timeout, a lost
# answer) its instance may still appear: the longest a call can take (the API
# clients' timeouts are 30 s) with a margin. Sweeps by tag go on until then.
UNCERTAIN_FOR = 90.0


# What a launched worker runs when its lease runs out: a shutdown, which its
# cloud makes a terminate where the launch asked for it (EC2). Tests, whose
# workers share the machine that runs them, set a harmless one in
# CLOUDTASK_LEASE_ACTION instead.
LEASE_ACTION = "sudo -n shutdown -h now 2>/dev/null || shutdown -h now"


class LaunchedWorkers(Provider):
    """A source of workers launched on demand on one cloud."""

    keep_idle = False  # an idle launched worker costs money: release it at once
    replaceable = True

    def __init__(
        self,
        cloud: Cloud,
        store: Store,
        session: SessionDir,
        options: SSHOptions,
        session_key: SessionKey,
        user: str,
        hourly_price: float | None,
        warn: Callable[[str], None],
        boot_limit: float = BOOT_LIMIT,
    ) -> None:
        self.lease_action = os.environ.get("CLOUDTASK_LEASE_ACTION", LEASE_ACTION)
        self.cloud = cloud
        self.name = cloud.name
        self.store = store
        self.session = session
        self.options = options
        self.session_key = session_key
        self.user = user
        self.price = hourly_price
        self.warn = warn
        self.boot_limit = boot_limit
        # Names go on from the session's earlier runs: worker logs never mix.
        self._numbers = itertools.count(len(store.instances()) + 1)
        self._host_keys: dict[str, tuple[str, ...]] = {}
        self._boot_started: dict[str, float] = {}  # instance id -> monotonic time
        self._noted: dict[str, int] = {}  # worker -> the last minute of booting noted
        # Asked before each launch (--budget): why not to launch, or None.
        self.admit: Callable[[float | None], str | None] | None = None
        # Told what a worker does while it boots (name, a few words), and
        # None once it is no longer booting: for the live view.
        self.status: Callable[[str, str | None], None] = lambda name, what: None
        # Told a line now and then while a worker boots long: for the log.
        self.note: Callable[[str], None] = lambda text: None

    async def launch(self) -> Instance:
        # Checked and recorded with no await between: launches starting at the
        # same moment each see the ones before them.
        if self.admit is not None and (why := self.admit(self.price)):
            raise WorkerError(f"{why}: not launched")
        # hub1, libcloud2; ec2-3 (a name that ends in a digit gets a dash).
        dash = "-" if self.cloud.name[-1:].isdigit() else ""
        name = f"{self.cloud.name}{dash}{next(self._numbers)}"
        self.status(name, "launching")
        try:
            return await self._launch(name)
        finally:
            self.status(name, None)  # the worker says what it does from now on

    async def _launch(self, name: str) -> Instance:
        token = secrets.token_hex(8)
        self.store.intend_instance(
            token, self.cloud.name, name, self.cloud.size, self.price, time.time()
        )
        spec = LaunchSpec(self.session.id, token, name, self.session_key.line)
        uncertain = False  # a try failed in a way that may have made an instance anyway
        aborting = asyncio.Event()

        async def attempt() -> str:
            nonlocal uncertain
            try:
                return await self.cloud.launch(spec)
            except ProviderError as exc:
                if exc.transient:
                    uncertain = True
                    if not self.cloud.idempotent_launch:
                        # A retry may make a second instance: sweeps by tag go
                        # on until one made by this try would be listed.
                        lag = UNCERTAIN_FOR + self.cloud.listing_lag
                        self.store.sweep_until(time.time() + lag)
                raise

        call = asyncio.ensure_future(
            with_retries(attempt, f"{name}: launch", on_retry=self.warn, stop=aborting)
        )
        try:
            instance_id = await asyncio.shield(call)
        except asyncio.CancelledError:
            # Aborted while the cloud was asked: its answer may still make an
            # instance. Wait for the try in flight (no more), so it is destroyed too.
            aborting.set()
            with contextlib.suppress(ProviderError):
                instance_id = await call
                try:
                    self.store.instance_launched(token, instance_id, time.time())
                finally:  # destroyed even when a full disk refuses the record
                    await self.destroy(Instance(instance_id, name, "", token))
            raise
        except ProviderError as exc:
            if not exc.transient and not uncertain:  # refused outright: nothing was made
                self.store.instance_destroyed(token, time.time(), f"launch refused: {exc}")
            # Otherwise the record stays open: sweeps by tag make sure nothing was made.
            raise WorkerError(str(exc)) from None
        instance = Instance(instance_id, name, "", token)
        self._boot_started[instance_id] = time.monotonic()
        try:
            # A record that cannot be written (a full disk) fails the launch:
            # the instance it made is destroyed all the same.
            self.store.instance_launched(token, instance_id, time.time())
            address = await self._wait_running(instance)
            self.store.instance_running(token, address, time.time())
        except ProviderError as exc:
            await asyncio.shield(self.destroy(instance))
            raise WorkerError(str(exc)) from None
        except BaseException:
            await asyncio.shield(self.destroy(instance))
            raise
        return dataclasses.replace(instance, address=address)

    async def _wait_running(self, instance: Instance) -> str:
        def booting(elapsed: float, state: str) -> None:
            self._booting(instance.name, elapsed, f"booting ({state})")

        running = await wait_running(
            self.cloud, instance.id, instance.name, self.boot_limit, self.warn, booting
        )
        self._host_keys[instance.id] = running.host_keys
        assert running.address is not None
        return running.address

    async def connect(self, instance: Instance) -> Transport:
        """SSH to the new instance, trying again while it boots."""
        target = Target(Address(instance.address), instance.address, 22, self.user, False)
        # Keys of its own: a cloud reuses addresses, so known_hosts is no guide.
        host_keys = HostKeys(self.session.path / "hosts" / instance.id, known_hosts=())
        reported = self._host_keys.get(instance.id, ())
        if reported and host_keys.pins is None:
            host_keys.pin(instance.address, 22, reported)
        options = dataclasses.replace(self.options, host_keys=host_keys)
        started = self._boot_started.get(instance.id, time.monotonic())
        refused_since: float | None = None
        while True:
            try:
                transport = await connect(target, options, self.session_key, launched=True)
            except HostKeyRefused:
                raise
            except LoginRefused as exc:
                now = time.monotonic()
                refused_since = refused_since or now
                if now - refused_since > LOGIN_GRACE:
                    raise WorkerError(f"{exc}: refused for good; given up") from None
                why = str(exc)
            except WorkerError as exc:
                refused_since = None
                why = str(exc)
                if time.monotonic() - started > self.boot_limit:
                    raise WorkerError(
                        f"{instance.name}: no SSH after {self.boot_limit:g} s "
                        f"(--boot-timeout): {exc}"
                    ) from None
            else:
                self._boot_started.pop(instance.id, None)
                return transport
            self._booting(instance.name, time.monotonic() - started, "waiting for SSH", why)
            await asyncio.sleep(1.0)

    def spot_metadata(self) -> str | None:
        return self.cloud.spot_metadata()

    def _booting(self, name: str, elapsed: float, what: str, why: str = "") -> None:
        """Say what a booting worker waits for: in the live view, and a line each minute."""
        self.status(name, f"{what}, {elapsed:.0f} s")
        # A line a minute, or four in all for a short --boot-timeout.
        minute = int(elapsed // min(BOOT_NOTE_EVERY, self.boot_limit / 4))
        if minute and minute != self._noted.get(name):
            self._noted[name] = minute
            limit = f"gives up after {self.boot_limit:g} s (--boot-timeout)"
            self.note(
                f"{name}: {what} for {elapsed:.0f} s" + (f" ({why})" if why else "") + f"; {limit}"
            )

    async def destroy(self, instance: Instance) -> bool:
        assert instance.token is not None
        self._boot_started.pop(instance.id, None)
        self._noted.pop(instance.name, None)
        try:
            await with_retries(
                lambda: self.cloud.destroy(instance.id),
                f"{instance.name}: destroy {instance.id}",
                on_retry=self.warn,
            )
        except ProviderError as exc:
            self.warn(
                f"{exc}: it may still be running; the watchdog tries again, or run "
                f"cloudtask-destroy-workers --session={self.session.id}"
            )
            return False
        self.store.instance_destroyed(instance.token, time.time())
        return True

    async def close(self) -> None:
        await self.cloud.close()


async def wait_running(
    cloud: Cloud,
    instance_id: str,
    name: str,
    limit: float,
    warn: Callable[[str], None],
    booting: Callable[[float, str], None] | None = None,
) -> CloudInstance:
    """Poll until the instance runs and has an address; what the cloud says of it
    then. `booting` is told the seconds so far and the state at each poll."""
    started = time.monotonic()
    deadline = started + limit
    pause = POLL_FIRST
    while True:
        described = await with_retries(
            lambda: cloud.describe(instance_id), f"{name}: describe {instance_id}", on_retry=warn
        )
        if described.state is InstanceState.GONE:
            raise WorkerError(f"{name}: instance {instance_id} is gone before it ran")
        if described.state is InstanceState.RUNNING and described.address:
            return described
        if time.monotonic() > deadline:
            raise WorkerError(
                f"{name}: instance {instance_id} not running after {limit:g} s (--boot-timeout)"
            )
        if booting is not None:
            booting(time.monotonic() - started, described.state.value)
        await asyncio.sleep(pause)
        pause = min(pause * 2, POLL_MOST)


async def sweep(
    cloud: Cloud, store: Store, session_id: int, warn: Callable[[str], None]
) -> list[str]:
    """Destroy everything of the session that is not recorded as destroyed.

    Run where no controller launches for the session (it holds the session's
    lock, or is the controller at its end): every open record, and every
    instance tagged with the session (even one whose id was never returned).
    Returns the ids destroyed. A record is closed once what it made is known
    to be gone; while a launch's instance may still appear, or a new one may
    still be missing from listings (`Cloud.listing_lag`), it stays open for a
    later sweep. Failures are warned and left open.
    """
    tagged = {found.id: found for found in await _listed(cloud, session_id)}
    by_token = {found.token: found.id for found in tagged.values() if found.token}
    destroyed: list[str] = []
    now = time.time()

    async def destroy(instance_id: str) -> bool:
        try:
            await with_retries(lambda: cloud.destroy(instance_id), f"destroy {instance_id}")
        except ProviderError as exc:
            warn(f"{exc}: it may still be running")
            return False
        destroyed.append(instance_id)
        return True

    for record in store.instances(open_only=True):
        instance_id = record.instance_id or by_token.get(record.token)
        if instance_id is None:
            if now > record.intended + UNCERTAIN_FOR + cloud.listing_lag:
                store.instance_destroyed(record.token, now, "the launch made no instance")
            continue
        tagged.pop(instance_id, None)
        if record.instance_id is None:
            # Found by its token: the launch's answer was lost. Its id is
            # recorded; when it was made is not known, so from the intent on
            # (cost counts its hours from then, never fewer than it ran).
            store.instance_launched(record.token, instance_id, record.intended)
        recent = now < (record.launched or record.intended) + cloud.listing_lag
        if await destroy(instance_id) and not recent:
            store.instance_destroyed(record.token, time.time())
    for instance_id in tagged:  # tagged with the session, but in no record
        await destroy(instance_id)
    return destroyed


def settled(store: Store, now: float) -> bool:
    """Nothing launched for the session can still be running, or still appear."""
    return not store.instances(open_only=True) and now >= store.swept_until()


async def sweep_and_close(
    cloud: Cloud, store: Store, session_id: int, warn: Callable[[str], None]
) -> list[str]:
    """`sweep`, then let go of the cloud's client: one event loop's whole work."""
    try:
        return await sweep(cloud, store, session_id, warn)
    finally:
        await cloud.close()


async def _listed(cloud: Cloud, session_id: int) -> list[CloudInstance]:
    return await with_retries(lambda: cloud.instances(session_id), "list the session's instances")
