"""cloudtask's two standard streams on real terminals and pipes (SPEC section 12).

The live view is drawn only on stderr's terminal; stdout gets plain, whole
lines wherever it goes: a pipe, another terminal, or `| tee` back onto the
very terminal the picture is on. A stream that fails mid-run (full, its
reader gone, its terminal hung up) never causes a traceback, and the session
log still gets every line.

Terminals are real: ptys from os.openpty(), and tmux (a private server per
test) where what a person would see on the screen and in its scrollback is
the question.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.helpers import CLOUDTASK, SUMMARY, sessions_dir, work_dir
from tests.support.processes import live_processes_with

JOBS = 30
SPLIT = 3

# The event lines of a run of job.sh, whole (a line glued to another fails).
EVENT = re.compile(
    rf"session 1: {JOBS} jobs to run, split {SPLIT} \(local x{SPLIT}\), log \S+"
    r"|local\d job (?P<job>\d+) "
    r"(?P<what>started: sh \S+/job\.sh \d+|\| out \d+|ok \(exit 0 after [\d.]+ s\))"
)
# The lines of the live view's picture, whole.
PICTURE = re.compile(
    r"session 1: \d+/\d+ done - \d+ ok, \d+ failed, \d+ timeouts?, \d+ lost"
    r"|\d+\.\d jobs/s, elapsed \d+:\d\d, ETA (\d+:\d\d|\?); \d+ running, \d+ pending"
    r"|\d+ workers?|starting \d+ workers?|no worker left"
    r"|  local\d  (job \d+: sh \S+/job\.sh \d+|connecting|cleaning up"
    r"|idle, waiting for jobs that may come back)"
)
# Control sequences a terminal acts on: CSI, ESC 7/8/D/E/M, OSC.
CONTROL = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[78DEM]|\][^\x07\x1b]*(\x07|\x1b\\))")


def job_script() -> Path:
    """A short job. From job 10 on, jobs wait for the file `go` when it is not
    there yet (a test that wants a quiet moment mid-run removes it first)."""
    script = work_dir() / "job.sh"
    go = work_dir() / "go"
    go.touch()
    script.write_text(
        f'sleep 0.1\n[ "$1" -lt 10 ] || while [ ! -e {go} ]; do sleep 0.05; done\necho "out $1"\n'
    )
    return script


def jobs_input(count: int = JOBS) -> bytes:
    return "".join(f"{n}\n" for n in range(1, count + 1)).encode()


def assert_every_event_once(lines: list[str]) -> None:
    """Each job's three event lines are there, once each and whole."""
    seen: dict[str, list[int]] = {}
    for line in lines:
        if (match := EVENT.fullmatch(line)) and match["job"]:
            seen.setdefault(match["what"].split()[0], []).append(int(match["job"]))
    assert sorted(seen) == ["ok", "started:", "|"], seen
    for jobs in seen.values():
        assert sorted(jobs) == list(range(1, JOBS + 1)), seen


def session_log() -> str:
    [session] = [p for p in sessions_dir().iterdir() if p.name.isdigit()]
    return (session / "log").read_text()


def assert_log_ends_with_the_summary() -> None:
    log = session_log()
    assert "Traceback" not in log, log
    assert SUMMARY.fullmatch(log.splitlines()[-1]), log


# -- a pty for stderr ----------------------------------------------------------


def sized_pty(rows: int = 30, columns: int = 100) -> tuple[int, int]:
    """A pty (master, slave) with a window size, as a terminal emulator makes."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


class Drain(threading.Thread):
    """Reads a pty master (or a pipe) until its other end is closed, keeping it all."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.data = bytearray()
        self.start()

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: every slave fd is closed
                return
            if not chunk:
                return
            self.data += chunk

    def text(self) -> str:
        return self.data.decode(errors="replace")


@dataclass
class Ran:
    returncode: int
    stdout: str
    terminal: str  # what was drawn on stderr's terminal


