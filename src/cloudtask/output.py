"""Job output as it arrives: split into lines, progress redraws filtered.

Whatever its shape (one 100 MB line, binary bytes, an hour of carriage-return
redraws with no newline), output costs time linear in its bytes and bounded
memory:

- lines are found in bytes: "\\n" and "\\r" are never part of a multibyte UTF-8
  character, so no decoding is needed to find them, and a character split
  across chunks stays whole in the bytes of the line being built;
- the line being built is a bytearray, appended to in place (amortized
  constant time a byte: a job writing one byte at a time is linear too);
- a carriage return means that the next visible text starts the line anew, as
  on a terminal, so only what follows the last redraw is kept;
- a line that grows past LINE_LIMIT bytes is passed on in pieces of that size:
  nothing is dropped from the log, and the line never holds more. An
  incremental decoder carries a character cut by a piece's end to the next.

The tail kept with each attempt (Tail) is bounded in lines and in bytes.

Messages are made fit for one line of a terminal here too: printable() escapes
control characters, one_line() also collapses the message to a line (and may
cut it), scrub() masks the secret values in it.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from collections.abc import Iterable

# Control characters other than tab would let a job's output move the cursor,
# recolour or retitle the user's terminal: they are shown escaped instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ESCAPES = {
    code: f"\\x{code:02x}" for code in [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]
}

# A line longer than this many bytes is passed on in pieces of this size. It
# bounds what a line costs in memory (the bytes plus their decoded text: well
# under 1 MB), and a 64 KiB line is still one that grep, less and a terminal
# handle well. It is also the transports' read size, so a huge line costs
# about one piece per chunk read.
LINE_LIMIT = 65536

TAIL_LINES = 20  # lines kept as an attempt's tail
TAIL_BYTES = 4096  # UTF-8 bytes of the whole tail text, at most
TAIL_LINE_BYTES = 1024  # UTF-8 bytes of one line of the tail, at most (cut in the middle)

MASK = "********"  # what a secret value is shown as


def printable(text: str) -> str:
    # Most text has no control character: one regex search tells, at C speed.
    return text.translate(_ESCAPES) if _CONTROL.search(text) else text


def one_line(text: str, limit: int | None = None) -> str:
    """text as one printable line: each run of whitespace (line ends among them)
    one space, none at either end, control characters escaped; longer than
    `limit` characters, cut to that with "..." at the end."""
    line = printable(" ".join(text.split()))
    if limit is None or len(line) <= limit:
        return line
    return line[: max(0, limit - 3)] + "..."


def scrub(text: str, secrets: Iterable[str]) -> str:
    """text with every secret value in it shown as MASK.

    The longest first, so a secret that holds another is masked whole. Scrub
    before one_line(): a secret with line ends or control characters in it no
    longer matches once they are collapsed or escaped, and a cut could leave
    part of one."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


