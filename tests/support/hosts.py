"""Test hosts: real OpenSSH servers, each in its own network namespace.

A host is a network namespace joined to the root namespace by a veth pair,
with its own sshd listening on the namespace side's address (port 22). All
addresses lie in one random /22 of 198.18.0.0/15, the block reserved for
network tests; the host at index i owns the /30 at offset 4*i (root side .1,
namespace side .2). An `unreachable` route for the whole /22 (protocol
ROUTE_PROTOCOL) claims the block for this run and makes sure that no packet
for it ever leaves through the default route, even while a link is down.

The hosts share the file system, and root's home, with the test process. Their
sshd sets SHLVL=1 so that Debian's bash does not read root's ~/.bashrc (which
runs pyenv, see DESIGN.md), and authorizes a client key made for the run
through a file of the run's own, besides /root/.ssh/authorized_keys.

    with TestHosts(3) as hosts:
        subprocess.run(hosts.ssh_command(hosts[0], "true"), check=True)
        hosts[1].cut()

Each run records its owner in RECORDS_DIR; a run whose owner died without
cleaning up (SIGKILL) is removed by the next run's `start()`, or by
`reap_stale_runs()`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

# Test hosts share this machine, its file system and its process table: a
# launched test worker whose lease runs out must never shut anything down.
# Every test and harness that starts test hosts imports this module, so the
# controllers they start (and their agents' lease keepers) get a harmless
# action; tests/conftest.py sets it again for each test.
HARMLESS_LEASE_ACTION = "true"
os.environ["CLOUDTASK_LEASE_ACTION"] = HARMLESS_LEASE_ACTION

SSHD = "/usr/sbin/sshd"
TEST_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
BLOCK_PREFIX = 22  # one run's block: 256 /30s
MAX_HOSTS = 250
ROUTE_PROTOCOL = 167  # marks the `unreachable` route that claims a run's block
NAME_PREFIX = "ctt"  # netns and root-side veth: ctt<run id>-<index>, at most 15 characters
RUN_ID_LENGTH = 8
RECORDS_DIR = Path("/run/cloudtask-testhosts")  # <run id>.json: owner pid, block, run dir
RUN_DIR_PREFIX = "cloudtask-testhosts-"
NAMESPACE_INTERFACE = "eth0"

_NAME_RE = re.compile(rf"^{NAME_PREFIX}([0-9a-f]{{{RUN_ID_LENGTH}}})-(\d+)$")
_ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "unreachable", "blackhole"}
_ROUTE_TYPES |= {"prohibit", "throw", "nat", "anycast"}
_COMMAND_TIMEOUT = 60.0  # for one `ip` or `ssh-keygen` command
_KILL_TIMEOUT = 10.0


class TestHostsError(RuntimeError):
    """Test hosts could not be made, changed or removed."""


class Process(NamedTuple):
    pid: int
    cmdline: str


def _run(args: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    """Run a short command; its output, or TestHostsError with its stderr."""
    result = subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT,
        check=False,
    )
    if check and result.returncode != 0:
        shown = " ".join(args) if stdin is None else f"{' '.join(args)} <<<{stdin!r}"
        raise TestHostsError(f"{shown} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at path (and path.pub); the public key line."""
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


def _write_atomically(path: Path, text: str) -> None:
    """Replace path's content so that a concurrent reader sees the old or the new file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def _netns_inode(netns: str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/run/netns/{netns}")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pids_by_namespace() -> dict[tuple[int, int], list[int]]:
    """Pids of live processes, by network namespace, as `ip netns pids` finds them."""
    found: dict[tuple[int, int], list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")  # fails for zombies
        except OSError:
            continue
        found.setdefault((st.st_dev, st.st_ino), []).append(int(entry.name))
    return found


def _kill_namespaces(netns_names: Sequence[str], timeout: float = _KILL_TIMEOUT) -> None:
    """SIGKILL every process in these namespaces until none is left."""
    inodes = {inode for name in netns_names if (inode := _netns_inode(name)) is not None}
    deadline = time.monotonic() + timeout
    while True:
        by_namespace = _pids_by_namespace()
        pids = [pid for inode in inodes for pid in by_namespace.get(inode, [])]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise TestHostsError(f"processes {pids} in test hosts survive SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def process_alive(pid: int) -> bool:
    """Whether pid is a live process (not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ours(name: str) -> re.Match[str] | None:
    return _NAME_RE.match(name)


def _netns_names() -> list[str]:
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()]


