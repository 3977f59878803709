"""Helpers shared by the SSH worker and fault tests."""

from __future__ import annotations

import collections
import fcntl
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support import helpers
from tests.support.hosts import Host, TestHosts
from tests.support.wait import wait_until

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))
AUTHORIZED_KEYS = Path("/root/.ssh/authorized_keys")
RUN_TIMEOUT = 60

# A job script: records where it ran (the server address of $SSH_CONNECTION),
# how much stdin it got, and its start and end. Arguments: job id, seconds to
# sleep (or "slow:ADDRESS:SLOW:FAST": SLOW seconds on ADDRESS, FAST elsewhere). While
# a file `fast` is beside the script, no job sleeps (a resume need not wait).
JOB_SCRIPT = r"""#!/bin/sh
marks="$(dirname "$0")/marks"
addr=$(echo "$SSH_CONNECTION" | cut -d' ' -f3)
stdin=$(cat | wc -c)
echo "start $1 $addr stdin=$stdin" >> "$marks"
echo "job $1 on $addr"
case "$2" in
  slow:*) IFS=: read -r _ slow_addr slow fast <<EOF
$2
EOF
    if [ "$addr" = "$slow_addr" ]; then seconds=$slow; else seconds=$fast; fi ;;
  *) seconds=${2:-0} ;;
esac
[ -e "$(dirname "$0")/fast" ] && seconds=0
[ "$seconds" = 0 ] || sleep "$seconds"
echo "end $1 $addr" >> "$marks"
"""


# --- shared helpers (tests/integration/test_ssh_faults.py uses them too) ----------------------


@dataclass(frozen=True)
class KeysSnapshot:
    """The bytes of /root/.ssh/authorized_keys (None: absent) at a test's start."""

    content: bytes | None

    @classmethod
    def take(cls) -> KeysSnapshot:
        return cls(AUTHORIZED_KEYS.read_bytes() if AUTHORIZED_KEYS.exists() else None)

    def current(self) -> bytes | None:
        return AUTHORIZED_KEYS.read_bytes() if AUTHORIZED_KEYS.exists() else None

    def assert_unchanged(self) -> None:
        now = self.current()
        if self.content is None:
            assert now is None, f"{AUTHORIZED_KEYS} was created: {now!r}"
        else:
            assert now == self.content, (
                f"{AUTHORIZED_KEYS} changed (or another cloudtask session on this machine "
                f"edited it meanwhile):\nbefore {self.content!r}\nafter  {now!r}"
            )

    def restore(self) -> None:
        """Remove the lines added since the snapshot (a session key a failed test left).

        Only added lines go: writing the snapshot back whole would resurrect lines
        that another session on this machine removed meanwhile.
        """
        now = self.current()
        if now == self.content or now is None:
            return
        directory = os.open(AUTHORIZED_KEYS.parent, os.O_RDONLY)
        try:
            fcntl.flock(directory, fcntl.LOCK_EX)  # as cloudtask's own edits do
            self._remove_added()
        finally:
            os.close(directory)

    def _remove_added(self) -> None:
        now = self.current() or b""
        before = collections.Counter((self.content or b"").splitlines(keepends=True))
        kept = []
        for line in now.splitlines(keepends=True):
            if before[line] > 0:
                before[line] -= 1
                kept.append(line)
        text = b"".join(kept)
        if not text and self.content is None:
            AUTHORIZED_KEYS.unlink(missing_ok=True)
            AUTHORIZED_KEYS.with_name(".authorized_keys.cloudtask-created").unlink(missing_ok=True)
        elif text != now:
            temporary = AUTHORIZED_KEYS.with_name(".authorized_keys.test-restore")
            temporary.write_bytes(text)
            os.chmod(temporary, 0o600)
            temporary.replace(AUTHORIZED_KEYS)


def env_for(home: Path) -> dict[str, str]:
    return helpers.env_with(HOME=str(home))


def cloudtask(
    home: Path,
    *args: str,
    input: bytes = b"",
    identity: Path | None = None,
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    argv = [CLOUDTASK, "--force"]
    if identity is not None:
        argv.append(f"--ssh-identity={identity}")
    result = helpers.run([*argv, *args], input=input, env=env_for(home), timeout=timeout)
    helpers.assert_no_traceback(result)
    return result


def jobs_input(count: int, *extra: str) -> bytes:
    return "".join(" ".join([str(n), *extra]) + "\n" for n in range(1, count + 1)).encode()


def marks(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "marks"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def starts(tmp_path: Path) -> list[tuple[int, str]]:
    return [(int(m[1]), m[2]) for m in marks(tmp_path) if m[0] == "start"]


def ends(tmp_path: Path) -> list[tuple[int, str]]:
    return [(int(m[1]), m[2]) for m in marks(tmp_path) if m[0] == "end"]


def session_dir(result: subprocess.CompletedProcess[str]) -> Path:
    return helpers.sessions_dir() / str(helpers.summary(result).id)


def job_processes(host: Host, needle: str = "sleep") -> list[str]:
    return [p.cmdline for p in host.processes() if needle in p.cmdline]


def assert_no_job_processes(hosts: TestHosts, needle: str = "sleep", timeout: float = 10) -> None:
    def clean() -> bool:
        return all(not job_processes(host, needle) for host in hosts)

    try:
        wait_until(clean, timeout, "no job process left")
    except AssertionError:
        left = {host.name: job_processes(host, needle) for host in hosts}
        raise AssertionError(f"job processes left on the hosts after {timeout} s: {left}") from None


# --- a batch ----------------------------------------------------------------------------------
