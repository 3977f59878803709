"""Security properties of cloudtask, end to end, as a user (or an attacker) sees them.

Each test checks one property on real processes: cloudtask run as a command,
real sshd test hosts (tests/support/hosts.py), and the Hub API test server whose
launches start real test hosts (tests/support/hubserver.py, tests/support/testcloud.py).

1. Session directories are 0700 and their files 0600, whatever the umask.
2. No secret reaches the store, a log, a digest, a hook, the process table or a worker.
3. A host key other than the trusted one is refused, in one line naming the host.
4. The session key leaves authorized_keys as it was and is never written to disk.
5. A job's output cannot send control sequences to the user's terminal.

Beyond these: test_a_local_job_gets_no_secret_from_the_environment (2. with
this machine as the worker), and test_a_job_command_cannot_drive_the_terminal
(5. for a job's command, its input line, which the event lines show).

Each test also shows that its checks can fail, with a negative control: a copy
of the session made readable, secrets seen where they are allowed (cloudtask's
own command line, from the worker too), a run with the right host key that
works, a key file made during the run and the key a SIGKILL leaves behind,
the job's raw output in the same kind of terminal. Where a check cannot poll
reliably (a process or a file mode that lasts milliseconds), an audit hook
loaded into cloudtask's Python through PYTHONPATH (SITECUSTOMIZE) records
what happens as it happens.

Four properties failed when these tests were written (a store created 0644
for an instant; secrets in the environment inherited by the compiler that
importing asyncssh runs; the SMTP password reaching local jobs; an input line
escaping unescaped to the terminal). They were fixed; the tests now hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest
from tests.support import helpers
from tests.support.hosts import Host, TestHosts
from tests.support.processes import stop_watchdogs
from tests.support.ssh import (
    AUTHORIZED_KEYS,
    CLOUDTASK,
    KeysSnapshot,
    env_for,
    starts,
)
from tests.support.testcloud import Cloud
from tests.support.wait import wait_until

from cloudtask.errors import SessionError
from cloudtask.store.reader import ReadError, StoreReader

LOGALYZER = str(Path(CLOUDTASK).with_name("cloudtask-logalyzer"))
REPO = Path(__file__).resolve().parents[2]
APIKEY = "hub-key-security-" + secrets.token_hex(8)
SESSION_KEY_COMMENT = "cloudtask-session-"

# A job that records where it ran and sleeps as long as its second argument
# says ("wait": until a file `go` is beside the script, at most 30 s). A job
# whose second argument is "fail" fails.
MARKING_JOB = r"""#!/bin/sh
here=$(dirname "$0")
addr=$(echo "$SSH_CONNECTION" | cut -d' ' -f3)
echo "start $1 $addr" >> "$here/marks"
case "$2" in
  fail) exit 1 ;;
  wait) n=0; while [ ! -e "$here/go" ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done ;;
  "") ;;
  *) sleep "$2" ;;
esac
echo "job $1 done"
echo "end $1 $addr" >> "$here/marks"
"""


# --- running cloudtask ---------------------------------------------------------------------


def with_umask_000(argv: Sequence[str]) -> list[str]:
    """argv run with umask 000 (the same process: exec keeps the pid)."""
    return ["/bin/sh", "-c", 'umask 000; exec "$@"', "umask000", *argv]


@dataclass
class Started:
    """A cloudtask process running in the background; its output goes to files."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def result(self) -> subprocess.CompletedProcess[str]:
        assert self.process.returncode is not None
        return subprocess.CompletedProcess(
            self.process.args, self.process.returncode, self.stdout(), self.stderr()
        )


