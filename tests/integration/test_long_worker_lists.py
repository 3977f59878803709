"""--workers with 50 addresses: a list longer than a file name may be is a list.

A value is a file only when it names one (SPEC section 12). Before, any list
longer than 255 bytes failed with "File name too long", and so did every
resume of a session started from a file of that many workers, since the
session stores the addresses as such a list.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.support import helpers
from tests.support.hosts import TestHosts
from tests.support.ssh import KeysSnapshot, cloudtask, session_dir

WORKERS = 50


def fifty(hosts: TestHosts) -> list[str]:
    """50 addresses, `root@ADDRESS:22`, taking the three hosts in turn (a slot each)."""
    return [f"{hosts[n % len(hosts)].login}:22" for n in range(WORKERS)]


def check_every_slot_ran(result: subprocess.CompletedProcess[str], jobs: int) -> None:
    assert helpers.counts(result) == (0, jobs, 0, 0, 0, jobs)
    logs = session_dir(result) / "workers"
    assert len(list(logs.iterdir())) == WORKERS


@pytest.mark.parametrize("separator", [" ", ",", ", ", "\n"])
def test_fifty_addresses_as_a_list(
    hosts: TestHosts, home: Path, separator: str, authorized_keys: KeysSnapshot
) -> None:
    value = separator.join(fifty(hosts))
    assert len(value) > 255  # longer than a file name may be
    result = cloudtask(
        home, f"--workers={value}", "true", input=b"x\n" * WORKERS, identity=hosts.client_key
    )
    assert result.returncode == 0, result.stderr
    assert helpers.split_shown(result.stdout) == WORKERS
    check_every_slot_ran(result, WORKERS)
    authorized_keys.assert_unchanged()


def test_fifty_addresses_in_a_file_and_the_retry_that_reads_them_back(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    listing = tmp_path / "workers.txt"
    listing.write_text("# fifty slots\n" + "\n".join(fifty(hosts)) + "\n")
    go = tmp_path / "go"
    # Every job fails until `go` exists: the retry runs them all again.
    command = f"test -e {go} && true"  # the job's word goes to true
    first = cloudtask(
        home, f"--workers={listing}", command, input=b"x\n" * WORKERS, identity=hosts.client_key
    )
    assert first.returncode == 1, first.stderr
    assert helpers.counts(first) == (WORKERS, WORKERS, 0, 0, WORKERS, 0)
    session = helpers.summary(first).id

    # The file is gone: the retry works from the stored value, a long list.
    listing.unlink()
    go.touch()
    again = cloudtask(home, f"--retry={session}", identity=hosts.client_key)
    assert again.returncode == 0, again.stderr
    assert helpers.split_shown(again.stdout) == WORKERS
    assert helpers.counts(again) == (0, WORKERS, 0, 0, 0, WORKERS)
    authorized_keys.assert_unchanged()


def test_a_path_that_is_no_file_is_still_refused(home: Path, tmp_path: Path) -> None:
    """Narrowing what is a file must keep the neighbours: a missing file is an error."""
    result = cloudtask(home, f"--workers={tmp_path}/nope.txt", "true", input=b"x\n")
    assert result.returncode == 2
    assert result.stderr.startswith("cloudtask: --workers: no such file: ")
    assert "nope.txt" in result.stderr
