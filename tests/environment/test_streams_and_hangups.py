"""What a real terminal, pipeline or shell does to cloudtask's standard streams
(SPEC section 12): a hang-up, a reader that goes away, a full stdout, a closed
stdin or stderr. Each is a clean end: one line where one can be written, the
documented exit status, and a session that is whole and resumable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import termios
import time
import uuid
from pathlib import Path

import pytest
from tests.support import helpers
from tests.support.processes import live_processes_with
from tests.support.wait import wait_until

from cloudtask.store import meta as keys
from cloudtask.store.reader import StoreReader

JOBS = 6


def marker() -> str:
    """A sleep duration unique to this test, to find its processes by command line."""
    return f"300.{uuid.uuid4().int % 10**9}"


def jobs_input(sleep: str) -> bytes:
    return "".join(f"{sleep}\n" for _ in range(JOBS)).encode()


def only_session() -> Path:
    [session] = [p for p in helpers.sessions_dir().iterdir() if p.name.isdigit()]
    return session


def stored_state(session: Path) -> str:
    with StoreReader.open(session) as store:
        state = store.meta(keys.STATE)
    return "unstarted" if state is None else state


def assert_resume_finishes(session: Path) -> None:
    """The session is whole: a resume runs what is left, every job ok once."""
    result = helpers.cloudtask(f"--resume={session.name}", input=None, timeout=60)
    helpers.assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert helpers.counts(result) == (0, JOBS, 0, 0, 0, JOBS)


def started_in_log(session: Path) -> bool:
    log = session / "log"
    return log.exists() and " started: " in log.read_text()


# -- hang-ups ----------------------------------------------------------------


def make_controlling_terminal() -> None:
    """In the child, after setsid: its stdout (the pty) becomes its terminal."""
    fcntl.ioctl(1, termios.TIOCSCTTY, 0)


@pytest.mark.parametrize("how", ["terminal closed", "SIGHUP sent"])
def test_a_hang_up_aborts_like_sigterm(how: str) -> None:
    sleep = marker()
    master, slave = os.openpty()
    jobs = helpers.work_dir() / "jobs"
    jobs.write_bytes(jobs_input(sleep))
    with jobs.open("rb") as stdin:
        proc = subprocess.Popen(
            [helpers.CLOUDTASK, "--force", "--split=2", "sleep"],
            stdin=stdin,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=make_controlling_terminal,
            cwd=helpers.work_dir(),
        )
    os.close(slave)
    try:
        # Read what it draws, so it never blocks on a full terminal.
        os.set_blocking(master, False)

        def running() -> bool:
            with contextlib.suppress(OSError):  # nothing to read yet
                os.read(master, 65536)
            return len(live_processes_with(f"sleep {sleep}")) == 2

        wait_until(running, 15, "both jobs running")
        if how == "terminal closed":
            os.close(master)  # the kernel hangs up the session whose terminal it was
            master = -1
        else:
            os.kill(proc.pid, signal.SIGHUP)
        status = proc.wait(timeout=30)
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert status == 1
    assert live_processes_with(f"sleep {sleep}") == []
    session = only_session()
    assert stored_state(session) == "aborted"
    log = (session / "log").read_text()
    assert "SIGHUP: aborting" in log
    assert f"resume with: cloudtask --resume={session.name}" in log
    assert "Traceback" not in log
    assert_resume_finishes_quickly(session)


def assert_resume_finishes_quickly(session: Path) -> None:
    # The jobs are long sleeps: the resume runs them with a short one instead
    # of waiting (the command is the session's; the words are the jobs').
    result = helpers.cloudtask(f"--resume={session.name}", "--timeout=1", input=None, timeout=60)
    helpers.assert_no_traceback(result)
    # Every job was pending again: the resume ran each (they time out, by design).
    assert helpers.counts(result) == (JOBS, JOBS, 0, JOBS, 0, 0)


# -- a reader that goes away ---------------------------------------------------


def test_stdout_closed_by_its_reader_aborts_cleanly() -> None:
    """`cloudtask ... | head -1`: the run stops, its jobs with it, and is resumable."""
    sleep = marker()
    proc = subprocess.Popen(
        [helpers.CLOUDTASK, "--force", "--split=2", "sleep"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=helpers.work_dir(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(jobs_input(sleep))
    proc.stdin.close()
    proc.stdout.readline()  # head -1
    wait_until(lambda: len(live_processes_with(f"sleep {sleep}")) == 2, 15, "both jobs running")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    status = proc.wait(timeout=30)
    assert "Traceback" not in err
    assert status == 1, err
    assert "standard output: " in err and "aborting" in err
    assert live_processes_with(f"sleep {sleep}") == []
    session = only_session()
    assert stored_state(session) == "aborted"
    assert f"resume with: cloudtask --resume={session.name}" in (session / "log").read_text()


# -- a full stdout, closed streams ----------------------------------------------


def test_stdout_to_dev_full_is_one_line_and_a_resumable_session() -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [helpers.CLOUDTASK, "--force", "echo"],
            input=b"".join(f"{n}\n".encode() for n in range(1, JOBS + 1)),
            stdout=full,
            stderr=subprocess.PIPE,
            cwd=helpers.work_dir(),
            timeout=30,
            check=False,
        )
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert done.returncode == 1, err
    assert "standard output: No space left on device" in err
    session = only_session()
    # Not a half-made session: it is aborted before any job, and resumable.
    assert stored_state(session) == "aborted"
    assert f"resume with: cloudtask --resume={session.name}" in err
    assert_resume_finishes(session)


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_to_dev_full_is_one_line_and_exit_1(args: list[str]) -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [helpers.CLOUDTASK, *args], stdout=full, stderr=subprocess.PIPE, timeout=30, check=False
        )
    assert done.returncode == 1
    said = done.stderr.decode()
    assert said == "cloudtask: cannot write standard output: No space left on device\n"


def shell(command: str) -> subprocess.CompletedProcess[str]:
    """A shell command line, for what only a shell does to the streams (`<&-`, `2>&-`)."""
    return subprocess.run(
        command,
        shell=True,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=helpers.work_dir(),
    )


def test_closed_stdin_is_one_line_and_exit_2() -> None:
    done = shell(f"exec {helpers.CLOUDTASK} echo <&-")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        "cloudtask: no jobs: standard input is closed; give the jobs on it, one per line"
    )
    sessions = helpers.sessions_dir()
    assert not sessions.exists() or not any(sessions.iterdir())


def test_closed_stderr_runs_and_the_log_has_every_line() -> None:
    done = shell(f"seq {JOBS} | {helpers.CLOUDTASK} --force sh -c 'echo $0; echo warn >&2' 2>&-")
    assert done.returncode == 0, done.stdout
    assert helpers.counts(done) == (0, JOBS, 0, 0, 0, JOBS)
    log = (only_session() / "log").read_text()
    assert log.count("| warn") == JOBS
    assert log.splitlines()[-1] == done.stdout.splitlines()[-1]


def test_closed_stderr_and_a_usage_error_says_it_on_stdout() -> None:
    done = shell(f"echo x | {helpers.CLOUDTASK} --split=zero echo 2>&-")
    assert done.returncode == 2
    assert done.stdout.startswith("cloudtask: --split: not a whole number")


@pytest.mark.parametrize("command", [[""], ["  "], ["", "echo"]])
def test_an_empty_command_is_refused(command: list[str]) -> None:
    result = helpers.cloudtask(*command, input=b"x\n")
    helpers.assert_usage_error(result, "the command is empty")


def test_an_ordinary_one_word_command_still_runs() -> None:
    result = helpers.cloudtask("--force", "echo", input=b"x\n")
    assert result.returncode == 0, result.stderr


def test_a_hang_up_during_the_report_hook_still_ends_with_the_summary() -> None:
    """After the run the loop's handlers are gone: a hang-up there used to end
    the controller at once, with no summary. It interrupts the hook instead."""
    sleep = marker()
    proc = subprocess.Popen(
        [helpers.CLOUDTASK, "--force", f"--report=sh: sleep {sleep}", "true"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=helpers.work_dir(),
    )
    assert proc.stdin is not None
    proc.stdin.write("x\n")
    proc.stdin.close()
    proc.stdin = None  # communicate() would flush it
    wait_until(lambda: len(live_processes_with(f"sleep {sleep}")) == 1, 15, "the job running")
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
    assert proc.returncode == 0, err
    assert helpers.SUMMARY.fullmatch(out.splitlines()[-1]), out
    assert "--report: sh: interrupted" in err
    assert live_processes_with(f"sleep {sleep}") == []


# -- found by review: what follows a lost stdout -----------------------------------


def post_marker_file() -> Path:
    return helpers.work_dir() / f"post-{uuid.uuid4().hex[:8]}"


def test_a_hang_up_after_a_lost_stdout_does_not_skip_the_cleanup() -> None:
    """`cloudtask ... | tee`, then the terminal closes: tee goes first (stdout
    lost: the run aborts), then SIGHUP comes. It is no second interrupt."""
    sleep, done = marker(), post_marker_file()
    proc = subprocess.Popen(
        [helpers.CLOUDTASK, "--force", "--split=2", f"--post=sleep 1; touch {done}", "sleep"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=helpers.work_dir(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(jobs_input(sleep))
    proc.stdin.close()
    wait_until(lambda: len(live_processes_with(f"sleep {sleep}")) == 2, 15, "both jobs running")
    proc.stdout.close()
    wait_until(lambda: "aborting" in (only_session() / "log").read_text(), 15, "aborting logged")
    proc.send_signal(signal.SIGHUP)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 1, err
    assert done.exists(), "--post did not run: the hang-up cut the cleanup short"
    log = (only_session() / "log").read_text()
    assert "again: stopping now" not in log


def test_a_hang_up_under_nohup_is_ignored() -> None:
    """SIGHUP ignored at start (nohup) stays ignored: the run goes on."""
    proc = subprocess.Popen(
        [helpers.CLOUDTASK, "--force", "sleep"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=helpers.work_dir(),
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    assert proc.stdin is not None
    proc.stdin.write("1.5\n")
    proc.stdin.close()
    proc.stdin = None  # communicate() would flush it
    wait_until(lambda: bool(live_processes_with("sleep 1.5")), 15, "the job running")
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert helpers.counts(subprocess.CompletedProcess([], 0, out, err)) == (0, 1, 0, 0, 0, 1)


def test_stdout_lost_once_every_job_ended_leaves_a_finished_session() -> None:
    """The reader goes while --post runs: nothing is left to stop, so the
    session is finished and every job ok: exit 0, not 'aborted'."""
    proc = subprocess.Popen(
        [helpers.CLOUDTASK, "--force", "--post=sleep 2", "true"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=helpers.work_dir(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"x\n")
    proc.stdin.close()
    for line in proc.stdout:
        if b"job 1 ok" in line:
            break
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 0, err
    assert stored_state(only_session()) == "finished"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_lost_stdout_that_another_process_holds_does_not_spin() -> None:
    """A shell holding the same pipe keeps it open: the descriptor must be let
    go of before it is pointed at /dev/null, or the event loop spins on it."""
    post = f"sleep 4.{uuid.uuid4().int % 10**6}"
    pidfile = helpers.work_dir() / "pid"
    script = (
        f"{{ seq 40 | {helpers.CLOUDTASK} --force --split=4 --post='{post}' sh -c 'seq 100000' "
        f"2>/dev/null & echo $! > {pidfile}; wait; }} | head -c 1000 > /dev/null"
    )
    shell = subprocess.Popen(script, shell=True, cwd=helpers.work_dir())
    try:
        wait_until(lambda: bool(live_processes_with(post)), 30, "--post running")
        pid = int(pidfile.read_text())
        before = cpu_seconds(pid)
        time.sleep(2)  # only --post runs: the controller waits
        spent = cpu_seconds(pid) - before
        assert spent < 0.5, f"the controller used {spent:.2f} s of CPU while waiting"
    finally:
        shell.wait(timeout=30)
