"""Running the installed `cloudtask` command (or a task template) as a user would.

Every helper runs a real subprocess with a time limit. The environment is the
test's own (tests/conftest.py has already removed CLOUDTASK_* variables and
pointed CLOUDTASK_SESSIONS at the test's tmp dir), unless `env` is given.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable
CLOUDTASK = str(BIN / "cloudtask") if (BIN / "cloudtask").exists() else shutil.which("cloudtask")
assert CLOUDTASK, "the cloudtask command is not installed"

TIMEOUT = 30

# SPEC section 8: the one form scripts parse; "1 second" may be singular.
SUMMARY = re.compile(
    r"session (?P<id>\d+) \((?P<seconds>\d+) seconds?\): "
    r"(?P<not_ok>\d+)/(?P<total>\d+) !OK - (?P<pending>\d+) pending, "
    r"(?P<timeouts>\d+) timeouts, (?P<errors>\d+) errors, (?P<ok>\d+) OK"
)

# How the console shows one line of a job's output: "local1 job 3 | text".
JOB_OUTPUT = re.compile(r"(?P<worker>\S+) job (?P<job>\d+) \| (?P<text>.*)")


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = b"",
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run argv with `input` on stdin (None: /dev/null); output decoded as text.

    The working directory is the test's tmp dir unless `cwd` is given, so a
    job that makes files by mistake never litters the project.
    """
    done = subprocess.run(
        list(argv),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        env=dict(os.environ if env is None else env),
        cwd=work_dir() if cwd is None else cwd,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", errors="replace"),
        done.stderr.decode("utf-8", errors="replace"),
    )


def cloudtask(
    *args: str,
    input: bytes | None = b"",
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """The installed cloudtask command."""
    return run([CLOUDTASK, *args], input=input, env=env, cwd=cwd, timeout=timeout)


def template(
    path: Path,
    *args: str,
    input: bytes | None = b"",
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """A task template file run with the project's Python."""
    return run([PYTHON, str(path), *args], input=input, env=env, cwd=cwd, timeout=timeout)


def env_with(**variables: str) -> dict[str, str]:
    """The test's environment plus some variables."""
    env = dict(os.environ)
    env.update(variables)
    return env


def lines(text: str) -> list[str]:
    return text.splitlines()


@dataclass(frozen=True)
class Summary:
    id: int
    seconds: int
    not_ok: int
    total: int
    pending: int
    timeouts: int
    errors: int
    ok: int


def summary(result: subprocess.CompletedProcess[str]) -> Summary:
    """The summary line, which must be the last line of standard output."""
    out = lines(result.stdout)
    assert out, f"no output at all; stderr: {result.stderr!r}"
    match = SUMMARY.fullmatch(out[-1])
    assert match, f"last line of stdout is not the summary: {out[-1]!r}"
    return Summary(**{key: int(value) for key, value in match.groupdict().items()})


def counts(result: subprocess.CompletedProcess[str]) -> tuple[int, int, int, int, int, int]:
    """(!OK, total, pending, timeouts, errors, OK) from the summary line."""
    got = summary(result)
    return (got.not_ok, got.total, got.pending, got.timeouts, got.errors, got.ok)


def job_output(stdout: str) -> list[str]:
    """Every line the jobs printed, job by job in input order, each job's lines
    as it printed them: jobs on parallel workers (the local default is a job
    per CPU) reach the console in any order."""
    return [text for _job, texts in sorted(outputs_by_job(stdout).items()) for text in texts]


def outputs_by_job(stdout: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for line in lines(stdout):
        if m := JOB_OUTPUT.fullmatch(line):
            found.setdefault(int(m["job"]), []).append(m["text"])
    return found


def split_shown(stdout: str) -> int:
    """The split a session reported in its first line ("..., split N, ...")."""
    match = re.search(r"\bsplit (\d+)\b", stdout)
    assert match, f"no 'split N' in the output: {stdout!r}"
    return int(match[1])


def sessions_dir() -> Path:
    return Path(os.environ["CLOUDTASK_SESSIONS"])


def work_dir() -> Path:
    """The test's tmp dir (tests/conftest.py puts CLOUDTASK_SESSIONS inside it)."""
    return sessions_dir().parent


def session_ids(sessions: Path | None = None) -> list[int]:
    sessions = sessions_dir() if sessions is None else sessions
    if not sessions.is_dir():
        return []
    return sorted(int(entry.name) for entry in sessions.iterdir() if entry.name.isdigit())


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def assert_usage_error(
    result: subprocess.CompletedProcess[str], *needles: str, one_line: bool = True
) -> str:
    """Exit 2, no traceback, an error on stderr containing every needle; nothing ran."""
    assert_no_traceback(result)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err, "no error message on stderr"
    if one_line:
        assert len(err.splitlines()) == 1, f"error is not one line: {err!r}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert not SUMMARY.search(result.stdout), "a session ran"
    assert job_output(result.stdout) == [], "a job ran"
    return err
