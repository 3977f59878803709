"""Values of the digest as people read them: times, durations, dollars, commands."""

from __future__ import annotations

from datetime import UTC, datetime

from ..console import plural
from ..output import printable
from .model import Attempt, Counts

COMMAND_SHOWN = 200  # characters of a command shown in text


def iso(when: float | None) -> str | None:
    """ISO 8601 in UTC, to the millisecond: 2026-05-01T12:00:00.000Z."""
    if when is None:
        return None
    moment = datetime.fromtimestamp(when, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clock(when: float | None, day: float | None = None) -> str:
    """A time for people: 2026-05-01 12:00:00 UTC; just 12:00:00 on the same day as `day`."""
    if when is None:
        return "-"
    moment = datetime.fromtimestamp(when, UTC)
    if day is not None and moment.date() == datetime.fromtimestamp(day, UTC).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float | None) -> str:
    """A duration for people: 0.42 s, 42 s, 12 min 05 s, 3 h 07 min."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s"
    whole = round(seconds)
    if whole < 120:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def size(count: int | None) -> str:
    """Bytes for people: 900 B, 1.5 KiB, 3.1 MiB, 2.0 GiB."""
    if count is None:
        return "-"
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def dollars(amount: float | None) -> str:
    if amount is None:
        return "unknown"
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def shorten(text: str, width: int = COMMAND_SHOWN) -> str:
    """One line, control characters escaped, cut to `width` characters."""
    shown = printable(text)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def how_ended(attempt: Attempt) -> str:
    """exit 1, killed by signal 9, timed out, lost (end unknown), ..."""
    if attempt.outcome == "running":
        return "running"
    if attempt.outcome == "timeout":
        return "timed out"
    if attempt.outcome == "lost":
        return "lost (worker failed)" if attempt.ended is not None else "lost (end unknown)"
    if attempt.outcome == "stopped":
        return "stopped by an abort"
    if attempt.signal is not None:
        return f"killed by signal {attempt.signal}"
    if attempt.exit_status is not None:
        return f"exit {attempt.exit_status}"
    return attempt.outcome


def counts_text(counts: Counts) -> str:
    return (
        f"{plural(counts.total, 'job')}: {counts.ok} ok, {counts.failed} failed, "
        f"{counts.timeout} timeout, {counts.lost} lost, {counts.pending} pending, "
        f"{counts.running} running"
    )
