#!/usr/bin/env python3
"""Job output through cloudtask over SSH beside `ssh HOST cat FILE`, for several shapes.

    .venv/bin/python benchmarks/output.py [--mb 200] [--shapes lines,one-line,binary,redraws]

Starts one test host (a network namespace with a lean sshd, tests/support/hosts.py;
needs root; it shares this machine's file system). For each shape it writes a
file of --mb MB:

  lines      many short lines (about 60 bytes each)
  one-line   one line of x's, the newline at its very end
  binary     random bytes (invalid UTF-8, NULs, a newline every 256 bytes or so)
  redraws    progress redraws ("37% [=====>   ]\\r"), one newline at the end

and has the host print it twice, output to /dev/null on this side:

  ssh cat    ssh -i KEY root@HOST cat FILE (the plain OpenSSH client)
  cloudtask  cloudtask --force --workers=HOST --ssh-identity=KEY cat with the one
             job FILE: output to the console (/dev/null here), the session log
             and the worker log, the tail to the store

and prints one table: MB/s of each, cloudtask's MB/s divided by ssh cat's, the
controller's CPU per MB (user + system of the cloudtask process, from
os.wait4; of the ssh client for ssh cat) and cloudtask's peak RSS. The run must
be ok and the worker log must hold the output (exit 1 otherwise). The host's
sshd and cat share the machine's CPUs and are not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.hosts import TestHosts

from cloudtask.store.reader import StoreReader

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))
MB = 1_000_000
SHAPES = ("lines", "one-line", "binary", "redraws")
SUMMARY_RE = re.compile(r"^session \d+ \(.*\): 0/1 !OK - 0 pending, 0 timeouts, 0 errors, 1 OK$")
TAIL_BYTES = 4096  # cloudtask.output.TAIL_BYTES: what the stored tail may hold


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds of the process
    peak_rss: int  # bytes
    problem: str | None = None


@dataclass
class Row:
    shape: str
    size: int  # bytes
    ssh: Run
    cloudtask: Run


# -- the files -------------------------------------------------------------------


def write_shape(path: Path, shape: str, size: int) -> int:
    """A file of `size` bytes of the shape (the last one a newline); its newlines."""
    block = 4 * MB
    rng = random.Random(1)
    newlines = 1
    with path.open("wb") as file:
        written = 0
        line = 0
        while written < size - 1:
            if shape == "lines":
                parts = []
                for _ in range(block // 60):
                    line += 1
                    parts.append(b"line %09d of the output, some words to make it longer\n" % line)
                data = b"".join(parts)
            elif shape == "one-line":
                data = b"x" * block
            elif shape == "binary":
                data = rng.randbytes(block)
            else:
                data = b"".join(
                    b"%3d%% [%-20s]\r" % (n % 101, b"=" * (n % 21)) for n in range(block // 28)
                )
            data = data[: size - 1 - written]
            file.write(data)
            written += len(data)
            newlines += data.count(b"\n")
        file.write(b"\n")
    return newlines


# -- running ---------------------------------------------------------------------


# Runs argv[2:] and writes its wall seconds, user + system CPU seconds and peak
# RSS (KiB) to the file argv[1]. A process forked from the benchmark would count
# the benchmark's memory in its peak (Linux keeps the high-water mark of the
# memory a process had before exec), so the tool is forked from this small one.
MEASURE = """
import os, sys, time
started = time.monotonic()
pid = os.spawnvp(os.P_NOWAIT, sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - started
with open(sys.argv[1], "w") as out:
    out.write(f"{wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(argv: list[str], stdin: bytes, env: dict[str, str], timeout: float) -> Run:
    """Run argv, output to /dev/null; its wall time, CPU and peak RSS (os.wait4)."""
    with tempfile.NamedTemporaryFile("r") as figures:
        process = subprocess.Popen(
            [sys.executable, "-c", MEASURE, figures.name, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a process group to kill on timeout
        )
        try:
            _, err = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return Run(timeout, 0.0, 0, f"timed out after {timeout:.0f} s")
        wall, cpu, peak = figures.read().split()
    problem = None
    if process.returncode != 0:
        tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
        problem = f"exit status {process.returncode}: {tail}"
    return Run(float(wall), float(cpu), int(peak) * 1024, problem)


def log_check(shape: str, size: int, newlines: int) -> Callable[[Path], str | None]:
    """What the worker log of a job printing the shape must hold."""

    def check(log: Path) -> str | None:
        output = 0
        xs = 0
        lines = 0
        last = b""
        with log.open("rb") as file:
            for line in file:
                if line.startswith(b"== "):
                    continue
                lines += 1
                output += len(line)
                if shape == "one-line":
                    xs += line.count(b"x")
                last = line
        if shape == "lines" and output != size:
            return f"worker log has {output:,} bytes of output, not {size:,}"
        if shape == "one-line" and xs != size - 1:
            return f"worker log has {xs:,} x's, not {size - 1:,}"
        if shape == "binary" and lines != newlines:
            return f"worker log has {lines:,} lines of output, not {newlines:,}"
        if shape == "redraws" and (lines != 1 or b"% [" not in last):
            return f"worker log has {lines} lines of output, not the last redraw only"
        return None

    return check


def bench_cloudtask(
    hosts: TestHosts,
    file: Path,
    check: Callable[[Path], str | None],
    env: dict[str, str],
    timeout: float,
) -> Run:
    argv = [
        CLOUDTASK,
        "--force",
        f"--workers={hosts.workers_file()}",
        f"--ssh-identity={hosts.client_key}",
        "cat",
    ]
    sessions = Path(env["CLOUDTASK_SESSIONS"])
    run = run_measured(argv, f"{file}\n".encode(), env, timeout)
    session = max((p for p in sessions.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    try:
        if run.problem is not None:
            return run
        with (session / "log").open("rb") as log:
            log.seek(max(0, (session / "log").stat().st_size - 4096))
            last = log.read().decode(errors="replace").rstrip("\n").rsplit("\n", 1)[-1]
        if not SUMMARY_RE.match(last):
            run.problem = f"summary line: {last!r}"
            return run
        with StoreReader.open(session) as store:
            tail = store.attempts()[0].tail or ""
        if len(tail.encode()) > TAIL_BYTES:
            run.problem = f"stored tail of {len(tail.encode()):,} bytes"
            return run
        (log_path,) = (session / "workers").iterdir()
        run.problem = check(log_path)
        return run
    finally:
        shutil.rmtree(session, ignore_errors=True)  # its logs hold the output twice


def bench_ssh(hosts: TestHosts, file: Path, env: dict[str, str], timeout: float) -> Run:
    return run_measured(hosts.ssh_command(hosts[0], f"cat {file}"), b"", env, timeout)


# -- the table -------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    print(
        f"{'shape':<10}{'MB':>6}{'ssh cat MB/s':>14}{'cloudtask MB/s':>16}{'ratio':>7}"
        f"{'CPU ms/MB':>11}{'ssh CPU ms/MB':>15}{'peak RSS':>10}"
    )
    for row in rows:
        mb = row.size / MB
        ssh_rate = mb / row.ssh.wall
        ours = mb / row.cloudtask.wall
        line = (
            f"{row.shape:<10}{mb:>6.0f}{ssh_rate:>14.0f}{ours:>16.0f}{ours / ssh_rate:>7.2f}"
            f"{row.cloudtask.cpu * 1000 / mb:>11.1f}{row.ssh.cpu * 1000 / mb:>15.1f}"
            f"{row.cloudtask.peak_rss / 2**20:>7.0f} MiB"
        )
        runs = {"ssh cat": row.ssh, "cloudtask": row.cloudtask}
        problems = "; ".join(f"{name}: {run.problem}" for name, run in runs.items() if run.problem)
        print(line + (f"  FAILED: {problems}" if problems else ""))
    print("ratio: cloudtask's MB/s divided by ssh cat's. CPU ms/MB: user + system of the")
    print("cloudtask process (ssh CPU: of the ssh client) per MB of output; the host's")
    print("sshd and cat are not counted. Peak RSS: the cloudtask process's (os.wait4).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="MB of output per shape (200)")
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help=f"comma-separated shapes to run (default {','.join(SHAPES)})",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds each run may take (default 600)"
    )
    args = parser.parse_args()
    shapes = [shape for shape in args.shapes.split(",") if shape]
    if unknown := [shape for shape in shapes if shape not in SHAPES]:
        parser.error(f"unknown shapes {', '.join(unknown)}: choose from {', '.join(SHAPES)}")
    if args.mb < 1:
        parser.error("--mb must be at least 1")
    if os.geteuid() != 0:
        print("output.py needs root (test hosts are network namespaces)", file=sys.stderr)
        return 2
    size = args.mb * MB
    rows: list[Row] = []
    with TestHosts(1) as hosts, tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch, "home")
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        shutil.copyfile(hosts.known_hosts_file(), home / ".ssh" / "known_hosts")
        env = {**os.environ, "HOME": str(home), "CLOUDTASK_SESSIONS": str(Path(scratch, "s"))}
        print(f"test host up; {args.mb} MB per shape", file=sys.stderr, flush=True)
        for shape in shapes:
            file = Path(scratch, f"{shape}.out")
            newlines = write_shape(file, shape, size)
            with contextlib.ExitStack() as cleanup:
                cleanup.callback(file.unlink)
                ssh = bench_ssh(hosts, file, env, args.timeout)
                check = log_check(shape, size, newlines)
                ours = bench_cloudtask(hosts, file, check, env, args.timeout)
            rows.append(Row(shape, size, ssh, ours))
            note = "; ".join(run.problem for run in (ssh, ours) if run.problem)
            print(
                f"  {shape}: ssh cat {ssh.wall:.1f} s, cloudtask {ours.wall:.1f} s"
                + (f" ({note})" if note else ""),
                file=sys.stderr,
                flush=True,
            )
    print_table(rows)
    return 1 if any(row.ssh.problem or row.cloudtask.problem for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
