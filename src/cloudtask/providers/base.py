from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..transport import Transport

if TYPE_CHECKING:
    from ..config import Config


class ProviderUnavailable(UsageError):
    """The provider named does not exist or is not built yet."""


@dataclass(frozen=True, slots=True)
class Instance:
    """A worker a provider launched: its id with the provider and its name in logs."""

    id: str
    name: str
    address: str
    token: str | None = None  # a launched instance's launch token (see providers/launched.py)


class Provider(ABC):
    """Launches workers, connects to them and destroys them.

    A provider knows nothing about jobs; the worker lifecycle drives it.
    """

    name: str
    # An idle worker waits for jobs that may come back to the queue; a costly
    # one (launched) is released at once.
    keep_idle = True
    # A worker that failed may be replaced by a new one (launched workers).
    replaceable = False
    # A worker that never became ready (no connection, a failed setup) is
    # replaced too, from spares that cost nothing (listed workers).
    replace_unready = False
    # What the line about a replacement says it does.
    replacing = "launching a replacement"
    # What one worker costs an hour, where known (launched workers).
    price: float | None = None
    # What a worker runs when its lease runs out (launched workers: a shutdown
    # its cloud turns into a terminate); None: its workers get no lease.
    lease_action: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> Provider:
        return cls()

    @abstractmethod
    async def launch(self) -> Instance:
        """Obtain one new worker; raises on failure."""

    @abstractmethod
    async def connect(self, instance: Instance) -> Transport:
        """A transport that runs commands on the worker."""

    @abstractmethod
    async def destroy(self, instance: Instance) -> bool:
        """Let the worker go; nothing of it keeps running or billing. False
        when the cloud did not confirm it (it may still run: said already)."""

    def spot_metadata(self) -> str | None:
        """The instance metadata service's URL, where workers may get a spot
        interruption notice (EC2 spot instances); None elsewhere."""
        return None

    def spares(self, started: int) -> int:
        """How many failed workers may be replaced, `started` being in use."""
        return started if self.replaceable else 0

    async def close(self) -> None:
        """Let go of the provider's own resources (API clients) at the end of a run."""
        return None