def _link_names() -> list[str]:
    names = []
    for line in _run(["ip", "-o", "link", "show"]).splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks of the machine's addresses and routes (any table); not default."""
    used = []
    for line in _run(["ip", "-o", "-4", "addr", "show"]).splitlines():
        words = line.split()
        if "inet" in words:
            used.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    for line in _run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        words = line.split()
        if words and words[0] in _ROUTE_TYPES:
            words = words[1:]
        if not words or words[0] == "default":
            continue
        with contextlib.suppress(ValueError):
            used.append(ipaddress.IPv4Network(words[0], strict=False))
    return [network for network in used if network.prefixlen > 0]


def _block_route(block: ipaddress.IPv4Network) -> list[str]:
    return ["route", "add", "unreachable", str(block), "proto", str(ROUTE_PROTOCOL)]


def _claimed_blocks() -> list[ipaddress.IPv4Network]:
    output = _run(["ip", "-4", "route", "show", "proto", str(ROUTE_PROTOCOL)])
    blocks = []
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in _ROUTE_TYPES:
            words = words[1:]
        with contextlib.suppress(ValueError, IndexError):
            network = ipaddress.IPv4Network(words[0])
            if network.subnet_of(TEST_NETWORK):
                blocks.append(network)
    return blocks


def _read_records() -> dict[str, dict[str, object]]:
    records = {}
    with contextlib.suppress(FileNotFoundError):
        for path in RECORDS_DIR.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                records[path.stem] = json.loads(path.read_text())
    return records


def runs_of_this_process() -> set[str]:
    """Run ids of the test hosts this process started and has not removed."""
    return {run for run, record in _read_records().items() if record.get("pid") == os.getpid()}


def _remove_run_dir(run_dir: object) -> None:
    if isinstance(run_dir, str) and Path(run_dir).name.startswith(RUN_DIR_PREFIX):
        shutil.rmtree(run_dir, ignore_errors=True)


def reap_stale_runs() -> list[str]:
    """Remove namespaces, block routes and files of runs whose owner is dead.

    Safe while other runs are starting: a run writes its record before it
    makes anything, and this looks for things before it reads the records.
    Returns what it removed.
    """
    namespaces = [name for name in _netns_names() if _ours(name)]
    blocks = _claimed_blocks()
    records = _read_records()
    live = {
        run_id: record
        for run_id, record in records.items()
        if isinstance(pid := record.get("pid"), int) and process_alive(pid)
    }
    live_blocks = {record.get("block") for record in live.values()}
    stale_namespaces = [n for n in namespaces if (m := _ours(n)) and m.group(1) not in live]
    stale_blocks = [block for block in blocks if str(block) not in live_blocks]
    if stale_namespaces:
        _kill_namespaces(stale_namespaces)
    commands = [f"link del {name}" for name in stale_namespaces]
    commands += [f"netns del {name}" for name in stale_namespaces]
    commands += [f"route del unreachable {block} proto {ROUTE_PROTOCOL}" for block in stale_blocks]
    if commands:
        _run(["ip", "-force", "-batch", "-"], stdin="\n".join(commands) + "\n", check=False)
    reaped = stale_namespaces + [str(block) for block in stale_blocks]
    for run_id, record in records.items():
        if run_id not in live:
            _remove_run_dir(record.get("run_dir"))
            (RECORDS_DIR / f"{run_id}.json").unlink(missing_ok=True)
            reaped.append(f"run {run_id}")
    return reaped


