"""The standard streams of a command: opened when closed at start, written
without ever raising a traceback, and what Ctrl-C and a kill mean around a run."""

from __future__ import annotations

import os
import signal
import sys

from ..console import silence_stdout
from ..errors import ExitStatus, OutputError


def interrupt_on_kill() -> None:
    """Outside the run's own handling, a kill or a hang-up is an interrupt, as
    Ctrl-C is: before the run, a session that has not run is removed, not left
    half-made; after it, the session is saved and the resume hint printed."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(signum, signal.default_int_handler)


def open_closed_streams() -> None:
    """Standard streams closed at start (`<&-`, `2>&-`) are opened on /dev/null.

    Otherwise the first files the run opens (its lock, its store) would take
    their numbers, and whatever writes to "stderr" would write into them.
    Python has already set sys.stdin/stdout/stderr to None for them: that stays,
    and says that they are closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


def say_error(text: str) -> None:
    """An error on stderr; where stderr is closed or broken, on stdout; where
    neither takes it, nowhere (the exit status still tells)."""
    for stream in (sys.stderr, sys.stdout):
        if stream is None:
            continue
        try:
            stream.write(text)
            stream.flush()
            return
        except OSError:
            continue


def out(text: str) -> None:
    """Print a line on stdout, now. A stdout that cannot take it (/dev/full) is
    an OutputError; one whose reader is gone (| head) a BrokenPipeError."""
    write_stdout(text + "\n")


def write_stdout(text: str) -> None:
    """Write on stdout, now; its errors as out() says."""
    if sys.stdout is None:
        return  # closed from the start: nobody is reading
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        silence_stdout()
        raise OutputError(f"cannot write standard output: {exc.strerror or exc}") from None


def flush_stdout(prog: str, status: int) -> int:
    """Write out what stdout still buffers now: a full stdout (/dev/full) is then
    one error line and exit status 1, not the interpreter's complaint at exit."""
    if sys.stdout is None:
        return status
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()  # the reader wanted no more
    except OSError as exc:
        silence_stdout()
        say_error(f"{prog}: cannot write standard output: {exc.strerror or exc}\n")
        return max(status, ExitStatus.NOT_OK)
    return status


def nothing_left_to_interrupt() -> None:
    """From here to the exit there is nothing a Ctrl-C could stop: it is ignored,
    so that the exit status stays the one the summary line gives (a
    KeyboardInterrupt at interpreter exit would end the process by SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
