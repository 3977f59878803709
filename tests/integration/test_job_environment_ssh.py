"""Over SSH too, each job sees its session, number, attempt and worker (issue 13,
item 6), passed on the command line (env(1)): workers need not AcceptEnv."""

from __future__ import annotations

from pathlib import Path

from tests.support import helpers
from tests.support.hosts import TestHosts
from tests.support.ssh import KeysSnapshot, cloudtask

SHOW = """\
#!/bin/sh
echo "session=$CLOUDTASK_SESSION job=$CLOUDTASK_JOB" \\
  "attempt=$CLOUDTASK_ATTEMPT worker=$CLOUDTASK_WORKER arg=$1"
if [ "$1" = b ] && mkdir "$(dirname "$0")/tried" 2>/dev/null; then exit 1; fi
"""


def test_each_job_on_an_ssh_worker_sees_its_session_number_attempt_and_worker(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    script = tmp_path / "show"
    script.write_text(SHOW)
    script.chmod(0o755)
    host = hosts[0]

    result = cloudtask(
        home,
        f"--workers={host.login}",
        "--retries=1",
        str(script),
        input=b"a\nb\nc\n",
        identity=hosts.client_key,
    )

    assert result.returncode == 0, result.stderr
    session = helpers.summary(result).id
    seen = helpers.outputs_by_job(result.stdout)
    where = f"worker={host.address}"
    assert seen == {
        1: [f"session={session} job=1 attempt=1 {where} arg=a"],
        2: [
            f"session={session} job=2 attempt=1 {where} arg=b",
            f"session={session} job=2 attempt=2 {where} arg=b",
        ],
        3: [f"session={session} job=3 attempt=1 {where} arg=c"],
    }
    authorized_keys.assert_unchanged()


def test_lines_and_replace_reach_an_ssh_worker_as_given(
    hosts: TestHosts, home: Path, tmp_path: Path, authorized_keys: KeysSnapshot
) -> None:
    """Input modes and --replace are the controller's: over SSH the job gets
    exactly the arguments a local one does (issue 13, items 1 and 2)."""
    names = ["file 1.txt", "don't.txt", "$HOME `x`", "-n"]
    result = cloudtask(
        home,
        f"--workers={hosts[0].login}",
        "--lines",
        "--replace",
        "printf '<%s>' {} end",
        input="".join(f"{name}\n" for name in names).encode(),
        identity=hosts.client_key,
    )

    assert result.returncode == 0, result.stderr
    seen = helpers.outputs_by_job(result.stdout)
    assert seen == {n: [f"<{name}><end>"] for n, name in enumerate(names, 1)}
    authorized_keys.assert_unchanged()