def run_with_stderr_on_a_pty(stdout_on_a_pty: bool) -> Ran:
    """cloudtask with stderr on a pty, and stdout on a pipe or on another pty."""
    master, slave = sized_pty()
    out_master, out_slave = sized_pty() if stdout_on_a_pty else os.pipe()
    try:
        with subprocess.Popen(
            [CLOUDTASK, "--force", f"--split={SPLIT}", "sh", str(job_script())],
            stdin=subprocess.PIPE,
            stdout=out_slave,
            stderr=slave,
            cwd=work_dir(),
        ) as proc:
            os.close(slave)
            os.close(out_slave)
            slave = out_slave = -1
            terminal, out = Drain(master), Drain(out_master)
            try:
                assert proc.stdin is not None
                proc.stdin.write(jobs_input())
                proc.stdin.close()
                returncode = proc.wait(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
        terminal.join(5)
        out.join(5)
    finally:
        for fd in (master, slave, out_master, out_slave):
            if fd >= 0:
                os.close(fd)
    # A terminal shows "\n" as "\r\n" (onlcr): the same line.
    return Ran(returncode, out.text().replace("\r\n", "\n"), terminal.text())


@pytest.mark.parametrize("stdout", ["a pipe", "another terminal"])
def test_stdout_gets_plain_whole_lines_and_the_picture_stays_on_stderr(stdout: str) -> None:
    ran = run_with_stderr_on_a_pty(stdout_on_a_pty=stdout == "another terminal")

    assert ran.returncode == 0, ran
    lines = ran.stdout.splitlines()
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", ran.stdout), repr(ran.stdout)
    for line in lines[:-1]:
        assert EVENT.fullmatch(line), (line, ran.stdout)
    assert SUMMARY.fullmatch(lines[-1]), ran.stdout
    assert_every_event_once(lines)
    # The picture is on stderr's terminal, and no event line is.
    shown = CONTROL.sub("", ran.terminal)
    assert f"session 1: {JOBS}/{JOBS} done - {JOBS} ok" in shown, repr(ran.terminal)
    assert "started:" not in shown and "| out" not in shown, repr(ran.terminal)


def test_no_worker_left_is_never_shown_before_a_job_started() -> None:
    ran = run_with_stderr_on_a_pty(stdout_on_a_pty=False)

    assert ran.returncode == 0, ran
    shown = CONTROL.sub("", ran.terminal)
    a_job = re.search(r"\b[1-9]\d* running|session 1: [1-9]\d*/\d+ done", shown)
    assert a_job, repr(shown)
    before = shown[: a_job.start()]
    assert "no worker left" not in before, repr(before)
    assert f"starting {SPLIT} workers" in before, repr(before)
    # Once every worker is done, it says so.
    assert "no worker left" in shown[a_job.start() :], repr(shown)


# -- the run in tmux, its output through tee onto the same screen ---------------


class Tmux:
    """A tmux server of its own with one window, running one shell command."""

    def __init__(self, command: str, columns: int = 160, rows: int = 30) -> None:
        self.socket = f"ct-{uuid.uuid4().hex[:8]}"
        self.tmux(
            "new-session", "-d", "-x", str(columns), "-y", str(rows),
            f"{command}; echo EXIT=$?; sleep 60",
        )  # fmt: skip
        self.path = self.tmux("display-message", "-p", "#{socket_path}").strip()

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-f", os.devnull, "-L", self.socket, *args],
            check=True,
            capture_output=True,
            text=True,
            cwd=work_dir(),
        )
        return done.stdout

    def scrollback(self) -> str:
        """The screen and everything that scrolled off it, as a person would read it."""
        return self.tmux("capture-pane", "-p", "-S", "-", "-E", "-")

    def wait_for(self, pattern: str, limit: float = 20) -> None:
        deadline = time.monotonic() + limit
        while not re.search(pattern, self.tmux("capture-pane", "-p"), re.M):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never shown:\n{self.scrollback()}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False)
        Path(self.path).unlink(missing_ok=True)  # the server leaves it behind


@pytest.fixture
def tmux() -> Iterator[list[Tmux]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/setup installs it)")
    made: list[Tmux] = []
    yield made
    for one in made:
        one.close()


@pytest.mark.parametrize("resized", [False, True], ids=["steady", "resized mid-run"])
def test_stdout_through_tee_onto_the_same_terminal_leaves_one_clean_picture(
    tmux: list[Tmux], resized: bool
) -> None:
    """`cloudtask ... | tee FILE`: tee writes the event lines at the cursor of
    the terminal the picture is drawn on, whenever it likes. The scrollback
    must read as the event lines, whole and once each, then the last picture
    once, then the summary: no stale picture, no line glued to a picture line.

    Resized: the terminal drops its margins when its size changes, and a line
    written before the picture is redrawn (a few ms) can land on it, which no
    program can prevent; so the resizes happen while the jobs are quiet."""
    copy = work_dir() / "stdout"
    command = (
        f"seq {JOBS} | {shlex.quote(CLOUDTASK)} --force --split={SPLIT} "
        f"sh {shlex.quote(str(job_script()))} | tee {shlex.quote(str(copy))}"
    )
    if resized:
        (work_dir() / "go").unlink()  # jobs 10 to 12 wait
    screen = Tmux(command)
    tmux.append(screen)
    if resized:
        screen.wait_for(r"^session 1: 9/30 done(.|\n)*; 3 running")
        time.sleep(0.3)
        for columns, rows in ((100, 20), (140, 40)):
            screen.tmux("resize-window", "-x", str(columns), "-y", str(rows))
            time.sleep(0.5)
            # The picture is in the bottom rows of the new screen again.
            shown = screen.tmux("capture-pane", "-p").splitlines()
            assert len(shown) == rows, shown
            assert shown[-1].startswith("  local3  job "), shown
            assert shown[-6].startswith("session 1: 9/30 done"), shown
        (work_dir() / "go").touch()
    screen.wait_for("^EXIT=")

    lines = [line.rstrip() for line in screen.scrollback().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    assert lines[-1] == "EXIT=0", lines
    assert SUMMARY.fullmatch(lines[-2]), lines
    text = "\n".join(lines)
    for line in lines[:-2]:
        assert not line or EVENT.fullmatch(line) or PICTURE.fullmatch(line), (line, text)
    assert_every_event_once(lines)
    # One picture in all the scrollback, the last one, right above the summary.
    pictures = [
        n for n, line in enumerate(lines) if line.startswith("session 1: ") and " done - " in line
    ]
    assert len(pictures) == 1, text
    assert lines[pictures[0]].startswith(f"session 1: {JOBS}/{JOBS} done - {JOBS} ok"), text
    # tee may still be copying the last event lines when the picture is given
    # back: they come after it, each whole (a race no program can avoid).
    below = lines[pictures[0] : -2]
    assert all(PICTURE.fullmatch(line) or EVENT.fullmatch(line) for line in below), text
    # tee's copy of stdout: the plain lines alone.
    stdout = copy.read_text()
    assert "\x1b" not in stdout
    assert SUMMARY.fullmatch(stdout.splitlines()[-1]), stdout
    assert all(EVENT.fullmatch(line) for line in stdout.splitlines()[:-1]), stdout


# -- streams that fail mid-run ---------------------------------------------------


def test_stdout_to_dev_full_is_no_traceback_and_a_whole_log() -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [CLOUDTASK, "--force", f"--split={SPLIT}", "sh", str(job_script())],
            input=jobs_input(6),
            stdout=full,
            stderr=subprocess.PIPE,
            cwd=work_dir(),
            timeout=20,
            check=False,
        )
    err = done.stderr.decode()
    assert "Traceback" not in err, err
    # Whether the run aborts (and its exit status) is the runner's decision on
    # a lost stdout: only the log is asserted here.
    assert_log_ends_with_the_summary()