@functools.cache
def unavailable_reason() -> str | None:
    """Why test hosts cannot be made on this machine, or None if they can."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces, veth pairs, sshd)"
    if shutil.which("ip") is None:
        return "test hosts need iproute2's `ip` command"
    if not os.access(SSHD, os.X_OK):
        return f"test hosts need an OpenSSH server at {SSHD}"
    if shutil.which("ssh-keygen") is None:
        return "test hosts need OpenSSH's ssh-keygen"
    probe = f"{NAME_PREFIX}probe-{secrets.token_hex(4)}"
    try:
        _run(["ip", "netns", "add", probe])
    except (TestHostsError, OSError, subprocess.SubprocessError) as error:
        return f"cannot create network namespaces here: {error}"
    with contextlib.suppress(TestHostsError):
        _run(["ip", "netns", "del", probe])
    return None


@dataclass(eq=False)
class Host:
    """One test host: a namespace with an sshd at address:port.

    host_key_line is the host's known_hosts line (`ADDRESS ssh-ed25519 AAAA...`),
    host_public_key its public key (`ssh-ed25519 AAAA...`).
    """

    name: str
    netns: str
    address: str
    port: int
    host_key_line: str
    host_public_key: str
    root_address: str  # the root namespace's end of the link
    root_veth: str
    mac: str  # of the namespace's end; both ends know each other's statically (no ARP)
    root_mac: str
    directory: Path  # sshd_config, host key, sshd.pid, sshd.log
    _sshd: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _cut: bool = field(default=False, repr=False)

    @property
    def login(self) -> str:
        return f"root@{self.address}"

    @property
    def sshd_log(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    def cut(self) -> None:
        """Partition the host: its side of the link goes down, packets are silently lost.

        Connections to it time out, established ones hang (no reset, no
        error), as with a real network failure. The block's `unreachable`
        route is never used meanwhile: the root side keeps its route.
        """
        _run(["ip", "-n", self.netns, "link", "set", NAMESPACE_INTERFACE, "down"])
        self._cut = True

    def heal(self) -> None:
        """Undo cut(): the link comes back, established connections resume."""
        # Taking the link down dropped the namespace's static neighbour entry.
        _run(["ip", "-n", self.netns, "-batch", "-"], stdin=self._namespace_link_up())
        self._cut = False

    def pids(self) -> list[int]:
        """Pids of live processes in the host's namespace (sshd, sessions, jobs)."""
        inode = _netns_inode(self.netns)
        if inode is None:
            return []
        return sorted(_pids_by_namespace().get(inode, []))

    def processes(self) -> list[Process]:
        """Live processes in the namespace other than the sshd listener."""
        listener = self._sshd.pid if self._sshd is not None and self._sshd.poll() is None else None
        found = []
        for pid in self.pids():
            if pid == listener:
                continue
            cmdline = _cmdline(pid)
            if cmdline is not None:
                found.append(Process(pid, cmdline))
        return found

    def kill_all(self) -> None:
        """SIGKILL every process in the namespace, sshd included, as a crash would."""
        _kill_namespaces([self.netns])
        self._reap_sshd()

    def stop_sshd(self) -> None:
        """Stop the sshd listener (sessions it started go on, as with a real restart)."""
        if self._sshd is not None:
            if self._sshd.poll() is None:
                self._sshd.terminate()
                try:
                    self._sshd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._sshd.kill()
            self._reap_sshd()

    def restart_sshd(self) -> None:
        """Stop the sshd listener if it runs and start a new one; wait until it accepts."""
        self.stop_sshd()
        self._start_sshd()
        self._wait_ready(time.monotonic() + 15)
        _settle([self])

    def hide_python(self) -> None:
        """Make the host one without python3: its sshd gives sessions a PATH of
        every /usr/bin and /usr/sbin program but python (restarting sshd)."""
        bin_dir = self.directory / "bin-without-python"
        bin_dir.mkdir(exist_ok=True)
        for directory in (Path("/usr/sbin"), Path("/usr/bin")):
            for program in directory.iterdir():
                link = bin_dir / program.name
                if not program.name.startswith("python") and not link.exists():
                    link.symlink_to(program)
        config = self.directory / "sshd_config"
        config.write_text(
            config.read_text().replace("SetEnv SHLVL=1", f"SetEnv SHLVL=1 PATH={bin_dir}")
        )
        self.restart_sshd()

    def change_host_key(self) -> None:
        """Give the host a new ed25519 host key and restart sshd with it."""
        self._set_host_key(_keygen(self.host_key, f"{self.name}-{secrets.token_hex(2)}"))
        self.restart_sshd()

    # --- internals -------------------------------------------------------------------

    def _namespace_link_up(self) -> str:
        return (
            f"link set {NAMESPACE_INTERFACE} up\n"
            f"neigh replace {self.root_address} lladdr {self.root_mac} "
            f"dev {NAMESPACE_INTERFACE} nud permanent\n"
        )

    def _set_host_key(self, public_key: str) -> None:
        kind, blob = public_key.split()[:2]
        self.host_public_key = f"{kind} {blob}"
        self.host_key_line = f"{self.address} {kind} {blob}"

    def _reap_sshd(self) -> None:
        if self._sshd is not None:
            try:
                self._sshd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._sshd.kill()
                self._sshd.wait(timeout=5)
            self._sshd = None

    def _start_sshd(self) -> None:
        (self.directory / "sshd.pid").unlink(missing_ok=True)
        config = self.directory / "sshd_config"
        command = ["ip", "netns", "exec", self.netns, SSHD, "-D", "-f", str(config)]
        command += ["-E", str(self.sshd_log)]
        with self.sshd_log.open("ab") as log:
            # Own session: a Ctrl-C in the terminal leaves the hosts to cleanup.
            self._sshd = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def _log_tail(self) -> str:
        try:
            lines = self.sshd_log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-20:]) or "(empty log)"

    def _ready(self) -> bool:
        """Whether sshd has written its pid file and sends its banner; raise if it died."""
        if self._sshd is None or self._sshd.poll() is not None:
            code = None if self._sshd is None else self._sshd.returncode
            raise TestHostsError(
                f"sshd of test host {self.name} ({self.address}, namespace {self.netns}) "
                f"is not running (exit status {code}); {self.sshd_log}:\n{self._log_tail()}"
            )
        if not (self.directory / "sshd.pid").exists():
            return False
        try:
            with socket.create_connection((self.address, self.port), timeout=1) as connection:
                connection.settimeout(1)
                banner = b""
                while b"\n" not in banner and len(banner) < 256:
                    chunk = connection.recv(256)
                    if not chunk:
                        break
                    banner += chunk
                # Leave politely, so that sshd has nothing to log at level ERROR.
                connection.sendall(b"SSH-2.0-testhosts-probe\r\n")
                return banner.startswith(b"SSH-")
        except OSError:
            return False

    def _wait_ready(self, deadline: float) -> None:
        while not self._ready():
            if time.monotonic() > deadline:
                raise TestHostsError(
                    f"sshd of test host {self.name} ({self.address}, namespace {self.netns}) "
                    f"does not accept connections; {self.sshd_log}:\n{self._log_tail()}"
                )
            time.sleep(0.01)


