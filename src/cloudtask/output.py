"""Job output as it arrives: split into lines, progress redraws filtered."""

from __future__ import annotations

import re
from collections import deque

# Control characters other than tab would let a job's output move the cursor,
# recolour or retitle the user's terminal: they are shown escaped instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
TAIL_LINES = 20


def printable(text: str) -> str:
    return _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text)


def last_redraw(line: str) -> str:
    """What a terminal would show of a line redrawn with carriage returns."""
    line = line.rstrip("\r")
    return line[line.rfind("\r") + 1 :]


class OutputLines:
    """Turns a stream of output chunks into complete lines and keeps a tail."""

    def __init__(self, tail_lines: int = TAIL_LINES) -> None:
        self._partial = b""
        self.tail: deque[str] = deque(maxlen=tail_lines)

    def feed(self, data: bytes) -> list[str]:
        *complete, self._partial = (self._partial + data).split(b"\n")
        return [self._keep(raw) for raw in complete]

    def flush(self) -> list[str]:
        """The last line, when the output did not end with a newline."""
        if not self._partial:
            return []
        raw, self._partial = self._partial, b""
        return [self._keep(raw)]

    def _keep(self, raw: bytes) -> str:
        line = last_redraw(raw.decode("utf-8", errors="replace"))
        self.tail.append(line)
        return line