@contextlib.contextmanager
def started(
    argv: Sequence[str], env: dict[str, str], stdin: bytes, tmp: Path, name: str = "run"
) -> Iterator[Started]:
    """Start argv in a process session of its own; SIGKILL its group if still running at exit."""
    (tmp / f"{name}.in").write_bytes(stdin)
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    with (tmp / f"{name}.in").open("rb") as i, out.open("wb") as o, err.open("wb") as e:
        process = subprocess.Popen(
            list(argv), stdin=i, stdout=o, stderr=e, env=env, cwd=tmp, start_new_session=True
        )
    try:
        yield Started(process, out, err)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_for(run: Started, timeout: float, while_running: Callable[[], None] = lambda: None) -> int:
    """Wait for the process to end, calling while_running meanwhile; its exit status."""
    deadline = time.monotonic() + timeout
    while run.process.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"cloudtask still running after {timeout} s:\n{run.stdout()}")
        while_running()
        time.sleep(0.05)
    while_running()
    return run.process.returncode


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def logalyzer(*args: str, umask_000: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [LOGALYZER, *args]
    result = helpers.run(with_umask_000(argv) if umask_000 else argv, timeout=30)
    helpers.assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    return result


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# Loaded by every Python process of a run (cloudtask, its watchdog) through PYTHONPATH,
# an audit hook that sees what no polling could miss, however briefly it lasts:
# each process started (command line, and the environment the child gets), and
# the mode of each SQLite database file the moment it is opened (created).
SPAWN_LOG = "SECURITY_TEST_SPAWN_LOG"
SQLITE_LOG = "SECURITY_TEST_SQLITE_LOG"
SITECUSTOMIZE = f"""
import json
import os
import sys

_SPAWNS = os.environ.get({SPAWN_LOG!r})
_OPENS = os.environ.get({SQLITE_LOG!r})
_opening = []


def _text(value):
    return os.fsdecode(value) if isinstance(value, (str, bytes, os.PathLike)) else str(value)


def _write(path, record):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as log:
        log.write(json.dumps(record) + "\\n")


def _spawned(argv, env):
    argv = [argv] if isinstance(argv, (str, bytes, os.PathLike)) else list(argv or ())
    env = dict(os.environ if env is None else env)
    record = {{
        "parent": os.getpid(),
        "argv": [_text(word) for word in argv],
        "env": {{_text(k): _text(v) for k, v in env.items()}},
    }}
    _write(_SPAWNS, record)


def _hook(event, args):
    if _SPAWNS and event == "subprocess.Popen":
        _spawned(args[1], args[3])
    elif _SPAWNS and event in ("os.exec", "os.posix_spawn"):
        _spawned(args[1], args[2])
    elif _SPAWNS and event == "os.system":
        _spawned([args[0]], None)
    elif _OPENS and event == "sqlite3.connect":
        _opening.append(_text(args[0]))
    elif _OPENS and event == "sqlite3.connect/handle" and _opening:
        path = _opening.pop()
        if path.startswith("file:"):
            path = path[len("file:"):].split("?")[0]
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = None
        _write(_OPENS, {{"path": os.path.abspath(path), "mode": mode}})


if _SPAWNS or _OPENS:
    sys.addaudithook(_hook)
"""


def instrumented(tmp: Path, env: dict[str, str]) -> dict[str, str]:
    """env with the audit hook (SITECUSTOMIZE) and the project on PYTHONPATH, logs in tmp."""
    python_path = tmp / "python"
    python_path.mkdir(exist_ok=True)
    (python_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    paths = [*filter(None, [os.environ.get("PYTHONPATH")]), str(REPO), str(python_path)]
    return env | {
        "PYTHONPATH": os.pathsep.join(paths),
        SPAWN_LOG: str(tmp / "spawned.jsonl"),
        SQLITE_LOG: str(tmp / "sqlite-opens.jsonl"),
    }


def log_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[Callable[..., Cloud]]:
    """clouds(apikey) makes a test cloud; every one is closed, and must be empty, at the end."""
    made: list[Cloud] = []

    def make(apikey: str = APIKEY) -> Cloud:
        cloud = Cloud(tmp_path, apikey=apikey)
        made.append(cloud)
        return cloud

    yield make
    left = [instance for cloud in made for instance in cloud.close()]
    assert left == [], f"test hosts of launched instances left running: {left}"


def authorize_cloud_key(hosts: TestHosts, cloud: Cloud) -> None:
    """The host also lets in the cloud's key, as a user's own server would."""
    keys = hosts.run_dir / "client_keys"
    keys.write_text(keys.read_text() + cloud.backend.public_key + "\n")


# --- 1. private session files ----------------------------------------------------------------


def not_private(top: Path) -> list[str]:
    """Everything under top (top included) that is not a 0700 directory or a 0600 file."""
    problems = []
    for path in [top, *sorted(top.rglob("*"))]:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue  # gone meanwhile (a temporary file)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            if mode != 0o700:
                problems.append(f"{path} is a directory of mode {mode:04o}")
        elif stat.S_ISREG(info.st_mode):
            if mode != 0o600:
                problems.append(f"{path} is a file of mode {mode:04o}")
        else:
            problems.append(f"{path} is neither a file nor a directory ({info.st_mode:o})")
    return problems


class StoreCreatedReadable(AssertionError):
    """The session store, or its journal, was readable by others for a moment."""


def store_window_only(problems: Sequence[str]) -> bool:
    """Whether every problem is the store (or its journal) made 0644 when created."""
    store = re.compile(r"/store\.sqlite(-journal|-wal|-shm)? (is a file of|was) mode 0644\b")
    return all(store.search(problem) for problem in problems)


def test_session_files_are_private_even_with_umask_000(
    clouds: Callable[..., Cloud],
    make_hosts: Callable[[int], TestHosts],
    tmp_path: Path,
    home: Path,
    authorized_keys: KeysSnapshot,
) -> None:
    """Modes checked all along the run (polling, and each store opening as it happens),
    at its end, and after cloudtask-logalyzer --html; cloudtask and logalyzer run with
    umask 000."""
    cloud = clouds()
    mine = make_hosts(1)
    authorize_cloud_key(mine, cloud)
    sessions = helpers.sessions_dir()
    assert not sessions.exists()
    script = write_script(tmp_path / "job.sh", MARKING_JOB)
    argv = [
        CLOUDTASK,
        "--force",
        *cloud.options(),
        f"--workers={mine[0].login}",  # a pre-launched worker, pinned in known_hosts
        "--split=2",  # and a launched one, pinned in hosts/ID
        "--report=sh: true",  # timeline.svg
        str(script),
    ]
    env = instrumented(tmp_path, env_for(home) | {"CLOUDTASK_HUB_APIKEY": APIKEY})
    session = sessions / "1"
    expected_while_running = [
        "lock",
        "log",
        "store.sqlite",
        "store.sqlite-wal",
        "known_hosts",
        "watchdog.log",
    ]
    while_running: set[str] = set()

    def check() -> None:
        if sessions.exists():
            while_running.update(not_private(sessions))

    def jobs_running() -> bool:
        check()
        return len(starts(tmp_path)) == 2

    with started(with_umask_000(argv), env, b"1 wait\n2 wait\n", tmp_path) as run:
        wait_until(jobs_running, 60, "both jobs running")
        wait_until(lambda: len(list((session / "workers").iterdir())) == 2, 10, "2 worker logs")
        wait_until(lambda: any((session / "hosts").glob("*")), 10, "the launched host pinned")
        ours = stored_session_keys(session)  # the pre-launched worker's session key
        check()
        present = {str(p.relative_to(session)) for p in session.rglob("*")}
        (tmp_path / "go").touch()
        status = wait_for(run, 60, check)
    assert status == 0, run.stdout() + run.stderr()
    assert set(expected_while_running) <= present, present
    assert (session / "timeline.svg").is_file()  # --report made it
    at_end = not_private(sessions)

    logalyzer("--html", "1", umask_000=True)
    stop_watchdogs(sessions)  # its log is complete
    after_logalyzer = not_private(sessions)
    for name in ("report.html", "timeline.svg", "watchdog.log", "known_hosts"):
        assert (session / name).is_file(), name
    assert "the controller destroyed every instance" in (session / "watchdog.log").read_text()
    opened = [
        record
        for record in log_records(Path(env[SQLITE_LOG]))
        if Path(str(record["path"])).is_relative_to(sessions)
    ]
    assert opened, "the audit hook saw no store opened"
    at_open = [
        f"{record['path']} was mode {record['mode']:04o} when opened"
        for record in opened
        if record["mode"] != 0o600
    ]

    lasting = at_end + after_logalyzer
    assert not lasting, "\n".join(lasting)
    assert ours, "no session key in the store while the run went on"
    assert_keys_file_as_before(authorized_keys, ours)
    # Negative control: in a private copy of the session, the check sees exactly the
    # file and the directory made readable.
    scratch = tmp_path / "scratch"
    shutil.copytree(sessions, scratch)
    for path in [scratch, *scratch.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    (scratch / "1" / "log").chmod(0o644)
    (scratch / "1" / "workers").chmod(0o755)
    assert [problem.split()[0] for problem in not_private(scratch)] == [
        str(scratch / "1" / "log"),
        str(scratch / "1" / "workers"),
    ], not_private(scratch)
    transient = sorted(while_running) + at_open
    shown = "\n".join(dict.fromkeys(transient))
    if transient and store_window_only(transient):
        raise StoreCreatedReadable(shown)
    assert not transient, shown


# --- 2. secrets --------------------------------------------------------------------------------

SMTP_PASSWORD = "smtp-pw-" + secrets.token_hex(8)

# A libcloud driver for the test Hub that needs a secret and a token besides the
# key, as real drivers do; it knows them only by their digests.
SECRET_DRIVER = """
import hashlib

from tests.support.libcloud_driver import CloudtaskTestDriver


def _digest(text):
    return hashlib.sha256(str(text).encode()).hexdigest()


class SecretTestDriver(CloudtaskTestDriver):
    def __init__(self, key, secret, url, token, **kwargs):
        if _digest(secret) != {secret!r} or _digest(token) != {token!r}:
            raise ValueError("the secret or the token is not the one expected")
        super().__init__(key, url=url, **kwargs)
"""

# The job on the worker: its environment, and every process's command line as
# the worker sees it (a line each: pid TAB command line, its NULs and newlines as
# spaces), then a line of output of its own.
SECRETS_JOB = r"""#!/bin/sh
out=$(dirname "$0")
env > "$out/env.$1"
for p in /proc/[0-9]*; do
  printf '%s\t' "${p#/proc/}"; tr '\0\n' '  ' < "$p/cmdline" 2>/dev/null; echo
done > "$out/cmdlines.$1"
echo "canary $1 CANARY-7f3e"
sleep 1
"""


class EnvironmentLeak(AssertionError):
    """Secrets in the environment of processes cloudtask started (not in command lines)."""


@dataclass
class ProcessTable:
    """What the process table showed while cloudtask ran, its own processes apart."""

    sessions: Path
    controller: int
    secrets: Sequence[str]
    leaks: list[tuple[str, str]] = field(default_factory=list)  # (cmdline or environ, what)
    watchdogs: set[int] = field(default_factory=set)
    controller_seen: bytes = b""  # its command line and environment (excluded from the check)
    controller_cmdline: bytes = b""
    watchdog_cmdlines: set[bytes] = field(default_factory=set)

    def scan(self) -> None:
        marker = f"CLOUDTASK_SESSIONS={self.sessions}".encode()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            pid = int(entry.name)
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if pid == self.controller:
                self.controller_cmdline = self.controller_cmdline or cmdline
                self.controller_seen += cmdline + b"\0" + environ
                continue
            if cmdline == self.controller_cmdline:
                continue  # cloudtask itself, forked to start a process and not exec'd yet
            if b"cloudtask.watchdog" in cmdline and marker in environ.split(b"\0"):
                # It inherits the controller's environment; its command line is checked.
                self.watchdogs.add(pid)
                self.watchdog_cmdlines.add(cmdline)
                environ = b""
            for secret in self.secrets:
                for where, data in (("cmdline", cmdline), ("environ", environ)):
                    if secret.encode() in data:
                        shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
                        self.leaks.append((where, f"/proc/{pid}/{where}: {shown[:150]}"))


def spawned_leaks(log: Path, secrets_: Sequence[str]) -> list[tuple[str, str]]:
    """(cmdline or environ, what) for each process started with a secret, the watchdog apart."""
    leaks = []
    lines = log.read_text().splitlines() if log.exists() else []
    for record in map(json.loads, lines):
        argv = " ".join(record["argv"])
        if "cloudtask.watchdog" in argv:
            continue  # it gets the controller's environment, and its secrets over a pipe
        environ = "\0".join(f"{k}={v}" for k, v in record["env"].items())
        for secret in secrets_:
            for where, data in (("cmdline", argv), ("environ", environ)):
                if secret in data:
                    names = [k for k, v in record["env"].items() if secret in v]
                    shown = f"process {record['parent']} started `{argv[:150]}`"
                    leaks.append((where, f"{shown}: secret in its {where} {names or ''}"))
    return leaks


def assert_no_secret(secrets_: Sequence[str], where: str, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    found = [secret for secret in secrets_ if secret.encode() in data]
    assert not found, f"secrets {found} in {where}"


def store_dump(session: Path) -> str:
    """Every row of every table of the session's store (its run is over), as SQL text.

    SQL on purpose: the audit reads the file as SQLite does, every table, one
    cloudtask would not know included, not what the reader's queries return."""
    db = sqlite3.connect(session / "store.sqlite")
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert {"jobs", "meta", "instances"} <= set(tables), tables
        return "\n".join(db.iterdump())
    finally:
        db.close()


@pytest.mark.parametrize(
    "variant",
    [
        "hub-key-on-command-line",
        "hub-key-in-env",
        "libcloud",
    ],
)
def test_no_secret_leaves_the_controller(
    variant: str, clouds: Callable[..., Cloud], tmp_path: Path, home: Path
) -> None:
    """Secrets: on the command line (hub, libcloud key, secret and options with a token),
    in the environment (hub key, SMTP password), in a URL (refused)."""
    sessions = helpers.sessions_dir()
    env = instrumented(tmp_path, env_for(home))
    spawn_log = Path(env[SPAWN_LOG])
    key = f"{variant}-key-{secrets.token_hex(8)}"
    secret_values = [key]
    cloud = clouds(key)
    options = ["--provider=hub", f"--hub-url={cloud.hub.url}"]
    if variant == "hub-key-on-command-line":
        options.append(f"--hub-apikey={key}")
        # A password in the API URL is refused at once, without echoing it.
        password = "url-pw-" + secrets.token_hex(8)
        url = cloud.hub.url.replace("http://", f"http://ops:{password}@")
        argv = [CLOUDTASK, "--force", "--provider=hub", f"--hub-apikey={key}", f"--hub-url={url}"]
        refused = helpers.run([*argv, "true"], env=env, input=b"1\n")
        err = helpers.assert_usage_error(refused, "--hub-url")
        assert password not in refused.stdout + err and "ops:" not in err, err
        assert not sessions.exists() or helpers.session_ids() == []
        assert sum(cloud.hub.requests.values()) == 0
    elif variant == "hub-key-in-env":
        secret_values.append(SMTP_PASSWORD)
        env |= {
            "CLOUDTASK_HUB_APIKEY": key,
            "CLOUDTASK_SMTP_USER": "reports",
            "CLOUDTASK_SMTP_PASSWORD": SMTP_PASSWORD,
        }
    else:
        libcloud_secret = "lc-secret-" + secrets.token_hex(8)
        token = "lc-token-" + secrets.token_hex(8)
        secret_values += [libcloud_secret, token]
        digest = hashlib.sha256
        (tmp_path / "python" / "secret_driver.py").write_text(
            SECRET_DRIVER.format(
                secret=digest(libcloud_secret.encode()).hexdigest(),
                token=digest(token.encode()).hexdigest(),
            )
        )
        options = [
            "--provider=libcloud",
            "--libcloud-driver=secret_driver:SecretTestDriver",
            f"--libcloud-key={key}",
            f"--libcloud-secret={libcloud_secret}",
            f"--libcloud-options=url={cloud.hub.url},token={token}",
            "--libcloud-image=core",
            "--libcloud-size=small",
        ]
    script = write_script(tmp_path / "job.sh", SECRETS_JOB)
    argv = [
        CLOUDTASK,
        "--force",
        *options,
        f"--ssh-identity={cloud.backend.key}",
        "--split=1",
        "--report=sh: env",
        str(script),
    ]
    with started(argv, env, b"1\n", tmp_path) as run:
        table = ProcessTable(sessions, run.pid, secret_values)
        status = wait_for(run, 60, table.scan)
    result = run.result()
    assert status == 0, result.stdout + result.stderr
    assert helpers.counts(result) == (0, 1, 0, 0, 0, 1)
    assert len(cloud.backend.created) == 1 and cloud.backend.alive() == []
    session = sessions / "1"

    # The console, the hook's environment and output.
    assert_no_secret(secret_values, "cloudtask's output", result.stdout + result.stderr)
    hook = [line[len("report | ") :] for line in result.stdout.splitlines()]
    hook = [line for line in hook if re.match(r"[A-Z_]+=", line)]
    assert any(line.startswith("CLOUDTASK_SESSION_ID=1") for line in hook), result.stdout
    assert any(line.startswith("HOME=") for line in hook), hook
    assert_no_secret(secret_values, "the hook's environment", "\n".join(hook))
    hook_names = {line.split("=", 1)[0] for line in hook}
    assert not hook_names & {
        "CLOUDTASK_HUB_APIKEY",
        "CLOUDTASK_SMTP_PASSWORD",
        "CLOUDTASK_LIBCLOUD_KEY",
        "CLOUDTASK_LIBCLOUD_SECRET",
        "CLOUDTASK_LIBCLOUD_OPTIONS",
    }, hook_names
    # The session: the store (every table), the logs, every other file in it.
    dump = store_dump(session)
    attempts = [line for line in dump.splitlines() if 'INSERT INTO "attempts"' in line]
    assert "CANARY-7f3e" in dump, attempts  # the job's output reached the store
    assert_no_secret(secret_values, "the store", dump)
    log = (session / "log").read_text()
    assert "CANARY-7f3e" in log and "report | HOME=" in log
    for path in sorted(session.rglob("*")):
        if path.is_file():
            assert_no_secret(secret_values, str(path), path.read_bytes())
    assert "CANARY-7f3e" in "".join(p.read_text() for p in (session / "workers").iterdir())
    # The digests.
    text = logalyzer("1").stdout
    assert "command:" in text and str(script) in text
    assert_no_secret(secret_values, "the digest", text)
    assert_no_secret(secret_values, "the JSON digest", logalyzer("--json", "1").stdout)
    assert_no_secret(secret_values, "the JSON digest", logalyzer("--json", "--all", "1").stdout)
    logalyzer("--html", "1")
    for name in ("report.html", "timeline.svg"):
        assert_no_secret(secret_values, name, (session / name).read_bytes())
    # The worker: the job's environment and the command lines it could see.
    worker_env = (tmp_path / "env.1").read_text()
    assert "SSH_CONNECTION=" in worker_env  # it ran over SSH, on the launched host
    assert_no_secret(secret_values, "the job's environment", worker_env)
    # Of cloudtask's variables, a job sees only the four that say which job it is.
    seen = {line.partition("=")[0] for line in worker_env.splitlines() if "CLOUDTASK_" in line}
    job_variables = {"CLOUDTASK_SESSION", "CLOUDTASK_JOB", "CLOUDTASK_ATTEMPT", "CLOUDTASK_WORKER"}
    assert seen == job_variables, worker_env
    seen = {}
    for line in (tmp_path / "cmdlines.1").read_text(errors="replace").split("\n"):
        pid, _, cmdline = line.partition("\t")
        if pid:
            seen[int(pid)] = cmdline.rstrip(" ")
    # The scan saw the job's own side: the worker agent that ran it.
    assert any("cloudtask-agent" in cmdline for cmdline in seen.values())
    controller = table.controller_cmdline.replace(b"\0", b" ").decode(errors="replace").rstrip()
    others = [
        cmdline
        for pid, cmdline in seen.items()
        if pid != run.pid and pid not in table.watchdogs and cmdline != controller  # its forks
    ]
    assert_no_secret(secret_values, "command lines seen on the worker", "\n".join(others))
    if variant != "hub-key-in-env":
        # Negative control: the worker's view shows the key where it is (the test hosts
        # share this machine's process table, and the key is on cloudtask's command line).
        assert key in seen.get(run.pid, ""), seen.get(run.pid)

    # The process table while it ran, and every process cloudtask and its watchdog
    # started: none but cloudtask itself and its watchdog holds a secret.
    assert table.watchdogs, "the scan never saw the watchdog"
    for watchdog_cmdline in table.watchdog_cmdlines:
        assert_no_secret(secret_values, "the watchdog's command line", watchdog_cmdline)
    assert spawn_log.exists(), "the spawn log recorded nothing (not even the watchdog)"
    # Negative control: the scan reads what it excludes; the key is there to be seen.
    assert key.encode() in table.controller_seen
    leaks = table.leaks + spawned_leaks(spawn_log, secret_values)
    shown = "\n".join(sorted({what for _, what in leaks}))
    assert all(where == "environ" for where, _ in leaks), shown
    if leaks:
        raise EnvironmentLeak(f"secrets in the environment of other processes:\n{shown}")


def test_a_local_job_gets_no_secret_from_the_environment(tmp_path: Path) -> None:
    """Property 2 on the local provider: this machine is the worker, secrets in the env."""
    secret_env = {
        "CLOUDTASK_HUB_APIKEY": "hub-" + secrets.token_hex(8),
        "CLOUDTASK_LIBCLOUD_KEY": "lck-" + secrets.token_hex(8),
        "CLOUDTASK_LIBCLOUD_SECRET": "lcs-" + secrets.token_hex(8),
        "CLOUDTASK_SMTP_USER": "reports",
        "CLOUDTASK_SMTP_PASSWORD": "smtp-" + secrets.token_hex(8),
    }
    script = write_script(tmp_path / "job.sh", f'#!/bin/sh\nenv > "{tmp_path}/env.$1"\n')
    argv = [CLOUDTASK, "--force", "--provider=local", str(script)]
    result = helpers.run(argv, input=b"1\n", env=helpers.env_with(**secret_env))
    assert result.returncode == 0, result.stdout + result.stderr
    job_env = (tmp_path / "env.1").read_text()
    assert "CLOUDTASK_SMTP_USER=reports" in job_env  # not a secret: the job sees it
    leaked = [name for name, value in secret_env.items() if value in job_env and "USER" not in name]
    assert not leaked, f"secrets in a local job's environment: {leaked}"


# --- 3. host keys -----------------------------------------------------------------------------


def assert_refused(result: subprocess.CompletedProcess[str], address: str) -> None:
    """A one-line error about the host key that names the host."""
    helpers.assert_no_traceback(result)
    lines = lines_with(result.stderr, "host key")
    assert lines, f"no host key error:\n{result.stderr}"
    for line in lines:
        assert re.search(rf"\b{re.escape(address)}\b", line), f"{line!r} does not name {address}"
        assert "refused" in line, line


def pinned(session: Path) -> str:
    path = session / "known_hosts"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("case", ["pinned-then-changed", "other-key-in-known-hosts", "launched"])
def test_a_changed_host_key_is_refused(
    case: str,
    clouds: Callable[..., Cloud],
    make_hosts: Callable[[int], TestHosts],
    tmp_path: Path,
    home: Path,
    authorized_keys: KeysSnapshot,
) -> None:
    script = write_script(tmp_path / "job.sh", MARKING_JOB)
    env = env_for(home)
    session = helpers.sessions_dir() / "1"
    if case == "launched":
        cloud = clouds()
        cloud.backend.report_wrong_host_keys = True
        argv = [CLOUDTASK, "--force", *cloud.options(), "--split=1", str(script)]
        result = helpers.run(argv, input=b"1\n", env=env | {"CLOUDTASK_HUB_APIKEY": APIKEY})
        assert result.returncode == 1, result.stdout + result.stderr
        (address,) = cloud.backend.addresses.values()
        assert_refused(result, address)
        assert starts(tmp_path) == []
        assert cloud.backend.alive() == []
        return

    hosts = make_hosts(1)
    host: Host = hosts[0]
    base = [CLOUDTASK, "--force", f"--workers={host.login}", f"--ssh-identity={hosts.client_key}"]
    if case == "pinned-then-changed":
        # The first run pins the key (known_hosts knows nothing of the host) and
        # halts after job 1 fails, so that job 2 is left for the resume.
        first = helpers.run(
            [*base, "--halt=fail=1", str(script)], input=b"1 fail\n2\n", env=env, timeout=60
        )
        assert first.returncode == 1, first.stdout + first.stderr
        assert [job for job, _ in starts(tmp_path)] == [1]  # connected: the key was fine
        assert host.host_public_key in pinned(session)
        old_pins = pinned(session)
        host.change_host_key()

        # The threshold raised, so that only the host key can keep job 2 from running.
        result = helpers.run([CLOUDTASK, "--resume=1", "--halt=fail=100"], env=env, timeout=60)

        assert result.returncode == 1, result.stdout + result.stderr
        assert_refused(result, host.address)
        assert [job for job, _ in starts(tmp_path)] == [1], "job 2 ran on the changed host"
        assert pinned(session) == old_pins, "the new key was pinned"
    else:
        other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh")
        known = home / ".ssh" / "known_hosts"
        known.write_text(f"{host.address} {other.decode().strip()}\n")

        result = helpers.run([*base, str(script)], input=b"1\n", env=env, timeout=60)

        assert result.returncode == 1, result.stdout + result.stderr
        assert_refused(result, host.address)
        assert starts(tmp_path) == []
        assert host.host_public_key not in pinned(session), "the host's key was pinned"
        # Negative control: with its right key in known_hosts the same run works.
        known.write_text(host.host_key_line + "\n")
        control = helpers.run([*base, str(script)], input=b"1\n", env=env, timeout=60)
        assert control.returncode == 0, control.stdout + control.stderr
        assert [job for job, _ in starts(tmp_path)] == [1]
    assert_keys_file_as_before(authorized_keys, set())  # other sessions on this machine apart


# --- 4. the session key ------------------------------------------------------------------------

KEY_SEARCH_ROOTS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/root/.ssh"))
MAX_KEY_FILE = 64 * 1024


def public_blob(key_line: str) -> str:
    return key_line.split()[1]


def session_key_lines() -> list[str]:
    """Session keys (of any cloudtask session on this machine) in root's authorized_keys."""
    try:
        text = AUTHORIZED_KEYS.read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if SESSION_KEY_COMMENT in line]


def stored_session_keys(session: Path) -> set[str]:
    """Public blobs of the session keys the session's store holds now (while they are in use)."""
    try:
        with StoreReader.open(session) as store:
            lines = store.session_keys()
    except (ReadError, SessionError):
        return set()
    return {public_blob(line) for line in lines}


@dataclass
class KeyFiles:
    """Private key files made or changed since `since`, found by polling while a run goes on.

    Any file anywhere under the roots that holds one of this session's keys is a
    finding. So is any other private key file made during the run where this run
    could have put it (`examined`): other programs' directories in /tmp (test
    hosts, other test runs on this machine) and the tests' own keys apart.
    """

    roots: Sequence[Path]
    session: Path
    examined: Callable[[Path], bool]
    since: float = field(default_factory=time.time)
    found: dict[Path, bytes] = field(default_factory=dict)
    ours: set[str] = field(default_factory=set)  # public blobs of this session's keys
    authorized: set[str] = field(default_factory=set)  # of those, seen in authorized_keys

    def poll(self) -> None:
        self.ours |= stored_session_keys(self.session)
        self.authorized |= {public_blob(line) for line in session_key_lines()} & self.ours
        for root in self.roots:
            for directory, _, names in os.walk(root):
                for name in names:
                    path = Path(directory, name)
                    try:
                        info = path.lstat()
                        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_KEY_FILE:
                            continue
                        if max(info.st_mtime, info.st_ctime) < self.since - 1:
                            continue
                        data = path.read_bytes()
                    except OSError:
                        continue
                    if b"PRIVATE KEY" in data:
                        self.found[path] = data

    def strangers(self) -> list[Path]:
        return sorted(path for path in self.found if self.examined(path))

    def holding_session_keys(self) -> list[Path]:
        """Files whose private key is one of this session's keys."""
        holding = []
        for path, data in self.found.items():
            try:
                public = asyncssh.import_private_key(data).export_public_key("openssh").decode()
            except (asyncssh.KeyImportError, ValueError):
                continue  # not readable without a passphrase: a stranger if examined
            if public_blob(public) in self.ours:
                holding.append(path)
        return holding


def assert_keys_file_as_before(snapshot: KeysSnapshot, ours: set[str]) -> None:
    """No key of this session in authorized_keys, and the file byte for byte as it was.

    Test hosts share root's authorized_keys with every cloudtask session run on
    this machine meanwhile (other test runs): when the file holds another
    session's key, before or now, every byte but those keys' lines must be as it was.
    """
    now = snapshot.current()
    lines = (now or b"").splitlines(keepends=True)
    before = (snapshot.content or b"").splitlines(keepends=True)
    ours_left = [line for line in lines if any(blob.encode() in line for blob in ours)]
    assert not ours_left, f"this session's key is still in {AUTHORIZED_KEYS}: {ours_left}"
    if now == snapshot.content:
        return
    marker = SESSION_KEY_COMMENT.encode()
    others = any(marker in line for line in before + lines)
    kept_now = b"".join(line for line in lines if marker not in line)
    kept_before = b"".join(line for line in before if marker not in line)
    assert others and kept_now == kept_before, (
        f"{AUTHORIZED_KEYS} changed:\nbefore {snapshot.content!r}\nafter  {now!r}"
    )


@pytest.mark.parametrize("ending", ["clean", "ctrl-c", "sigkill-then-resume"])
def test_the_session_key_leaves_no_trace(
    ending: str, hosts: TestHosts, tmp_path: Path, home: Path, authorized_keys: KeysSnapshot
) -> None:
    ssh_dir = AUTHORIZED_KEYS.parent
    ssh_dir_before = set(os.listdir(ssh_dir))
    decoy = tmp_path / "decoy_key"
    sessions = helpers.sessions_dir()

    def examined(path: Path) -> bool:
        if path == decoy:
            return False  # the test's own
        if path.is_relative_to(tmp_path) or path.parent == ssh_dir:
            return True  # this test's directory (sessions, HOME), ~/.ssh
        # Directly in /tmp, /var/tmp or /dev/shm; not in other programs' directories
        # there (test hosts, other test runs on this machine), where only a file
        # holding this session's key counts.
        return path.parent in KEY_SEARCH_ROOTS

    keys = KeyFiles([*KEY_SEARCH_ROOTS, home], sessions / "1", examined)
    script = write_script(tmp_path / "job.sh", MARKING_JOB)
    argv = [
        CLOUDTASK,
        "--force",
        f"--workers={','.join(hosts.addresses)}",
        f"--ssh-identity={hosts.client_key}",
        str(script),
    ]
    env = env_for(home)
    jobs = b"1 wait\n2 wait\n3 wait\n4\n5\n6\n"
    with started(argv, env, jobs, tmp_path) as run:
        wait_until(lambda: len(starts(tmp_path)) == 3, 30, "three jobs running")
        keys.poll()
        # Negative control: a private key file made now is found.
        decoy.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
        if ending == "clean":
            (tmp_path / "go").touch()
            status = wait_for(run, 60, keys.poll)
            assert status == 0, run.stdout() + run.stderr()
        elif ending == "ctrl-c":
            os.killpg(run.pid, signal.SIGINT)
            status = wait_for(run, 30, keys.poll)
            assert status == 1, run.stdout() + run.stderr()
            assert "aborted" in run.stdout() + run.stderr()
        else:
            keys.poll()
            os.killpg(run.pid, signal.SIGKILL)
            wait_for(run, 10)
            # Negative control: a killed controller leaves its key, and the check sees it.
            with pytest.raises(AssertionError, match="this session's key is still in"):
                assert_keys_file_as_before(authorized_keys, keys.ours)
            (tmp_path / "go").touch()
    if ending == "sigkill-then-resume":
        with started([CLOUDTASK, "--resume=1"], env, b"", tmp_path, "resume") as resumed:
            status = wait_for(resumed, 60, keys.poll)
        assert status == 0, resumed.stdout() + resumed.stderr()
        assert helpers.counts(resumed.result())[0] == 0
    keys.poll()

    assert keys.ours, "the store never held a session key"
    assert keys.authorized, "the session key was never seen in authorized_keys"
    assert_keys_file_as_before(authorized_keys, keys.ours)
    left = set(os.listdir(ssh_dir)) - ssh_dir_before - {AUTHORIZED_KEYS.name}
    assert not left, f"files left in {ssh_dir}: {sorted(left)}"
    assert decoy in keys.found, "the search did not find a key file made during the run"
    assert keys.holding_session_keys() == [], "the session's private key was written to disk"
    assert keys.strangers() == [], f"private key files made during the run: {keys.strangers()}"
    for path in sessions.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path


# --- 5. terminal control sequences ---------------------------------------------------------

# Output that would retitle, clear, recolour and reset a terminal, with a 7-bit
# CSI, a raw C1 CSI byte (0x9b) and an encoded one (U+009B), and a carriage
# return that would write over the start of its line.
ESCAPES_JOB = r"""#!/bin/sh
[ "$1" = wait ] && sleep 1
printf 'title \033]0;PWNED\007 clear \033[2J home \033[H red \033[31m normal \033[0m\n'
printf 'c1 \233''2J utf8-c1 \302\233''2J\n'
printf 'osc2 \033]2;PWNED2\033\\ reset \033c bell \007 end\n' >&2
printf 'hidden\rFAKE line\n'
printf 'no newline \033[2J'
[ "$1" = wait ] && sleep 1
exit 3
"""
# C0 but tab and newline, DEL, C1 (U+0080-U+009F), and raw C1 bytes (invalid UTF-8).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\udc80-\udc9f]")


def control_bytes(data: bytes) -> list[str]:
    """The control characters in data, read as UTF-8 (raw bytes kept as surrogates)."""
    return CONTROL.findall(data.decode("utf-8", errors="surrogateescape"))


def run_raw(argv: Sequence[str], stdin: bytes, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), input=stdin, capture_output=True, cwd=cwd, timeout=30)


class Tmux:
    """A tmux server of the test's own, with one 100x30 session running a shell command."""

    def __init__(self, command: str, cwd: Path) -> None:
        self.socket = f"ctsec-{uuid.uuid4().hex[:8]}"
        self.tmux(
            "new-session", "-d", "-s", "main", "-x", "100", "-y", "30",
            f"{command}; echo EXIT=$?; sleep 60",
            cwd=cwd,
        )  # fmt: skip

    def tmux(self, *args: str, cwd: Path | None = None) -> str:
        argv = ["tmux", "-L", self.socket, "-f", "/dev/null", *args]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=10)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "main")

    def title(self) -> str:
        return self.tmux("display-message", "-p", "-t", "main", "#{pane_title}").strip()

    def wait_for(self, pattern: str, limit: float = 30) -> str:
        deadline = time.monotonic() + limit
        while not re.search(pattern, shown := self.screen(), re.MULTILINE):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never on the screen:\n{shown}")
            time.sleep(0.1)
        return shown

    def close(self) -> None:
        path = self.tmux("display-message", "-p", "#{socket_path}").strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        if Path(path).name == self.socket:
            Path(path).unlink(missing_ok=True)  # tmux leaves its socket file behind