def _settle(hosts: Sequence[Host], timeout: float = 5.0) -> None:
    """Wait a little for the sshd children of readiness probes to exit, so that a new
    host has no process but its listener; not an error if some linger."""
    deadline = time.monotonic() + timeout
    waiting = list(hosts)
    while waiting and time.monotonic() < deadline:
        by_namespace = _pids_by_namespace()
        waiting = [
            host
            for host in waiting
            if (inode := _netns_inode(host.netns)) is not None
            and len(by_namespace.get(inode, [])) > 1
        ]
        if waiting:
            time.sleep(0.01)


class TestHosts:
    """Start `count` test hosts on entry (or start()), remove them all on exit (or close())."""

    __test__ = False  # not a pytest test class

    def __init__(self, count: int, authorized: str | None = None) -> None:
        """`authorized`: a public key line every host also authorizes (a test cloud's)."""
        if not 1 <= count <= MAX_HOSTS:
            raise ValueError(f"between 1 and {MAX_HOSTS} test hosts, not {count}")
        self.count = count
        self.authorized = authorized
        self.hosts: list[Host] = []
        self.run_id = ""
        self.block: ipaddress.IPv4Network | None = None
        self._run_dir: Path | None = None
        self._owner = os.getpid()
        self._state = "new"  # new, started, closed
        self._lock = threading.Lock()

    # --- the hosts -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    @property
    def run_dir(self) -> Path:
        if self._run_dir is None:
            raise TestHostsError("test hosts not started")
        return self._run_dir

    @property
    def client_key(self) -> Path:
        """The private key that every host authorizes for root."""
        return self.run_dir / "client_key"

    @property
    def client_public_key(self) -> str:
        return (self.run_dir / "client_key.pub").read_text().strip()

    @property
    def addresses(self) -> list[str]:
        """`root@ADDRESS` of every host."""
        return [host.login for host in self.hosts]

    def known_hosts_file(self) -> Path:
        """A known_hosts file with every host's current key; written anew on each call."""
        path = self.run_dir / "known_hosts"
        _write_atomically(path, "".join(f"{host.host_key_line}\n" for host in self.hosts))
        return path

    def workers_file(self) -> Path:
        """A file with one `root@ADDRESS` per line, for --workers."""
        path = self.run_dir / "workers"
        _write_atomically(path, "".join(f"{address}\n" for address in self.addresses))
        return path

    def ssh_options(self) -> list[str]:
        """OpenSSH client options that reach the hosts with strict host key checking."""
        return [
            "-F", "none",
            "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts_file()}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            # ~100 ms less per connection here than OpenSSH 9.2's default sntrup761 (DESIGN.md)
            "-o", "KexAlgorithms=curve25519-sha256",
        ]  # fmt: skip

    def ssh_command(self, host: Host, command: str, *options: str) -> list[str]:
        """argv of `ssh` running command on host; options go before the destination."""
        return ["ssh", *self.ssh_options(), *options, host.login, command]

    # --- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> TestHosts:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(quiet=kind is not None)

    def start(self) -> None:
        """Make the hosts; on failure remove whatever was made and raise TestHostsError."""
        with self._lock:
            if self._state != "new":
                raise TestHostsError("test hosts can be started once")
            self._state = "started"
        atexit.register(self._close_at_exit)
        try:
            self._start()
        except BaseException:
            self.close(quiet=True)
            raise

    def _start(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise TestHostsError(reason)
        reap_stale_runs()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        RECORDS_DIR.mkdir(mode=0o700, exist_ok=True)
        self._choose_run_id()
        self._claim_block()
        run_dir = self.run_dir
        _keygen(self.client_key, f"cloudtask-testhosts-{self.run_id}")
        extra = f"{self.authorized.strip()}\n" if self.authorized else ""
        (run_dir / "client_keys").write_text(self.client_public_key + "\n" + extra)
        block = self.block
        assert block is not None
        mac_prefix = f"02:{self.run_id[:2]}:{self.run_id[2:4]}"  # locally administered
        for index in range(self.count):
            base = block.network_address + 4 * index
            netns = f"{NAME_PREFIX}{self.run_id}-{index}"
            directory = run_dir / f"host{index}"
            directory.mkdir()
            self.hosts.append(
                Host(
                    name=f"host{index}",
                    netns=netns,
                    address=str(base + 2),
                    port=22,
                    host_key_line="",
                    host_public_key="",
                    root_address=str(base + 1),
                    root_veth=netns,
                    mac=f"{mac_prefix}:{index >> 8:02x}:{index & 255:02x}:02",
                    root_mac=f"{mac_prefix}:{index >> 8:02x}:{index & 255:02x}:01",
                    directory=directory,
                )
            )
        lines = []
        for host in self.hosts:
            lines.append(f"netns add {host.netns}")
            lines.append(
                f"link add {host.root_veth} address {host.root_mac} type veth "
                f"peer name {NAMESPACE_INTERFACE} address {host.mac} netns {host.netns}"
            )
            lines.append(f"addr add {host.root_address}/30 dev {host.root_veth}")
            lines.append(f"link set {host.root_veth} up")
            lines.append(
                f"neigh replace {host.address} lladdr {host.mac} dev {host.root_veth} nud permanent"
            )
        _run(["ip", "-batch", "-"], stdin="\n".join(lines) + "\n")
        with ThreadPoolExecutor(max_workers=min(16, self.count)) as pool:
            for _ in pool.map(self._prepare_host, self.hosts):
                pass
        deadline = time.monotonic() + 20 + 0.1 * self.count
        for host in self.hosts:
            host._wait_ready(deadline)
        _settle(self.hosts)

    def _choose_run_id(self) -> None:
        for _ in range(20):
            run_id = secrets.token_hex(RUN_ID_LENGTH // 2)
            prefix = f"{NAME_PREFIX}{run_id}"
            names = _netns_names() + _link_names()
            if any(name.startswith(prefix) for name in names):
                continue
            run_dir = Path(tempfile.gettempdir()) / f"{RUN_DIR_PREFIX}{run_id}"
            try:
                run_dir.mkdir(mode=0o700)
            except FileExistsError:
                continue
            self.run_id, self._run_dir = run_id, run_dir
            return
        raise TestHostsError("no unused run id for test hosts")

    def _record(self) -> Path:
        return RECORDS_DIR / f"{self.run_id}.json"

    def _write_record(self) -> None:
        record = {
            "pid": self._owner,
            "block": str(self.block) if self.block else None,
            "run_dir": str(self._run_dir),
            "hosts": self.count,
        }
        _write_atomically(self._record(), json.dumps(record))

    def _claim_block(self) -> None:
        """Pick a free /22 of 198.18.0.0/15 and claim it with an `unreachable` route."""
        candidates = list(TEST_NETWORK.subnets(new_prefix=BLOCK_PREFIX))
        random.shuffle(candidates)
        used = _used_networks()
        for block in candidates:
            if any(block.overlaps(network) for network in used):
                continue
            self.block = block
            self._write_record()  # before the route, for reap_stale_runs()
            try:
                _run(["ip", *_block_route(block)])
            except TestHostsError:  # another run claimed it meanwhile
                used = _used_networks()
                continue
            return
        self.block = None
        self._write_record()
        raise TestHostsError(f"no free /{BLOCK_PREFIX} in {TEST_NETWORK} for test hosts")

    def _prepare_host(self, host: Host) -> None:
        _run(
            ["ip", "-n", host.netns, "-batch", "-"],
            stdin=(
                f"addr add {host.address}/30 dev {NAMESPACE_INTERFACE}\n"
                "link set lo up\n" + host._namespace_link_up()
            ),
        )
        host._set_host_key(_keygen(host.host_key, host.name))
        (host.directory / "sshd_config").write_text(self._sshd_config(host))
        host._start_sshd()

    def _sshd_config(self, host: Host) -> str:
        return f"""\
ListenAddress {host.address}:{host.port}
AddressFamily inet
HostKey {host.host_key}
PidFile {host.directory / "sshd.pid"}
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys {self.run_dir / "client_keys"}
# Debian's bash skips ~/.bashrc (pyenv, ~90 ms) for ssh commands when SHLVL is set.
SetEnv SHLVL=1
MaxStartups 100:30:200
MaxSessions 100
LoginGraceTime 30
LogLevel ERROR
UseDNS no
X11Forwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
PrintLastLog no
PermitUserEnvironment no
Subsystem sftp internal-sftp
"""

    def _close_at_exit(self) -> None:
        if os.getpid() == self._owner:  # not in a forked child
            self.close(quiet=True)

    def close(self, quiet: bool = False) -> None:
        """Remove every host: processes, namespaces, veths, the block's route, files.

        Raises TestHostsError if something is left, unless quiet.
        """
        with self._lock:
            if self._state == "closed" or os.getpid() != self._owner:
                return
            self._state = "closed"
        atexit.unregister(self._close_at_exit)
        problems: list[str] = []
        namespaces = [host.netns for host in self.hosts]
        # The sockets of a cut host's killed processes wait to send on its link,
        # and keep its namespace (and veth) from going away: heal it first.
        for host in self.hosts:
            if host._cut:
                with contextlib.suppress(TestHostsError):
                    host.heal()
        try:
            _kill_namespaces(namespaces)
        except TestHostsError as error:
            problems.append(str(error))
        for host in self.hosts:
            with contextlib.suppress(subprocess.TimeoutExpired):
                host._reap_sshd()
        commands = [f"netns del {name}" for name in namespaces]
        if self.block is not None:
            commands.append(f"route del unreachable {self.block} proto {ROUTE_PROTOCOL}")
        if commands:
            _run(["ip", "-force", "-batch", "-"], stdin="\n".join(commands) + "\n", check=False)
        if namespaces:
            # The kernel removes a namespace, and its veth pair, in the background.
            deadline = time.monotonic() + 30
            prefix = f"{NAME_PREFIX}{self.run_id}-"
            while True:
                left = [n for n in _netns_names() + _link_names() if n.startswith(prefix)]
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if left:
                problems.append(f"left after cleanup: {', '.join(sorted(set(left)))}")
        if self.run_id:
            self._record().unlink(missing_ok=True)
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        if problems and not quiet:
            raise TestHostsError("; ".join(problems))
