"""Workers the user already has (--workers): reached over SSH, never destroyed."""

from __future__ import annotations

from collections.abc import Sequence

from ..ssh import SessionKey, SSHOptions, Target, connect
from ..transport import Transport
from .base import Instance, Provider


class Prelaunched(Provider):
    name = "workers"
    # Listed workers beyond the split stand by: each takes the place of one
    # that fails, whether it failed running jobs or never became ready.
    replace_unready = True
    replacing = "a spare worker takes its place"

    def __init__(
        self, targets: Sequence[Target], options: SSHOptions, session_key: SessionKey
    ) -> None:
        self.options = options
        self.session_key = session_key
        self._pending = list(targets)
        self._listed = len(self._pending)
        self._targets: dict[str, Target] = {}
        self._names: set[str] = set()

    async def launch(self) -> Instance:
        target = self._pending.pop(0)
        name = target.address.label
        number = 1
        while name in self._names:  # an address listed twice is two job slots
            number += 1
            name = f"{target.address.label}-{number}"
        self._names.add(name)
        self._targets[name] = target
        return Instance(id=str(target.address), name=name, address=str(target.address))

    def spares(self, started: int) -> int:
        return self._listed - started

    async def connect(self, instance: Instance) -> Transport:
        return await connect(self._targets[instance.name], self.options, self.session_key)

    async def destroy(self, instance: Instance) -> bool:
        return True  # pre-launched workers are the user's: never destroyed