@pytest.fixture
def tmux() -> Iterator[Callable[[str, Path], Tmux]]:
    """tmux(command, cwd) runs command in a terminal of its own, removed after the test."""
    made: list[Tmux] = []

    def make(command: str, cwd: Path) -> Tmux:
        if shutil.which("tmux") is None:
            pytest.skip("tmux is not installed (scripts/setup installs it)")
        made.append(Tmux(command, cwd))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.mark.parametrize("mode", ["plain", "terminal"])
def test_job_output_cannot_drive_the_terminal(
    mode: str, tmux: Callable[[str, Path], Tmux], tmp_path: Path
) -> None:
    script = write_script(tmp_path / "job.sh", ESCAPES_JOB)
    sessions = helpers.sessions_dir()
    if mode == "plain":
        # Bytes as written (helpers.run would turn a raw C1 byte into U+FFFD).
        result = run_raw([CLOUDTASK, "--force", str(script)], b"1\n", tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert b"local1 job 1 | title \\x1b]0;PWNED\\x07 clear \\x1b[2J" in result.stdout
        digest = run_raw([LOGALYZER, "1"], b"", tmp_path).stdout  # the failed job's tail
        assert b"PWNED2" in digest
        outputs = {
            "stdout": result.stdout,
            "stderr": result.stderr,
            "log": (sessions / "1" / "log").read_bytes(),
            "digest": digest,
        }
        for name, data in outputs.items():
            found = control_bytes(data)
            assert not found, f"control characters in {name}: {found}\n{data!r}"
        fake = lines_with(result.stdout.decode(), "FAKE line")
        assert fake and all(line.startswith("local1 job 1 | ") for line in fake), fake
        # Negative control: the check finds the job's raw output bad.
        raw = run_raw(["sh", str(script)], b"", tmp_path)
        assert control_bytes(raw.stdout) and control_bytes(raw.stderr)
        return

    title = "ORIGINAL-TITLE"
    set_title = f"printf '\\033]2;{title}\\033\\\\'; echo BEFORE-MARK"
    direct = tmux(f"{set_title}; sh {shlex.quote(str(script))} wait", tmp_path)
    command = (
        f"{set_title}; echo wait | CLOUDTASK_SESSIONS={shlex.quote(str(sessions))} "
        f"{shlex.quote(CLOUDTASK)} --force sh {shlex.quote(str(script))}"
    )
    view = tmux(command, tmp_path)

    during = view.wait_for(r"local1 job 1 \| FAKE line")
    title_during = view.title()
    final = view.wait_for(r"^EXIT=\d+")
    assert "EXIT=1" in final, final
    assert title_during == title and view.title() == title, (title_during, view.title())
    # While the job runs (its clear came before FAKE line): the screen is as it was.
    # At the end the picture stays in the bottom rows and what follows it may
    # scroll the top lines away, so the final screen cannot tell.
    assert "BEFORE-MARK" in during, f"the screen was cleared:\n{during}"
    assert re.search(r"^session 1 \(\d+ seconds?\): 1/1 !OK", final, re.M), final
    # Negative control: the same job run without cloudtask in the same kind of terminal
    # retitles and clears it, so the checks above would see it.
    direct_final = direct.wait_for(r"EXIT=\d+")
    assert "PWNED" in direct.title(), direct.title()
    assert "BEFORE-MARK" not in direct_final, direct_final


def test_a_job_command_cannot_drive_the_terminal(tmp_path: Path) -> None:
    """Beyond the brief: an input line, not only a job's output, is untrusted text."""
    result = run_raw([CLOUDTASK, "--force", "echo"], b"x\x1b]0;PWNED\x07 \x1b[2J\n", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for name, data in (
        ("stdout", result.stdout),
        ("log", (helpers.sessions_dir() / "1" / "log").read_bytes()),
    ):
        assert not control_bytes(data), f"control characters in {name}: {data!r}"
