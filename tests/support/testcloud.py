"""A test cloud whose instances are real SSH test hosts (tests/support/hosts.py).

`HostsBackend` is the backend of the Hub API test server (tests/support/hubserver.py):
launching an instance starts a network namespace with its own sshd, and
destroying it removes them again. So the hub and libcloud providers' real
code runs end to end: API calls, booting, SSH, jobs, destruction.

Every host authorizes the cloud's own key (`key`): give it to cloudtask as
--ssh-identity, as a real cloud account's key would be. `Cloud` is the whole
test cloud: such a backend behind the Hub API test server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.support import helpers
from tests.support.hosts import TestHosts
from tests.support.hubserver import HubServer
from tests.support.processes import stop_watchdogs

from cloudtask.transport.agent_program import LEASE_PREFIX

APIKEY = "hub-key-7d1f0c2a-never-shown"


class HostsBackend:
    def __init__(self, directory: Path, boot_delay: float = 0.0) -> None:
        self.boot_delay = boot_delay  # seconds each instance takes to boot, before its host
        self.key = directory / "cloud_key"
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "test-cloud",
                "-f",
                str(self.key),
            ],
            check=True,
        )
        self.public_key = self.key.with_suffix(".pub").read_text().strip()
        self._hosts: dict[str, TestHosts] = {}
        self._lock = threading.Lock()
        self.created: list[str] = []
        self.removed: list[str] = []
        self.addresses: dict[str, str] = {}  # instance id -> its host's address
        # Report a key other than the host's own, as a tampered-with record would.
        self.report_wrong_host_keys = False
        # Boot hosts whose sshd never comes up (SSH refused for as long as one waits).
        self.sshd_down = False

    def create(self, instance_id: str) -> tuple[str, list[str]]:
        time.sleep(self.boot_delay)
        hosts = TestHosts(1, authorized=self.public_key)
        hosts.start()
        with self._lock:
            self._hosts[instance_id] = hosts
            self.created.append(instance_id)
            self.addresses[instance_id] = hosts[0].address
        host = hosts[0]
        if self.sshd_down:
            host.stop_sshd()
        if self.report_wrong_host_keys:
            return host.address, [self.public_key.rsplit(" ", 1)[0]]
        return host.address, [host.host_public_key]

    def remove(self, instance_id: str) -> None:
        with self._lock:
            hosts = self._hosts.pop(instance_id, None)
            self.removed.append(instance_id)
        if hosts is not None:
            hosts.close()

    def alive(self) -> list[str]:
        """Instances whose host still exists."""
        with self._lock:
            return list(self._hosts)

    def hosts(self, instance_id: str) -> TestHosts:
        with self._lock:
            return self._hosts[instance_id]

    def close(self) -> list[str]:
        """Remove every host left; the ids that were left."""
        left = self.alive()
        for instance_id in left:
            self.remove(instance_id)
        return left


class Cloud:
    """The test cloud: a Hub API server whose instances are test hosts."""

    def __init__(self, tmp_path: Path, boot_delay: float = 0.0, apikey: str = APIKEY) -> None:
        self.started = time.time()
        self.backend = HostsBackend(tmp_path, boot_delay=boot_delay)
        self.hub = HubServer(apikey, self.backend).start()

    def options(self) -> list[str]:
        return [
            "--provider=hub",
            f"--hub-url={self.hub.url}",
            f"--ssh-identity={self.backend.key}",
            "--keepalive=1",
        ]

    def close(self) -> list[str]:
        """Stop the server and remove every host left; the instance ids that were left."""
        # Watchdogs have until now to finish; the cloud they sweep goes away.
        stop_watchdogs(helpers.sessions_dir())
        self.hub.stop()
        left = self.backend.close()
        remove_leases(self.started)
        return left


def remove_leases(since: float) -> None:
    """Remove the lease directories the agents of launched test workers made
    since then (on a real instance they go with its disk), stopping any
    keeper still running (a destroyed host's keeper died with it)."""
    for directory in Path("/tmp").glob(f"{LEASE_PREFIX}*"):
        with contextlib.suppress(OSError):
            if directory.stat().st_mtime < since - 1:
                continue
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int((directory / "keeper").read_text()), signal.SIGKILL)
            shutil.rmtree(directory)
