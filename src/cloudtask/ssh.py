"""SSH connections to workers: OpenSSH config, host keys, the session key.

- Addresses are resolved as OpenSSH would (~/.ssh/config Host aliases,
  HostName, Port, User, IdentityFile, ProxyJump), through asyncssh.
- Host keys are checked against the user's known_hosts. A host with no
  entry there is trusted on first use and its key pinned in the session's
  own known_hosts file; a host whose key differs from its entry is refused.
- Each session has a key pair of its own: its public key is added to the
  worker's authorized_keys at setup and removed at cleanup, under a lock on
  ~/.ssh, removing exactly the one line this worker added.
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import shlex
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.config import SSHClientConfig

from .addresses import Address
from .errors import WorkerError
from .paths import PRIVATE_FILE
from .transport.ssh import SSHTransport

# asyncssh's own log lines would reach stderr through logging's last resort;
# what matters of them reaches the user as cloudtask's one-line messages.
logging.getLogger("asyncssh").addHandler(logging.NullHandler())

# A worker whose keepalives go unanswered this many times in a row is failed.
KEEPALIVE_COUNT = 3
CONNECT_TIMEOUT = 30.0
# AES-GCM first: with AES-NI it costs a third less controller CPU per job than
# chacha20-poly1305 (measured in benchmarks/ssh_jobs.py); the rest as fallback.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
USER_CONFIG = Path("~/.ssh/config")
USER_KNOWN_HOSTS = (Path("~/.ssh/known_hosts"), Path("/etc/ssh/ssh_known_hosts"))


def user_config_paths() -> list[str]:
    path = USER_CONFIG.expanduser()
    return [str(path)] if os.access(path, os.R_OK) else []


@dataclass(frozen=True)
class Target:
    """Where an address really leads, once ~/.ssh/config is applied."""

    address: Address
    host: str  # HostName, or the address's host
    port: int
    user: str
    proxied: bool  # reached through ProxyJump or ProxyCommand


def resolve_target(address: Address, default_user: str, user_given: bool) -> Target:
    """Apply ~/.ssh/config to an address, as `ssh` would.

    The user is, highest first: the address's own, --user when given, the
    config's User, then --user's default.
    """
    # `()` is asyncssh's "not given": None would count as given, and the
    # config file's User and Port lines would then be skipped.
    not_given: Any = ()
    config = SSHClientConfig.load(
        None,
        user_config_paths(),
        False,
        False,
        False,
        getpass.getuser(),
        not_given,
        address.host,
        address.port if address.port is not None else not_given,
    )
    host = str(config.get("Hostname") or address.host)
    port = address.port or int(str(config.get("Port") or 22))
    config_user = config.get("User")
    user = address.user or (default_user if user_given or not config_user else str(config_user))
    proxied = bool(config.get("ProxyJump") or config.get("ProxyCommand"))
    return Target(address, host, port, user, proxied)


def resolvable(target: Target) -> bool:
    """Whether the host name is known here (found before anything runs)."""
    if target.proxied:
        return True  # only the jump host can resolve it
    try:
        socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return True


class SessionKey:
    """The run's own key pair: only in memory, never written to disk here.

    `maybe_left` holds the workers where adding it may have happened unseen:
    the add failed or was cut off after it was sent. Its one-copy removal at
    cleanup does not cover those; every copy is removed from them at the end.
    """

    def __init__(
        self,
        session_id: int,
        sent: Callable[[Target], None] | None = None,
        removed: Callable[[Target], None] | None = None,
    ) -> None:
        comment = f"cloudtask-session-{session_id}-{secrets.token_hex(4)}"
        self.private = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        self.line = self.private.export_public_key("openssh").decode().strip()
        self.maybe_left: dict[tuple[str, int, str], Target] = {}
        # Told before the key is added to a worker, and once a copy is removed
        # again: the session records where its keys may be left.
        self.sent = sent or (lambda target: None)
        self.removed = removed or (lambda target: None)


# Edits of ~/.ssh/authorized_keys hold a lock on ~/.ssh (flock on the directory
# leaves no lock file behind). Removal writes a copy without one line of ours
# and renames it into place, so sshd never reads a half-written file.
_LOCKED = "umask 077; mkdir -p ~/.ssh; exec 9<~/.ssh; command -v flock >/dev/null && flock 9; "
# Both edits leave every other byte of the file as it was. Adding appends the
# key line, or puts it first when the last line has no newline (appending would
# change that line). A file that did not exist is marked as created by
# cloudtask, and removed again once empty and no session key is left in it.
_KEYS = (
    'f=~/.ssh/authorized_keys; m=~/.ssh/.authorized_keys.cloudtask-created; t="$f.cloudtask.$$"; '
)
_ADD = (
    _LOCKED
    + _KEYS
    + (
        'if [ ! -e "$f" ]; then : >"$f" && : >"$m" || exit 1; fi; '
        'if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then '
        '{ cp -p "$f" "$t" && { printf "%s\\n" "$1"; cat "$f"; } >"$t" && mv -f "$t" "$f"; } '
        '|| { rm -f "$t"; exit 1; }; '
        'else printf "%s\\n" "$1" >>"$f"; fi'
    )
)
_REMOVE = (
    _LOCKED
    + _KEYS
    + (
        '[ -f "$f" ] || exit 0; '
        'if [ "$2" = all ]; then most=; else most="-m 1"; fi; '
        'n=$(grep -nxF $most -- "$1" "$f" | cut -d: -f1 | sed "s/\\$/d/" | tr "\\n" ";"); '
        'if [ -n "$n" ]; then '
        '{ cp -p "$f" "$t" && sed "$n" "$f" >"$t" && mv -f "$t" "$f"; } '
        '|| { rm -f "$t"; exit 1; }; '
        "fi; "
        # Removing every copy says how many lines went.
        'if [ -n "$most" ]; then :; else printf "%s" "$n" | tr -cd ";" | wc -c; fi; '
        'if [ -e "$m" ] && ! grep -q " cloudtask-session-" "$f"; then '
        '[ -s "$f" ] || rm -f "$f"; rm -f "$m"; fi'
    )
)


def authorized_keys_command(script: str, key_line: str, every: bool = False) -> str:
    """The edit as a command line; `every` removes each copy of the line, not one."""
    extra = " all" if every else ""
    return f"/bin/sh -c {shlex.quote(script)} cloudtask-keys {shlex.quote(key_line)}{extra}"


# (trusted host keys, trusted CA keys, revoked keys), as asyncssh takes them.
KnownKeys = tuple[list[Any], list[Any], list[Any]]


class HostKeys:
    """Host keys trusted for this session: known_hosts, plus keys pinned on first use."""

    def __init__(self, pins_path: Path, known_hosts: tuple[Path, ...] = USER_KNOWN_HOSTS) -> None:
        files = [str(path.expanduser()) for path in known_hosts if path.expanduser().is_file()]
        self.known = asyncssh.read_known_hosts(files) if files else None
        self.pins_path = pins_path
        self.pins = asyncssh.read_known_hosts(str(pins_path)) if pins_path.is_file() else None

    def trusted(self, host: str, addr: str, port: int | None) -> KnownKeys:
        keys: list[Any] = []
        cas: list[Any] = []
        revoked: list[Any] = []
        for source in (self.known, self.pins):
            if source is not None:
                found = source.match(host, addr, port)
                keys += found[0]
                cas += found[1]
                revoked += found[2]
        return keys, cas, revoked

    def first_use(self, host: str, addr: str, port: int | None, key: asyncssh.SSHKey) -> bool:
        """A key not among the trusted: pin it if the host is unknown, refuse if it changed."""
        keys, cas, _ = self.trusted(host, addr, port)
        if key in keys:
            return True  # pinned meanwhile, by another connection to the same host
        if keys or cas:
            return False
        self.pin(host, port, [key.export_public_key("openssh").decode().strip()])
        return True

    def trusted_where(self, host: str, addr: str, port: int | None) -> str:
        """Where the keys trusted for the host come from, and how to forget
        them when the change is expected, for a refusal's message."""
        pattern = shlex.quote(host if port in (None, 22) else f"[{host}]:{port}")
        if self.known is not None and any(self.known.match(host, addr, port)[:2]):
            # ssh-keygen -R edits ~/.ssh/known_hosts; the system file is the admin's.
            return f"known_hosts; if the change is expected: ssh-keygen -R {pattern}"
        return (
            f"the key pinned in {self.pins_path}; if the change is expected: "
            f"ssh-keygen -f {shlex.quote(str(self.pins_path))} -R {pattern}"
        )

    def pin(self, host: str, port: int | None, key_lines: Sequence[str]) -> None:
        """Trust these keys for the host from now on (and in the session's later runs)."""
        pattern = host if port in (None, 22) else f"[{host}]:{port}"
        text = "".join(f"{pattern} {line.strip()}\n" for line in key_lines)
        self.pins_path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.pins_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        with os.fdopen(fd, "a") as pins:
            pins.write(text)
        self.pins = asyncssh.read_known_hosts(str(self.pins_path))