def test_stdout_pipe_closed_by_its_reader_is_no_traceback_and_a_whole_log() -> None:
    with subprocess.Popen(
        [CLOUDTASK, "--force", f"--split={SPLIT}", "sh", str(job_script())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work_dir(),
    ) as proc:
        try:
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stderr is not None
            proc.stdin.write(jobs_input())
            proc.stdin.close()
            proc.stdout.readline()  # | head -1
            proc.stdout.close()
            err = proc.stderr.read().decode()
            # The process ends: soon with the abort on a lost stdout (the
            # runner's), else once the jobs are done; well within the limit.
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "Traceback" not in err, err
    assert_log_ends_with_the_summary()


def test_stderr_pipe_closed_by_its_reader_is_no_traceback_and_the_abort_goes_on() -> None:
    """The reader of stderr is gone when SIGTERM's warning is written: the
    warning is lost, the abort it announces is not."""
    sleep = f"300.{uuid.uuid4().int % 10**9}"
    with subprocess.Popen(
        [CLOUDTASK, "--force", f"--split={SPLIT}", "sleep"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work_dir(),
    ) as proc:
        try:
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stderr is not None
            proc.stdin.write(f"{sleep}\n".encode() * 6)
            proc.stdin.close()
            proc.stderr.close()
            deadline = time.monotonic() + 15
            while len(live_processes_with(f"sleep {sleep}")) < SPLIT:
                assert time.monotonic() < deadline, "the jobs never started"
                time.sleep(0.05)
            out = Drain(proc.stdout.fileno())
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)  # without the abort, the jobs would sleep on
            out.join(5)
        finally:
            if proc.poll() is None:
                proc.kill()
            for pid in live_processes_with(f"sleep {sleep}"):
                os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in out.text(), out.text()
    assert SUMMARY.fullmatch(out.text().splitlines()[-1]), out.text()
    assert "SIGTERM: aborting" in session_log()
    # The log says that stderr went, and why: its warnings are only there.
    assert "warning: standard error: Broken pipe: warnings are in this log only" in session_log()
    assert_log_ends_with_the_summary()


def test_a_terminal_that_hangs_up_under_the_live_view_is_no_traceback() -> None:
    """stderr's terminal goes away while the picture is drawn on it (EIO on
    every write): drawing stops, the run goes on to its end (only a lost
    stdout stops it), and stdout and the log end with the summary."""
    master, slave = sized_pty()
    try:
        with subprocess.Popen(
            [CLOUDTASK, "--force", f"--split={SPLIT}", "sh", str(job_script())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=slave,
            cwd=work_dir(),
        ) as proc:
            os.close(slave)
            slave = -1
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(jobs_input())
                proc.stdin.close()
                wait_for_a_picture(master, proc)
                os.close(master)  # the terminal is closed: the pty hangs up
                master = -1
                out = proc.stdout.read().decode()
                returncode = proc.wait(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
    assert "Traceback" not in out, out
    assert returncode == 0, out
    assert SUMMARY.fullmatch(out.splitlines()[-1]), out
    assert_every_event_once(out.splitlines())
    assert_log_ends_with_the_summary()


def wait_for_a_picture(master: int, proc: subprocess.Popen[bytes]) -> None:
    os.set_blocking(master, False)
    drawn = b""
    deadline = time.monotonic() + 15
    while b"jobs/s" not in drawn:
        assert time.monotonic() < deadline and proc.poll() is None, "no picture drawn"
        try:
            drawn += os.read(master, 65536)
        except BlockingIOError:
            time.sleep(0.02)
