"""Where a session's keys may be left on workers, and their removal.

Each run of a session adds a key of its own to every `--workers` worker it
connects to. The store records each key before it is used and, per key, the
workers it was sent to (`user@host:port`, once per copy), so a later run
removes it from those workers even when it is given other ones. A key is
forgotten once no worker is left where it may be; a worker that cannot be
reached keeps its entry, is named, and the next run of the session tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .addresses import Address, parse_address
from .console import Console
from .errors import WorkerError
from .ssh import SessionKey, SSHOptions, Target, remove_stale_keys
from .store import Store


def worker_id(target: Target) -> str:
    """How the store names a worker: an address that leads back to the same
    login (the user and port given, the host as listed, so ~/.ssh/config's
    HostName applies again)."""
    return str(Address(target.address.host, target.user, target.port))


def recorded_key(session_id: int, store: Store) -> SessionKey:
    """This run's key, with every add and removal recorded in the store."""
    key: SessionKey

    def sent(target: Target) -> None:
        store.key_sent(key.line, worker_id(target))

    def removed(target: Target) -> None:
        store.key_removed(key.line, worker_id(target))

    key = SessionKey(session_id, sent, removed)
    store.add_session_key(key.line)
    return key


Resolve = Callable[[Address], Target]


def where_left(
    store: Store, targets: Sequence[Target], resolve: Resolve, console: Console
) -> dict[str, tuple[Target, list[str]]]:
    """The workers where earlier runs' keys may be left: name -> (target, key lines).

    A key recorded without its workers (by an older cloudtask) is looked for
    on this run's workers, and recorded as sent to them from now on.
    """
    found: dict[str, tuple[Target, list[str]]] = {}
    workers = store.key_workers()
    for line in store.session_keys():
        if line not in workers and targets:
            for target in targets:
                store.key_sent(line, worker_id(target))
            workers = store.key_workers()
        for name in dict.fromkeys(workers.get(line, [])):
            if name not in found:
                try:
                    found[name] = (resolve(parse_address(name)), [])
                except ValueError as exc:
                    console.warn(f"session key record: bad worker {name!r}: {exc}")
                    continue
            found[name][1].append(line)
    forget_removed(store)
    return found


def forget_removed(store: Store, keep: str | None = None) -> None:
    """Forget the keys (but `keep`, a run's own key while in use) that no worker
    has; one recorded without its workers stays until they are known."""
    workers = store.key_workers()
    gone = [
        line
        for line in store.session_keys()
        if line != keep and line in workers and not workers[line]
    ]
    if gone:
        store.forget_session_keys(gone)


async def remove_left_keys(
    left: dict[str, tuple[Target, list[str]]],
    options: SSHOptions,
    store: Store,
    console: Console,
    whose: str,
    resume: str,
    keep: str | None = None,
) -> None:
    """Remove every copy of the keys from their workers, all at once, and forget
    each key (but `keep`, a run's own key while in use) once no worker is left
    where it may be. Cancelled (the run it went along with has ended), the
    workers not reached yet keep their entries."""

    def still_left(name: str, why: str) -> None:
        console.warn(f"{name}: {whose} session key may be left there ({why}); {resume} removes it")

    async def clean(name: str, target: Target, lines: list[str]) -> None:
        try:
            removed = await remove_stale_keys(target, options, lines)
        except WorkerError as exc:
            still_left(name, str(exc))
            return
        except asyncio.CancelledError:
            still_left(name, "not reached before the run ended")
            raise
        for line in lines:
            store.key_removed(line, name, every=True)
        if removed:
            copies = f" ({removed} copies)" if removed > 1 else ""
            console.line(f"{name}: removed {whose} session key{copies}")

    try:
        await asyncio.gather(
            *(clean(name, target, lines) for name, (target, lines) in left.items())
        )
    finally:
        forget_removed(store, keep)