@dataclass
class _Client(asyncssh.SSHClient):
    host_keys: HostKeys
    lost: str | None = None
    refused_key: str | None = None  # where the key it did not match came from

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        if self.host_keys.first_use(host, addr, port, key):
            return True
        self.refused_key = self.host_keys.trusted_where(host, addr, port)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = f"connection lost: {exc}" if exc else "connection closed"


class HostKeyRefused(WorkerError):
    """The worker's host key is not the one trusted for it: never worth a retry."""


class LoginRefused(WorkerError):
    """The worker's sshd answered and refused every key offered."""


@dataclass(frozen=True)
class SSHOptions:
    identity: Path | None
    keepalive: float
    host_keys: HostKeys
    connect_timeout: float = CONNECT_TIMEOUT  # the TCP connection and the login


async def connect(
    target: Target, options: SSHOptions, session_key: SessionKey, *, launched: bool = False
) -> SSHTransport:
    """A connection to the worker, with the session key authorized on it.

    Closing it removes the key again; if the connection is lost by then, a new
    one is made with the session key itself (the user's agent may be gone).
    A `launched` worker is destroyed at its end, never reconnected to: its
    login offers the session key (injected at boot, where the cloud allows)
    and the user's identity, and nothing is added to its authorized_keys.
    """
    identity = [str(options.identity)] if options.identity else []
    with_session_key = [session_key.private, *identity]
    if launched:
        return await _open(target, options, with_session_key)

    async def reconnect() -> SSHTransport:
        return await _open(target, options, with_session_key)

    transport = await _open(target, options, identity or (), reconnect)
    key = session_key.line
    session_key.sent(target)
    try:
        await _edit_keys(transport, authorized_keys_command(_ADD, key), "authorize the key")
    except BaseException:  # a failure or an abort: the add may have run all the same
        session_key.maybe_left[(target.host, target.port, target.user)] = target
        await transport.disconnect()
        raise

    async def remove_key(over: SSHTransport) -> None:
        command = authorized_keys_command(_REMOVE, key)
        await _edit_keys(over, command, "remove the session key")
        session_key.removed(target)

    transport.on_close(remove_key)
    return transport


