"""Looking for processes in the process table, as a user would with ps."""

from __future__ import annotations

import os
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
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if (cmdline == marker or cmdline.endswith("/" + marker)) and state != "Z":
            found.append(int(entry.name))
    return found
