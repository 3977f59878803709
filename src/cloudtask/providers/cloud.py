"""The interface every cloud provider implements: launch, describe, list, destroy.

A cloud knows nothing about SSH, jobs or the session store. The worker
lifecycle (`providers/launched.py`) records every launch intent and instance
id in the store, waits for instances to boot, connects to them and destroys
them; a `Cloud` only speaks to its API.

Errors: each implementation translates its library's errors into
`ProviderError` once, at this boundary, and says whether a retry may help
(throttling, a 5xx, a timeout: transient; bad credentials, an unknown image:
not). `with_retries` is the one place that retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, TypeVar

from ..errors import CloudtaskError

if TYPE_CHECKING:
    from ..config import Config

# Every instance cloudtask launches carries these tags (or labels, where the
# cloud has no tags), so a sweep finds it even if its id was never returned.
TAG_SESSION = "cloudtask-session"  # the session id
TAG_TOKEN = "cloudtask-token"  # the launch intent's token (see LaunchSpec)
TAG_NAME = "Name"  # the worker's name, as consoles show it


class ProviderError(CloudtaskError):
    """A provider API call failed; `transient` when trying again may succeed."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class InstanceState(StrEnum):
    PENDING = "pending"  # launched, not running yet
    RUNNING = "running"  # running (it may still be booting: SSH tells)
    GONE = "gone"  # terminated, terminating, or unknown to the cloud


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """One instance to launch."""

    session: int
    # Unique per launch intent, recorded before the API call: the idempotency
    # token where the API has one (EC2 ClientToken), and a tag either way.
    token: str
    name: str  # the worker's name (a tag, label or server name)
    # An OpenSSH public key line to authorize for the login user at boot,
    # where the cloud can (EC2 user data); None where it cannot.
    public_key: str | None = None


@dataclass(frozen=True, slots=True)
class CloudInstance:
    """What the cloud says of one instance."""

    id: str
    state: InstanceState
    address: str | None = None  # public (else private) IP address, once known
    session: int | None = None  # from its tags, when it has them
    token: str | None = None  # from its tags, when it has them
    # Host public keys ("ssh-ed25519 AAAA...") the provider reports for it
    # (EC2 console output, a Hub record); empty when it reports none.
    host_keys: tuple[str, ...] = ()


class Cloud(ABC):
    """One cloud account and the options launched workers are made with."""

    name: ClassVar[str]
    # Seconds during which a new instance may still be missing from listings
    # (and "not found" may not mean gone): clouds with eventually consistent APIs.
    listing_lag: ClassVar[float] = 0.0
    # A launch tried again with the same token makes no second instance (EC2's
    # ClientToken; the Hub provider looks for the token first). Else a try
    # that failed midway may have left one that only the session's tag finds.
    idempotent_launch: ClassVar[bool] = False

    def spot_metadata(self) -> str | None:
        """Where its spot instances get their interruption notice; None: no spot."""
        return None

    @classmethod
    @abstractmethod
    def from_config(cls, config: Config) -> Cloud:
        """Built from the options; a missing or bad option is a UsageError naming it."""

    @property
    @abstractmethod
    def size(self) -> str:
        """The size (instance type) launched: what the price table is keyed by."""

    @abstractmethod
    async def launch(self, spec: LaunchSpec) -> str:
        """Ask for one instance; its id, as soon as the API returns it (no waiting to boot)."""

    @abstractmethod
    async def describe(self, instance_id: str) -> CloudInstance:
        """The instance now; state GONE when the cloud no longer knows it."""

    @abstractmethod
    async def instances(self, session: int | None = None) -> list[CloudInstance]:
        """Instances cloudtask launched that are not gone: of one session, or of all."""

    @abstractmethod
    async def destroy(self, instance_id: str) -> None:
        """Terminate the instance. Destroying one already gone is not an error."""

    async def close(self) -> None:
        """Let go of connections or clients; the default has none."""
        return None


# Backoff for transient errors: about 1, 2, 4, 8, 16 s (with jitter), then give up.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)

T = TypeVar("T")


async def with_retries(
    call: Callable[[], Awaitable[T]],
    what: str,
    delays: tuple[float, ...] = RETRY_DELAYS,
    on_retry: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> T:
    """Run the API call, retrying transient ProviderErrors with backoff.

    A permanent error, or the last transient one, is raised with `what` in
    front. Once `stop` is set (an abort), the try in flight finishes but no
    other is made.
    """
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            return await call()
        except ProviderError as exc:
            stopped = stop is not None and stop.is_set()
            if not exc.transient or delay is None or stopped:
                raise ProviderError(f"{what}: {exc}", transient=exc.transient) from None
            if on_retry is not None:
                on_retry(f"{what}: {exc}; trying again ({attempt} of {len(delays)})")
            pause = delay * random.uniform(0.75, 1.25)
            if stop is None:
                await asyncio.sleep(pause)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                if stop.is_set():
                    raise ProviderError(f"{what}: {exc}", transient=exc.transient) from None
    raise AssertionError("unreachable")