async def remove_stale_keys(target: Target, options: SSHOptions, keys: Sequence[str]) -> int:
    """Remove every copy of these session keys from the worker: earlier runs',
    or this run's where adding it may have happened unseen. How many lines
    were removed.

    Over a connection of its own, made with the user's identity: an earlier
    run's private key died with it.
    """
    identity = [str(options.identity)] if options.identity else []
    transport = await _open(target, options, identity or ())
    removed = 0
    try:
        for key in keys:
            command = authorized_keys_command(_REMOVE, key, every=True)
            said = await _edit_keys(transport, command, "remove a session key")
            removed += sum(int(word) for word in said.split() if word.isdigit())
    finally:
        await transport.disconnect()
    return removed


async def _open(
    target: Target,
    options: SSHOptions,
    client_keys: Any,
    reconnect: Callable[[], Awaitable[SSHTransport]] | None = None,
) -> SSHTransport:
    """One SSH connection, asyncssh's errors translated into WorkerError."""
    client = _Client(options.host_keys)
    name = str(target.address)
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: client,
            target.address.host,
            port=target.port,
            username=target.user,
            config=user_config_paths(),
            known_hosts=options.host_keys.trusted,
            client_keys=client_keys,
            password_auth=False,
            kbdint_auth=False,
            keepalive_interval=options.keepalive,
            keepalive_count_max=KEEPALIVE_COUNT,
            connect_timeout=options.connect_timeout,
            encryption_algs=CIPHERS,
        )
    except asyncssh.HostKeyNotVerifiable:
        if client.refused_key:
            raise HostKeyRefused(
                f"host key of {name} has changed (it does not match {client.refused_key}): refused"
            ) from None
        raise HostKeyRefused(f"host key of {name} could not be verified: refused") from None
    except asyncssh.PermissionDenied:
        login = f"{target.user}@{target.host}" + (f":{target.port}" if target.port != 22 else "")
        raise LoginRefused(
            f"{name}: permission denied for {login} (key authentication only)"
        ) from None
    except TimeoutError:
        raise WorkerError(
            f"cannot connect to {name}: timed out after {options.connect_timeout:g} s"
        ) from None
    except (asyncssh.Error, OSError) as exc:
        raise WorkerError(f"cannot connect to {name}: {str(exc) or type(exc).__name__}") from None
    return SSHTransport(conn, lambda: client.lost, reconnect)


async def _edit_keys(transport: SSHTransport, command: str, what: str) -> str:
    """Run an authorized_keys edit; what it printed, or WorkerError saying why it failed."""
    output: list[bytes] = []
    result = await transport.run(command, timeout=CONNECT_TIMEOUT, output=output.append)
    said = b"".join(output).decode(errors="replace")
    if not result.ok:
        detail = said.strip().splitlines()
        raise WorkerError(
            f"cannot {what}: {result.describe()}" + (f": {detail[-1]}" if detail else "")
        )
    return said
