#!/usr/bin/env python3
"""Time from start to the first job running: local, SSH workers, launched workers.

    .venv/bin/python benchmarks/first_job.py [--runs 3]

Needs root (test hosts are network namespaces). Each row starts the command
and times it until the first job's output line appears (the job is `echo`):

- cloudtask on the local provider, and GNU parallel -j1 locally;
- cloudtask on one SSH test host (--workers), and GNU parallel -S on it;
- cloudtask launching one worker on the test cloud: the Hub API test server
  on loopback, whose launch starts a real SSH test host (tests/support/testcloud.py),
  so the figure includes the launch call, booting (a network namespace and
  sshd, far quicker than a real cloud's minutes), SSH and the first job.

Prints the median of --runs runs per row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.hosts import TestHosts
from tests.support.hubserver import HubServer
from tests.support.testcloud import HostsBackend

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))
APIKEY = "benchmark-key"


def time_to_output(argv: list[str], env: dict[str, str], marker: bytes) -> float:
    """Seconds from start until a line containing marker is printed."""
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"first-job\n")
    process.stdin.close()
    elapsed = None
    for line in process.stdout:
        if marker in line and elapsed is None:
            elapsed = time.monotonic() - started
    process.wait()
    if elapsed is None or process.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed (exit {process.returncode})")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        home = root / "home"
        (home / ".ssh").mkdir(parents=True)
        env = {**os.environ, "CLOUDTASK_SESSIONS": str(root / "sessions"), "HOME": str(home)}

        def measure(name: str, argv: list[str], marker: bytes = b"first-job") -> None:
            rows.append((name, [time_to_output(argv, env, marker) for _ in range(args.runs)]))

        measure("cloudtask, local", [CLOUDTASK, "--force", "echo"])
        measure("GNU parallel, local", ["parallel", "-j1", "echo"])
        with TestHosts(1) as hosts:
            host = hosts[0]
            measure(
                "cloudtask, 1 SSH worker",
                [
                    CLOUDTASK,
                    "--force",
                    f"--workers={host.login}",
                    f"--ssh-identity={hosts.client_key}",
                    "echo",
                ],
            )
            ssh = " ".join(["ssh", *hosts.ssh_options()])
            measure(
                "GNU parallel -S, 1 SSH worker",
                ["parallel", "--ssh", ssh, "-S", host.login, "echo"],
            )
        backend = HostsBackend(root)
        with HubServer(APIKEY, backend) as hub:
            measure(
                "cloudtask, 1 launched worker",
                [
                    CLOUDTASK,
                    "--force",
                    "--provider=hub",
                    f"--hub-url={hub.url}",
                    f"--hub-apikey={APIKEY}",
                    f"--ssh-identity={backend.key}",
                    "echo",
                ],
            )
            hub.settle()
        left = backend.close()
        if left:
            raise RuntimeError(f"launched test hosts left: {left}")
    print(f"time to the first job's output, median of {args.runs} runs (seconds)")
    print(f"{'what':<34}{'median':>8}{'min':>8}{'max':>8}")
    for name, times in rows:
        print(f"{name:<34}{statistics.median(times):>8.2f}{min(times):>8.2f}{max(times):>8.2f}")


if __name__ == "__main__":
    main()