class OutputLines:
    """Turns a stream of output chunks into lines of text and keeps a tail.

    `feed` and `flush` return the lines completed, as a terminal would show
    them: "abc\\r\\n" is "abc", "a\\rb\\r\\n" is "b". Bytes that are not UTF-8
    become U+FFFD. A line longer than `limit` bytes comes out in pieces of
    `limit` bytes (the last one shorter), each as a line of its own.
    """

    def __init__(self, tail_lines: int = TAIL_LINES, limit: int = LINE_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.tail = Tail(tail_lines)
        self._line = bytearray()  # the visible bytes of the line being built
        self._redrawn = False  # a "\r" came since the line's last visible byte
        self._open = False  # a piece of this line was passed on already
        self._decoder = _decoder()  # decodes the pieces of an open line
        self._out: list[str] = []

    def feed(self, data: bytes) -> list[str]:
        """The lines that `data` completes (and pieces of lines too long)."""
        out = self._out = []
        if b"\n" not in data:
            self._take(data)
            return out
        segments = data.split(b"\n")
        self._take(segments[0])
        self._end_line()
        whole = segments[1:-1]  # lines that start and end in this chunk
        if b"\r" not in data and (not whole or max(map(len, whole)) <= self.limit):
            # As most are: short, no redraw. Straight out, and only the last
            # few of them to the tail.
            texts = [segment.decode("utf-8", "replace") for segment in whole]
            out.extend(texts)
            self.tail.add_lines(texts)
        else:
            limit = self.limit
            for segment in whole:
                if len(segment) <= limit:  # no piece: what follows the last redraw
                    segment = segment.rstrip(b"\r")
                    segment = segment[segment.rfind(b"\r") + 1 :]
                    self._keep(segment.decode("utf-8", "replace"), False)
                else:
                    self._take(segment)
                    self._end_line()
        self._take(segments[-1])
        return out

    def flush(self) -> list[str]:
        """The last line, when the output did not end with a newline."""
        out = self._out = []
        if self._line or self._open:
            self._end_line()
        self._redrawn = False
        return out

    def tail_text(self) -> str:
        """The last lines of the output, bounded in lines and bytes: the attempt's tail."""
        return self.tail.text()

    def _take(self, segment: bytes) -> None:
        """Add bytes with no newline to the line being built."""
        first = segment.find(b"\r")
        if first < 0:
            self._append(segment)
            return
        self._append(segment[:first])
        last = segment.rfind(b"\r")
        if last > first:
            # Between the first and the last "\r", only the last visible text
            # counts, unless some text there is long enough to come out in
            # pieces before its redraw: then each one goes through in turn.
            between = segment[first + 1 : last].rstrip(b"\r")
            if len(between) > self.limit:
                for part in between.split(b"\r"):
                    self._redrawn = True
                    self._append(part)
            elif between:
                self._redrawn = True
                self._append(between[between.rfind(b"\r") + 1 :])
        self._redrawn = True
        self._append(segment[last + 1 :])

    def _append(self, data: bytes) -> None:
        if not data:
            return
        line = self._line
        if self._redrawn:
            self._redrawn = False
            line.clear()
            if self._open:
                self._open = False
                self._decoder = _decoder()
        limit = self.limit
        if len(line) + len(data) <= limit:
            line += data
            return
        # Over the limit: out in pieces of exactly `limit` bytes, at most
        # `limit` kept (never empty: a line that ends at a piece's end has
        # no empty piece after it).
        view = memoryview(data)
        start = limit - len(line)
        line += view[:start]
        self._piece(line)
        line.clear()
        while len(data) - start > limit:
            self._piece(view[start : start + limit])
            start += limit
        line += view[start:]

    def _piece(self, raw: bytearray | memoryview) -> None:
        self._keep(self._decoder.decode(raw), self._open)
        self._open = True

    def _end_line(self) -> None:
        if self._open:
            text = self._decoder.decode(self._line, final=True)
        else:
            text = self._line.decode("utf-8", "replace")
        self._keep(text, self._open)
        self._line.clear()
        self._open = self._redrawn = False

    def _keep(self, text: str, continued: bool) -> None:
        self._out.append(text)
        self.tail.add(text, continued)


class _LongLine:
    """A tail line too long to keep whole: its start, its end, and how long it is."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._end_bytes = (limit - 48) // 2  # 48: room for the mark
        self._start = bytearray()  # the first `limit` bytes
        self._end = b""  # the last bytes after those, up to _end_bytes
        self._size = 0

    def add(self, data: bytes) -> None:
        self._size += len(data)
        room = self._limit - len(self._start)
        if room > 0:
            self._start += data[:room]
            data = data[room:]
        if len(data) >= self._end_bytes:
            self._end = data[-self._end_bytes :]
        elif data:
            self._end = (self._end + data)[-self._end_bytes :]

    def text(self) -> str:
        if self._size <= self._limit:
            return self._start.decode("utf-8", "replace")
        keep = self._end_bytes
        head = keep
        while head > 0 and self._start[head] & 0xC0 == 0x80:  # not inside a character
            head -= 1
        end = (bytes(self._start[head:]) + self._end)[-keep:]
        skip = 0
        while skip < len(end) and end[skip] & 0xC0 == 0x80:
            skip += 1
        end = end[skip:]
        cut = self._size - head - len(end)
        return (
            self._start[:head].decode("utf-8", "replace")
            + f" [...{cut:,} bytes cut...] "
            + end.decode("utf-8", "replace")
        )


class Tail:
    """The last lines of the output: at most `lines` lines and `total` UTF-8 bytes.

    A line longer than `line_bytes` keeps its start and its end around a mark
    saying how many bytes were cut; the pieces of a line too long for
    OutputLines make one line here. The newest lines that fit in `total` are
    the tail's text.
    """

    def __init__(
        self, lines: int = TAIL_LINES, total: int = TAIL_BYTES, line_bytes: int = TAIL_LINE_BYTES
    ) -> None:
        if line_bytes < 100:
            raise ValueError("line_bytes must be at least 100")
        self._lines: deque[str | _LongLine] = deque(maxlen=lines)
        self._total = total
        self._line_bytes = line_bytes

    def add(self, text: str, continued: bool = False) -> None:
        """Keep a line; `continued`: it is the next piece of the last line."""
        if self._lines.maxlen == 0:
            return
        if continued and self._lines:
            last = self._lines[-1]
            if isinstance(last, str):
                last = self._lines[-1] = self._long(last)
            last.add(text.encode())
            return
        # A character is at most 4 UTF-8 bytes: a short line needs no measuring.
        if len(text) * 4 <= self._line_bytes or len(text.encode()) <= self._line_bytes:
            self._lines.append(text)
        else:
            self._lines.append(self._long(text))

    def add_lines(self, texts: list[str]) -> None:
        """Keep whole lines (none continues the last)."""
        maxlen = self._lines.maxlen
        for text in texts[-maxlen:] if maxlen else ():
            self.add(text)

    def _long(self, text: str) -> _LongLine:
        line = _LongLine(self._line_bytes)
        line.add(text.encode())
        return line

    def text(self) -> str:
        kept: list[str] = []
        size = 0
        for line in reversed(self._lines):
            text = line if isinstance(line, str) else line.text()
            size += len(text.encode()) + (1 if kept else 0)
            if size > self._total:
                break
            kept.append(text)
        return "\n".join(reversed(kept))

    def __len__(self) -> int:
        return len(self._lines)
