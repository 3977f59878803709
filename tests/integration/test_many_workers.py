"""The CI-sized version of benchmarks/many_workers.py: one controller, 40 SSH workers.

The benchmark runs 20,000 jobs on 4, 50 and 200 test hosts and prints the
figures; here its cloudtask step runs 1,200 jobs on 40 hosts, and the checks
that need no clock hold: every job ran exactly once and ended ok (read from
the store), and the controller's open files and memory stay within bounds
that grow with the workers, not with the jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.hosts import TestHosts
from tests.support.many_workers import bench_cloudtask

WORKERS = 40
JOBS = 1_200
# Measured by the benchmark: about 2 fds per worker (its connection and its
# log) and 50-75 MB at 4-200 workers. The bounds leave room, not growth.
FDS_PER_WORKER = 3
FDS_BESIDES = 30
RSS_LIMIT_MB = 150


def test_forty_workers_run_every_job_exactly_once_with_bounded_files_and_memory(
    make_hosts: Callable[[int], TestHosts], home: Path
) -> None:
    hosts = make_hosts(WORKERS)

    row = bench_cloudtask(hosts, JOBS, home, timeout=240)

    assert row.problem is None, row.problem
    assert 0 < row.peak_fds <= FDS_PER_WORKER * WORKERS + FDS_BESIDES, row.peak_fds
    assert 0 < row.peak_rss_mb < RSS_LIMIT_MB, row.peak_rss_mb
