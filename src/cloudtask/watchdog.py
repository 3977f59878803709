"""The watchdog: destroys a session's launched instances when its controller dies.

Every run that may launch instances starts one (`python -m cloudtask.watchdog`)
in a process session of its own, so a terminal's Ctrl-C does not reach it,
and it outlives the controller. It gets the options it needs to reach the
cloud, secrets included, over a pipe (never on a command line or in a file),
then waits for that pipe to close, which happens however the controller ends.

The controller writes "done" before it closes the pipe once every instance it
launched is recorded as destroyed. Any other end (SIGKILL, a crash, a second
Ctrl-C that skipped the cleanup) may have left instances running: the
watchdog then takes the session's lock (no resume runs meanwhile) and
sweeps the session (`providers.launched.sweep`): every instance the store
has open, and every instance tagged with the session. What it did goes to
`SESSIONS/ID/watchdog.log`. A resume that takes the lock first destroys the
leftovers itself; the watchdog then has nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from .config import Config, resolve
from .errors import CloudtaskError
from .providers import get_cloud, is_cloud
from .providers.launched import settled, sweep_and_close
from .session.directory import SessionDir
from .store import Store

LOG_NAME = "watchdog.log"
DONE = "done"
# How long the watchdog waits for the dead controller's lock, and how often it
# tries a sweep that failed (the cloud's API may be down for a while).
LOCK_WAIT = 10.0
# The pauses cover the time an instance of an uncertain launch may take to
# appear (providers.launched.UNCERTAIN_FOR, plus a cloud's listing lag).
SWEEP_PAUSES = (0.0, 5.0, 15.0, 30.0, 60.0, 60.0, 120.0, 300.0)
# However slow the cloud's API (each call may time out and be retried), the
# watchdog gives up this long after the controller ended, and says why.
GIVE_UP_AFTER = 600.0


class Watchdog:
    """The controller's side: the pipe to a watchdog process (None: no cloud)."""

    def __init__(self, pipe: IO[str] | None) -> None:
        self.pipe = pipe

    @classmethod
    @contextlib.contextmanager
    def started(cls, session: SessionDir, config: Config | None) -> Iterator[Watchdog]:
        """A watchdog for a run that may launch on `config`'s cloud (None: no run does)."""
        if config is None or not is_cloud(config.provider):
            yield cls(None)
            return
        log = session.open_log(session.path / LOG_NAME)
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudtask.watchdog"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        log.close()
        assert process.stdin is not None
        setup = {"sessions": str(session.path.parent), "session": session.id}
        setup["options"] = config.given(secrets=True)
        process.stdin.write(json.dumps(setup) + "\n")
        process.stdin.flush()
        dog = cls(process.stdin)
        try:
            yield dog
        finally:
            dog.close()

    def release(self) -> None:
        """Nothing is left to destroy: the watchdog may go."""
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                self.pipe.write(DONE + "\n")
                self.pipe.flush()

    def close(self) -> None:
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                self.pipe.close()
            self.pipe = None


def log(text: str) -> None:
    print(f"{datetime.now().isoformat(timespec='seconds')} {text}", flush=True)


def watch(stdin: IO[str], give_up_after: float = GIVE_UP_AFTER) -> int:
    setup: dict[str, Any] = json.loads(stdin.readline())
    session_id = int(setup["session"])
    log(f"watching session {session_id} (controller {os.getppid()})")
    if stdin.read().strip() == DONE:
        log("the controller destroyed every instance it launched")
        return 0
    session = SessionDir.find(Path(setup["sessions"]), session_id, "watchdog")
    config = resolve(setup["options"])
    deadline = time.monotonic() + give_up_after
    why = "every sweep left something open"
    for pause in SWEEP_PAUSES:
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            why = f"no sweep settled it within {give_up_after:g} s"
            break
        # The lock only while sweeping: a resume meanwhile takes over the cleanup.
        if not take_lock(session):
            log("another cloudtask took the session over: it destroys what is left")
            return 0
        try:
            if sweep_once(session, config, deadline - time.monotonic()):
                log("nothing of the session is left running")
                return 0
        finally:
            session.unlock()
    log(
        f"giving up ({why}): instances may still be running: "
        f"cloudtask-destroy-workers --session={session_id} --sessions={session.path.parent}"
    )
    return 1


def sweep_once(session: SessionDir, config: Config, limit: float) -> bool:
    """One sweep of the session, cut off after `limit` seconds; whether it is
    settled (nothing can be left)."""
    store = Store.open(session.path)
    try:
        log("sweeping: the controller ended without destroying every instance")
        try:
            cloud = get_cloud(config.provider).from_config(config)
            sweeping = sweep_and_close(cloud, store, session.id, log_warning)
            destroyed = asyncio.run(asyncio.wait_for(sweeping, max(limit, 0.1)))
        except TimeoutError:
            log(f"sweep failed: the cloud did not answer within {limit:.0f} s")
            return False
        except CloudtaskError as exc:
            log(f"sweep failed: {exc}")
            return False
        log(f"destroyed {len(destroyed)}: {' '.join(destroyed) or '-'}")
        return settled(store, time.time())
    finally:
        store.close()


def log_warning(text: str) -> None:
    log(f"warning: {text}")


def take_lock(session: SessionDir) -> bool:
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            session.lock()
            return True
        except CloudtaskError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


if __name__ == "__main__":
    try:
        sys.exit(watch(sys.stdin))
    except Exception as exc:  # the log is all a watchdog has: say what broke
        log(f"watchdog failed: {type(exc).__name__}: {exc}")
        sys.exit(1)
