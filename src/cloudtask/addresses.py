"""Worker addresses: `--workers` as a file or a list, `user@host:port` each."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .paths import named_file

# A host name as DNS (and ~/.ssh/config Host aliases) allow it.
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?")


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{host}{port}"

    @property
    def label(self) -> str:
        """The worker's name (in event lines, logs, its log file's name): the
        host, and the port when not 22, as written in an address."""
        if self.port in (None, 22):
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """One address; ValueError with the reason when it is not one."""
    user: str | None = None
    rest = text
    if "@" in text:
        user, _, rest = text.rpartition("@")
        if not _USER.fullmatch(user):
            raise ValueError(f"bad user name in {text!r}")
    port: str | None = None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"bad bracketed address {text!r}")
        port = after[1:] if after else None
        _check_ipv6(host, text)
    elif rest.count(":") > 1:  # a bare IPv6 address: no port possible
        host = rest
        _check_ipv6(host, text)
    else:
        host, colon, port_text = rest.partition(":")
        port = port_text if colon else None
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"bad host in {text!r}")
    return Address(host, user, _port(port, text))


def _check_ipv6(host: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host.split("%")[0])
    except ValueError:
        raise ValueError(f"bad IPv6 address in {text!r}") from None


def _port(port: str | None, text: str) -> int | None:
    if port is None:
        return None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return int(port)


def read_addresses(value: str) -> list[Address]:
    """The addresses a --workers value names: a file (one per line, # comments) or a list.

    Raises ValueError naming the file line or the list item that is bad.
    """
    path = named_file(value)
    if path is not None:
        addresses = []
        # utf-8-sig: a byte order mark some editors write is not part of the first address.
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            words = line.split("#", 1)[0].split()
            for word in words:
                try:
                    addresses.append(parse_address(word))
                except ValueError as exc:
                    raise ValueError(f"{path} line {number}: {exc}") from None
        if not addresses:
            raise ValueError(f"{path} has no worker addresses")
        return addresses
    words = [word for word in re.split(r"[\s,]+", value) if word]
    if not words:
        raise ValueError("no worker addresses")
    return [parse_address(word) for word in words]
