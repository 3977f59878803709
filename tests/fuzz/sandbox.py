"""Running a case: in a network namespace of its own with only loopback (when the
kernel lets us make one), in a directory of its own with the sessions fixtures,
stopped with SIGTERM after its time, its leftovers killed by their mark."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from tests.fuzz.cases import (
    CLOUD_FIXTURE_SQL,
    FILE_MUTATIONS,
    FIXTURE_IDS,
    FIXTURE_RUNS,
    Case,
    Mutation,
)
from tests.fuzz.safety import cloudish
from tests.fuzz.values import (
    GRACE,
    MARK,
    PORT,
    PROGRAMS,
    PYTHON,
    STATIC_DIRS,
    STATIC_FILES,
    TMP,
    enc,
)

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40


def enter_network_namespace() -> None:
    """In the child, before exec: a network of its own, with only a loopback (up)."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.pack("16sH14x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
        fcntl.ioctl(sock, SIOCSIFFLAGS, flags)


def network_namespaces_work() -> bool:
    try:
        subprocess.run(["true"], preexec_fn=enter_network_namespace, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@dataclass
class Result:
    status: int
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool = False  # SIGTERM was sent
    slow_abort: bool = False  # still running GRACE seconds after SIGTERM: SIGTERM again
    hung: bool = False  # still running after the second SIGTERM: killed
    incomplete: list[str] = field(default_factory=list)  # session dirs without a complete store
    new_sessions: list[str] = field(default_factory=list)
    before: dict[int, StoreSummary | None] = field(default_factory=dict)
    after: dict[int, StoreSummary | None] = field(default_factory=dict)
    jobs: list[tuple[str, str]] | None = None  # (state, command) of session 1, input area


@dataclass(frozen=True)
class StoreSummary:
    states: tuple[tuple[int, str], ...]
    attempts: int
    command: str | None


def store_summary(session: Path) -> StoreSummary | None:
    """What a session has recorded, or None when its store cannot be read.

    Raw SQL, not the store's reader: it must read the stores the fuzzer damaged
    (a job state that is no JobState), to tell whether a run lost anything."""
    store = session / "store.sqlite"
    if not store.is_file():
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            states = tuple(db.execute("SELECT id, state FROM jobs ORDER BY id").fetchall())
            attempts = db.execute("SELECT count(*) FROM attempts").fetchone()[0]
            row = db.execute("SELECT value FROM meta WHERE key = 'command'").fetchone()
    except sqlite3.Error:
        return None
    return StoreSummary(states, int(attempts), None if row is None else str(row[0]))


def session_dirs(root: Path) -> list[Path]:
    """Directories that look like sessions (SESSIONS/ID/), anywhere in the case directory."""
    found = []
    for directory, names, files in os.walk(root):
        here = Path(directory)
        if len(here.relative_to(root).parts) > 4:
            names[:] = []
            continue
        if (
            here.name.isdigit()
            and here != root
            and ({"store.sqlite", "lock", "log"} & set(files) or "workers" in names)
        ):
            found.append(here)
            names[:] = []
    return found


def complete(session: Path) -> bool:
    summary = store_summary(session)
    return summary is not None and summary.command is not None


def kill_marked(mark: str) -> None:
    """Kill what a case left running (a watchdog, a job): every process with its mark."""
    needle = f"{MARK}={mark}".encode()
    for _ in range(3):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as file:
                    environment = file.read().split(b"\0")
            except OSError:
                continue
            if needle in environment:
                found = True
                with contextlib.suppress(OSError):
                    os.kill(int(entry.name), signal.SIGKILL)
        if not found:
            return
        time.sleep(0.05)


class Sandbox:
    """Runs cases: each in a fresh directory and, when possible, a network namespace."""

    def __init__(self, timeout: float = 5.0, *, fast: bool = False) -> None:
        self.timeout = timeout
        self.fast = fast  # no jobs for cases that may launch cloud workers
        self.netns = network_namespaces_work() and os.environ.get("CLOUDTASK_FUZZ_NETNS") != "0"
        # A bound socket that never listens: connections to its port are refused.
        self._sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM)]
        self._sockets[0].bind(("127.0.0.1", 0))
        self.port = self._sockets[0].getsockname()[1]
        with contextlib.suppress(OSError):
            six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            self._sockets.append(six)
            six.bind(("::1", self.port))
        self._fixtures: Path | None = None

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        if self._fixtures is not None:
            shutil.rmtree(self._fixtures.parent, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the environment of a case ---------------------------------------------------------

    def sub(self, raw: bytes, root: Path) -> bytes:
        return raw.replace(TMP.encode(), str(root).encode()).replace(
            PORT.encode(), str(self.port).encode()
        )

    def environment(self, root: Path, mark: str) -> dict[bytes, bytes]:
        closed = f"127.0.0.1:{self.port}"
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": f"{root}/home",
            "LANG": "C.UTF-8",
            "CLOUDTASK_SESSIONS": f"{root}/sessions",
            "CLOUDTASK_HUB_URL": f"http://{closed}/api/",
            "CLOUDTASK_SMTP_HOST": "127.0.0.1",
            "CLOUDTASK_SMTP_PORT": str(self.port),
            "AWS_ENDPOINT_URL": f"http://{closed}",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ACCESS_KEY_ID": "fuzz",
            "AWS_SECRET_ACCESS_KEY": "fuzz",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            MARK: mark,
        }
        return {key.encode(): value.encode() for key, value in env.items()}

    def prepare(self, case: Case, root: Path) -> None:
        for directory in STATIC_DIRS:
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "home").chmod(0o700)
        for name, content in [*STATIC_FILES.items(), *case.files]:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.sub(content, root))
        if case.template is not None:
            source = enc(case.template.source())
            (root / case.template.name).write_bytes(self.sub(source, root))
        if case.fixtures:
            shutil.copytree(self.fixtures(), root / "sessions")
            for mutation in case.mutations:
                self.mutate(root / "sessions" / str(mutation.session), mutation)

    def mutate(self, session: Path, mutation: Mutation) -> None:
        if not session.is_dir():
            return  # an earlier mutation made it a file
        if mutation.name in FILE_MUTATIONS:
            with contextlib.suppress(OSError):
                exec(FILE_MUTATIONS[mutation.name], {"s": session, "shutil": shutil})
            return
        statements = mutation.statements()
        if not (session / "store.sqlite").is_file():
            return
        with (
            contextlib.suppress(sqlite3.Error, OverflowError),
            contextlib.closing(sqlite3.connect(session / "store.sqlite")) as db,
            db,
        ):
            for sql, parameters in statements:
                db.execute(sql, parameters)

    def fixtures(self) -> Path:
        """The fixture sessions, made on first use (and kept for the process)."""
        if self._fixtures is None:
            base = Path(tempfile.mkdtemp(prefix="cloudtask-fuzz-fixtures-"))
            make_fixtures(base, self)
            self._fixtures = base / "sessions"
        return self._fixtures

    # -- one case --------------------------------------------------------------------------

    def effective(self, case: Case) -> Case:
        """The case as run: in fast mode, no jobs where a cloud provider may be chosen."""
        if self.fast and case.stdin and cloudish(case):
            return replace(case, stdin=b"")
        return case

    def run(self, case: Case) -> Result:
        root = Path(tempfile.mkdtemp(prefix="cloudtask-fuzz-"))
        mark = uuid.uuid4().hex
        locks: list[int] = []
        try:
            self.prepare(case, root)
            fixture_paths = (
                {n: root / "sessions" / str(n) for n in FIXTURE_IDS} if case.fixtures else {}
            )
            before = {n: store_summary(path) for n, path in fixture_paths.items()}
            for number in case.locked:
                locks.append(hold_lock(fixture_paths[number]))
            if case.program == "template":
                assert case.template is not None
                argv = [PYTHON.encode(), str(root / case.template.name).encode()]
            else:
                argv = [str(PROGRAMS[case.program]).encode()]
            argv += [self.sub(arg, root) for arg in case.argv]
            env = self.environment(root, mark)
            env.update({key.encode(): self.sub(value, root) for key, value in case.env})
            result = self._execute(argv, env, root, case.stdin)
            for fd in locks:
                os.close(fd)
            locks = []
            kill_marked(mark)
            found = session_dirs(root)
            known = {str(path) for path in fixture_paths.values()}
            result.new_sessions = [str(p.relative_to(root)) for p in found if str(p) not in known]
            result.incomplete = [
                str(path.relative_to(root))
                for path in found
                if str(path) not in known and not complete(path)
            ]
            result.before = before
            result.after = {n: store_summary(path) for n, path in fixture_paths.items()}
            if case.area == "input" and (root / "sessions" / "1").is_dir():
                result.jobs = stored_jobs(root / "sessions" / "1")
            return result
        finally:
            for fd in locks:
                os.close(fd)
            kill_marked(mark)
            shutil.rmtree(root, ignore_errors=True)

    def _execute(
        self, argv: list[bytes], env: dict[bytes, bytes], root: Path, stdin: bytes
    ) -> Result:
        start = time.monotonic()
        process = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=enter_network_namespace if self.netns else None,
        )
        result = Result(0, b"", b"", 0.0)
        try:
            out, err = process.communicate(stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # Stopped as a user would: SIGTERM; again to skip the cleanup; then SIGKILL.
            result.timed_out = True
            process.send_signal(signal.SIGTERM)
            try:
                out, err = process.communicate(timeout=GRACE)
            except subprocess.TimeoutExpired:
                result.slow_abort = True
                process.send_signal(signal.SIGTERM)
                try:
                    out, err = process.communicate(timeout=GRACE / 2)
                except subprocess.TimeoutExpired:
                    result.hung = True
                    process.kill()
                    out, err = process.communicate()
        result.status, result.stdout, result.stderr = process.returncode, out, err
        result.seconds = time.monotonic() - start
        return result


def hold_lock(session: Path) -> int:
    """Hold a session's lock as a running controller would (-1: it has no lock to hold)."""
    try:
        fd = os.open(session / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return os.open(os.devnull, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def stored_jobs(session: Path) -> list[tuple[str, str]] | None:
    store = session / "store.sqlite"
    try:
        with contextlib.closing(
            sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            rows = db.execute("SELECT state, command FROM jobs ORDER BY id").fetchall()
    except sqlite3.Error:
        return None
    return [(str(state), str(command)) for state, command in rows]


def make_fixtures(base: Path, sandbox: Sandbox) -> None:
    """The fixture sessions 1-5 in base/sessions, made by real cloudtask runs."""
    mark = uuid.uuid4().hex
    for argv, stdin in FIXTURE_RUNS:
        env = sandbox.environment(base, mark)
        command = [str(PROGRAMS["cloudtask"]), "--sessions=sessions", *argv]
        done = subprocess.run(
            command,
            cwd=base,
            env=env,
            input=stdin,
            capture_output=True,
            timeout=60,
            preexec_fn=enter_network_namespace if sandbox.netns else None,
        )
        if done.returncode not in (0, 1):
            raise RuntimeError(f"cannot make a fixture session: {command}: {done.stderr!r}")
    sessions = base / "sessions"
    shutil.copytree(sessions / "3", sessions / "5")
    with contextlib.closing(sqlite3.connect(sessions / "5" / "store.sqlite")) as db, db:
        for sql in CLOUD_FIXTURE_SQL.replace(PORT, str(sandbox.port)).split("; "):
            db.execute(sql)
    kill_marked(mark)
