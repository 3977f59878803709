"""The local provider: each worker is a slot on this machine, jobs are processes."""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING

from ..environment import SECRET_NAMES
from ..transport import Transport
from ..transport.local import RUN_TAG, LocalTransport
from .base import Instance, Provider

if TYPE_CHECKING:
    from ..config import Config


class LocalProvider(Provider):
    name = "local"

    @classmethod
    def from_config(cls, config: Config) -> LocalProvider:
        return cls(SECRET_NAMES)

    def __init__(self, hidden_env: frozenset[str] = frozenset()) -> None:
        # Secrets given in the environment are not passed on to jobs.
        self.environ: dict[str, str] = {
            key: value for key, value in os.environ.items() if key not in hidden_env
        }
        self._numbers = itertools.count(1)

    def tag_jobs(self, tag: str) -> None:
        """Mark every job of this run, so a later run can stop those left running."""
        self.environ[RUN_TAG] = tag

    async def launch(self) -> Instance:
        number = next(self._numbers)
        return Instance(id=f"local-{number}", name=f"local{number}", address="localhost")

    async def connect(self, instance: Instance) -> Transport:
        return LocalTransport(self.environ)

    async def destroy(self, instance: Instance) -> bool:
        return True


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the system has
    one: a container or `taskset` may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
