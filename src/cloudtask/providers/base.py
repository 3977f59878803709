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


class Provider(ABC):
    """Launches workers, connects to them and destroys them.

    A provider knows nothing about jobs; the worker lifecycle drives it.
    """

    name: str

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
    async def destroy(self, instance: Instance) -> None:
        """Let the worker go; nothing of it keeps running or billing."""
