"""Looking for processes in the process table, as a user would with ps."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def live_processes_with(marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains marker.

    Pass the whole command line of the process sought (`sleep 1000.123`): a
    shell that started it has the marker inside a longer command line.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if (cmdline == marker or cmdline.endswith("/" + marker)) and state != "Z":
            found.append(int(entry.name))
    return found


def watchdogs_of(sessions: Path) -> list[int]:
    """Live cloudtask watchdogs working for sessions under `sessions` (by their environment)."""
    wanted = f"CLOUDTASK_SESSIONS={sessions}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environment = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"cloudtask.watchdog" in cmdline and wanted in environment and state != "Z":
            found.append(int(entry.name))
    return found


def stop_watchdogs(sessions: Path, grace: float = 5.0) -> list[int]:
    """Give the watchdogs of these sessions `grace` seconds to end, then kill them.

    A test's cloud is gone when it ends, so a watchdog that still sweeps it
    would only fail until it gives up. Returns the pids that had to be killed.
    """
    deadline = time.monotonic() + grace
    while (left := watchdogs_of(sessions)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
