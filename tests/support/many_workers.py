"""One controller on many SSH workers, measured: every job once, its open files and memory.

Shared by the suite (tests/integration/test_many_workers.py, 40 workers) and
the benchmark (benchmarks/many_workers.py, 4 to 200): `bench_cloudtask` runs
tiny `echo N` jobs through one cloudtask on the test hosts, one job at a time
per host, samples the controller's open file descriptors and resident memory
(VmHWM) while it runs, and checks in the session store that every job ran
exactly once and ended ok.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.hosts import TestHosts

from cloudtask.store.check import check_finished
from cloudtask.store.reader import StoreReader

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))


@dataclass
class Row:
    tool: str
    workers: int
    jobs: int
    wall: float
    cpu: float
    peak_rss_mb: float = 0.0
    peak_fds: int = 0
    problem: str | None = None


class Sampler:
    """Peak open fds and VmHWM of one process, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fds = 0
        self.rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.fds = max(self.fds, len(os.listdir(f"/proc/{self.pid}/fd")))
                status = Path(f"/proc/{self.pid}/status").read_text()
                (kilobytes,) = re.findall(r"^VmHWM:\s+(\d+) kB", status, re.M)
                self.rss_mb = max(self.rss_mb, int(kilobytes) / 1024)
            except (OSError, ValueError):
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_store(sessions: Path, jobs: int) -> str | None:
    """Every job ran exactly once and ended ok, and the store adds up (cloudtask.store.check)."""
    (store,) = sessions.glob("*/store.sqlite")
    with StoreReader.open(store.parent) as reader:
        problems = check_finished(reader, jobs).problems
    return "; ".join(problems[:3]) if problems else None


def bench_cloudtask(hosts: TestHosts, jobs: int, home: Path, timeout: float) -> Row:
    with tempfile.TemporaryDirectory() as sessions:
        env = {**os.environ, "HOME": str(home), "CLOUDTASK_SESSIONS": sessions}
        argv = [
            CLOUDTASK,
            "--force",
            f"--workers={hosts.workers_file()}",
            f"--ssh-identity={hosts.client_key}",
            "echo",
        ]
        before = children_cpu()
        started = time.monotonic()
        err_path = Path(sessions) / "stderr"
        with err_path.open("wb") as err:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env
            )
        sampler = Sampler(process.pid)
        assert process.stdin is not None
        process.stdin.write("".join(f"{n}\n" for n in range(1, jobs + 1)).encode())
        process.stdin.close()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        sampler.stop()
        wall = time.monotonic() - started
        cpu = children_cpu() - before
        said = err_path.read_text(errors="replace").strip().splitlines()
        problem = (
            None
            if process.returncode == 0
            else f"exit {process.returncode}" + (f": {said[-1]}" if said else "")
        )
        problem = problem or check_store(Path(sessions), jobs)
        return Row("cloudtask", len(hosts), jobs, wall, cpu, sampler.rss_mb, sampler.fds, problem)
