"""What one attempt at a job used on its worker: CPU, peak memory, output.

A leaf: the transports measure it, the store keeps it, the reports read it.
Wall time is not here: the store has each attempt's start and end.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """Resource use of one attempt. None: not measured (a worker without the
    agent reports no CPU or memory; output bytes are always counted)."""

    user_cpu: float | None = None  # seconds, the job and the children it waited for
    system_cpu: float | None = None  # seconds
    max_rss: int | None = None  # bytes, the largest resident set of one of its processes
    output_bytes: int = 0  # bytes it wrote to stdout and stderr together

    @property
    def cpu(self) -> float | None:
        """User and system CPU seconds together."""
        if self.user_cpu is None or self.system_cpu is None:
            return None
        return self.user_cpu + self.system_cpu
