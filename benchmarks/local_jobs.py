#!/usr/bin/env python3
"""Tiny jobs on local workers: cloudtask beside GNU parallel in the same run.

    .venv/bin/python benchmarks/local_jobs.py [--jobs N] [--split N]

Prints one table: wall time, jobs per second and CPU seconds (controller and
jobs together) for each tool. GNU parallel is skipped, saying so, when it is
not installed (apt-get install parallel).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))


def measure(argv: list[str], jobs: int, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(
        argv,
        input="".join(f"{n}\n" for n in range(1, jobs + 1)),
        text=True,
        stdout=subprocess.DEVNULL,
        check=True,
        env=env,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--split", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as sessions:
        env = {**os.environ, "CLOUDTASK_SESSIONS": sessions}
        rows = [
            (
                "cloudtask",
                measure([CLOUDTASK, "--force", f"--split={args.split}", "true"], args.jobs, env),
            )
        ]
        if shutil.which("parallel"):
            rows.append(
                ("GNU parallel", measure(["parallel", f"-j{args.split}", "true"], args.jobs, env))
            )
        else:
            print("GNU parallel not installed: its row is skipped", file=sys.stderr)
    print(f"{args.jobs} `true` jobs on {args.split} local workers")
    print(f"{'tool':<14}{'wall s':>9}{'jobs/s':>9}{'CPU s':>9}{'CPU ms/job':>12}")
    for name, (wall, cpu) in rows:
        print(
            f"{name:<14}{wall:>9.2f}{args.jobs / wall:>9.0f}{cpu:>9.2f}"
            f"{cpu * 1000 / args.jobs:>12.2f}"
        )


if __name__ == "__main__":
    main()
