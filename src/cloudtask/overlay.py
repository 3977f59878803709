"""The --overlay directory as a tar stream, to be unpacked onto a worker's /."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

# GNU tar on the worker: existing directories keep their mode and owner
# (an overlay must never turn /tmp into 0755); files get the overlay's modes.
UNPACK_COMMAND = "tar -C / -xpf - --no-overwrite-dir --no-same-owner"


def overlay_tar(directory: Path) -> bytes:
    """Files, directories, modes and symlinks of `directory`, relative to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return buffer.getvalue()
