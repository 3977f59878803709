#!/usr/bin/env python3
"""One controller, many SSH workers: how cost per job grows with the worker count.

    .venv/bin/python benchmarks/many_workers.py [--sizes 4,50,200] [--jobs 20000]
                                                [--parallel-jobs 1000]

Needs root. For each size it starts that many test hosts (network namespaces
with a lean sshd, tests/support/hosts.py), runs --jobs tiny `echo N` jobs through one
cloudtask (one job at a time per host), and checks in the session store that
every job ran exactly once and ended ok. It samples the controller's open
file descriptors and resident memory while it runs. GNU parallel
(--sshlogin with --controlmaster, one job at a time per host) runs
--parallel-jobs jobs on the same hosts in the same run, as the baseline.

Prints one table: workers, jobs, wall seconds, jobs per second, controller
CPU per job (user + system of cloudtask and its children), peak RSS, peak
open fds and fds per worker; then checks the target of issue 7: CPU per job
at the largest size within 2x of the smallest.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.hosts import TestHosts
from tests.support.many_workers import Row, bench_cloudtask, children_cpu

CPU_GROWTH_LIMIT = 2.0


def bench_parallel(hosts: TestHosts, jobs: int, timeout: float) -> Row:
    ssh = " ".join(["ssh", *(shlex.quote(option) for option in hosts.ssh_options())])
    logins = ",".join(f"1/{host.login}" for host in hosts)
    argv = ["parallel", "--controlmaster", "--ssh", ssh, "--sshlogin", logins, "echo"]
    before = children_cpu()
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            input="".join(f"{n}\n" for n in range(1, jobs + 1)),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        lines = sorted(done.stdout.split(), key=int)
        problem = None if lines == [str(n) for n in range(1, jobs + 1)] else "jobs missing"
    except subprocess.TimeoutExpired:
        problem = f"not done in {timeout:.0f} s"
    return Row(
        "GNU parallel -M",
        len(hosts),
        jobs,
        time.monotonic() - started,
        children_cpu() - before,
        problem=problem,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,50,200")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--parallel-jobs", type=int, default=1_000)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as temporary:
        home = Path(temporary)
        (home / ".ssh").mkdir()
        for size in sizes:
            with TestHosts(size) as hosts:
                rows.append(bench_cloudtask(hosts, args.jobs, home, args.timeout))
                if shutil.which("parallel") and args.parallel_jobs:
                    rows.append(bench_parallel(hosts, args.parallel_jobs, args.timeout))
    print(f"tiny `echo` jobs over SSH, one at a time per worker, {os.cpu_count()} cores")
    print(
        f"{'tool':<16}{'workers':>8}{'jobs':>8}{'wall s':>9}{'jobs/s':>9}{'CPU ms/job':>12}"
        f"{'RSS MB':>8}{'fds':>6}{'fds/wkr':>8}"
    )
    failures = []
    for row in rows:
        rate = row.jobs / row.wall if row.wall else 0.0
        fds = f"{row.peak_fds}" if row.peak_fds else "-"
        per = f"{row.peak_fds / row.workers:.1f}" if row.peak_fds else "-"
        rss = f"{row.peak_rss_mb:.0f}" if row.peak_rss_mb else "-"
        print(
            f"{row.tool:<16}{row.workers:>8}{row.jobs:>8}{row.wall:>9.1f}{rate:>9.0f}"
            f"{row.cpu * 1000 / row.jobs:>12.2f}{rss:>8}{fds:>6}{per:>8}"
            + (f"  FAILED: {row.problem}" if row.problem else "")
        )
        if row.problem:
            failures.append(f"{row.tool} at {row.workers}: {row.problem}")
    ours = [row for row in rows if row.tool == "cloudtask" and not row.problem]
    if len(ours) >= 2:
        small, large = ours[0], ours[-1]
        growth = (large.cpu / large.jobs) / (small.cpu / small.jobs)
        verdict = "within" if growth <= CPU_GROWTH_LIMIT else "NOT within"
        print(
            f"CPU per job at {large.workers} workers is {growth:.2f}x that at "
            f"{small.workers}: {verdict} the {CPU_GROWTH_LIMIT:g}x target"
        )
        if growth > CPU_GROWTH_LIMIT:
            failures.append("CPU per job grows too much")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
