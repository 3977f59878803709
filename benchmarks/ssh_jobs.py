#!/usr/bin/env python3
"""Tiny jobs over SSH: cloudtask beside GNU parallel and a bare asyncssh loop, same hosts.

    .venv/bin/python benchmarks/ssh_jobs.py [--jobs 2000] [--hosts 4] [--quick]

Starts --hosts test hosts (network namespaces with a lean sshd, tests/support/hosts.py;
needs root), then runs the same --jobs `echo N` jobs on them, one job at a time
per host, through:

  cloudtask          cloudtask --force --workers=FILE --ssh-identity=KEY echo
                     (jobs through the worker agent, one at a time per worker)
  cloudtask slots=4  the same with --slots=4: four jobs at once per worker
  cloudtask no agent the same on hosts without python3: a channel per job
  parallel -M        GNU parallel --sshlogin 1/root@HOST,... --controlmaster
  parallel           GNU parallel --sshlogin 1/root@HOST,... (one ssh per job)
  asyncssh floor     one asyncssh connection per host, a shared queue,
                     conn.run('echo N') one at a time per host: the floor
                     (a program of its own, this script with --floor, so its
                     CPU counts its interpreter, imports and connections, as
                     every other row's does)

and prints one table: wall seconds, jobs per second, controller CPU (user +
system seconds of the controller's whole process tree: ssh clients and
control masters included, the hosts' sshd and jobs not), and cloudtask's jobs
per second divided by each row's. Every tool must run every job: the script
checks the output of each and fails (exit 1) if one did not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.hosts import TestHosts

CLOUDTASK = str(Path(sys.executable).with_name("cloudtask"))
PR_SET_CHILD_SUBREAPER = 36
SUMMARY_RE = re.compile(
    r"^session \d+ \(.*\): 0/(\d+) !OK - 0 pending, 0 timeouts, 0 errors, (\d+) OK$"
)

# Targets for cloudtask from issue 3 (figures measured with a clean sshd).
FLOOR_SHARE = 0.5  # at least half the asyncssh floor's jobs per second
CONTROLMASTER_RATIO = 5.0  # at least 5 times GNU parallel --controlmaster
CPU_MS_PER_JOB = 1.5  # under 1.5 ms controller CPU per job
# Targets from issue 15 (the worker agent), at one slot per worker.
AGENT_FLOOR_RATIO = 1.5  # at least 1.5 times the asyncssh floor's jobs per second
AGENT_CPU_SHARE = 0.6  # at no more than 0.6 times its controller CPU per job


@dataclass
class Row:
    tool: str
    wall: float  # seconds
    cpu: float  # controller CPU seconds, whole process tree
    problem: str | None = None  # why the run does not count (jobs missing, timeout...)


def become_subreaper() -> None:
    """Make orphaned descendants (parallel's ssh control masters) our children.

    GNU parallel does not always wait for the ssh control masters it started;
    without this their CPU would go to init, not to RUSAGE_CHILDREN.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(
            "warning: prctl(PR_SET_CHILD_SUBREAPER) failed: orphans' CPU not counted",
            file=sys.stderr,
        )


def own_network_namespace() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def reap_orphans(keep: set[int], timeout: float = 10.0) -> None:
    """Wait for children that the tool left behind (in our own network namespace).

    Processes in a test host's namespace (sshd and what it starts) are not the
    controller's and are left alone; so are the pids in keep (the sshd
    listeners). Orphans still alive after timeout are killed.
    """
    me, namespace = os.getpid(), own_network_namespace()
    deadline = time.monotonic() + timeout
    while True:
        orphans = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in keep:
                continue
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                ns = os.stat(f"/proc/{entry.name}/ns/net").st_ino
            except OSError:
                ns = namespace  # a zombie: reap it
                try:
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                except OSError:
                    continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me and ns == namespace:
                orphans.append(int(entry.name))
        if not orphans:
            return
        for pid in orphans:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.02)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tool(
    tool: str,
    argv: list[str],
    jobs: int,
    env: dict[str, str],
    timeout: float,
    keep: set[int],
) -> tuple[Row, str]:
    """Run argv with `seq jobs` on stdin; its row and its stdout."""
    stdin = "".join(f"{n}\n" for n in range(1, jobs + 1))
    before = children_cpu()
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a process group to kill on timeout
    )
    problem = None
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        problem = f"timed out after {timeout:.0f} s"
    wall = time.monotonic() - started
    reap_orphans(keep)
    cpu = children_cpu() - before
    if problem is None and process.returncode != 0:
        tail = " | ".join(err.strip().splitlines()[-3:])
        problem = f"exit status {process.returncode}: {tail}"
    return Row(tool, wall, cpu, problem), out


def check_lines(lines: list[str], jobs: int) -> str | None:
    """None if lines are exactly the outputs 1..jobs in any order, else what is wrong."""
    expected = {str(n) for n in range(1, jobs + 1)}
    if len(lines) != jobs or set(lines) != expected:
        return f"{len(lines)} output lines, {len(expected - set(lines))} of {jobs} jobs missing"
    return None


def bench_cloudtask(
    hosts: TestHosts,
    jobs: int,
    env: dict[str, str],
    timeout: float,
    keep: set[int],
    tool: str = "cloudtask",
    *options: str,
) -> Row:
    argv = [
        CLOUDTASK,
        "--force",
        f"--workers={hosts.workers_file()}",
        f"--ssh-identity={hosts.client_key}",
        *options,
        "echo",
    ]
    row, _ = run_tool(tool, argv, jobs, env, timeout, keep)
    if row.problem is not None:
        return row
    # stdout would carry the same lines as the session log; the log is read instead.
    sessions = Path(env["CLOUDTASK_SESSIONS"])
    session = max((p for p in sessions.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    last = (session / "log").read_text().rstrip("\n").rsplit("\n", 1)[-1]
    match = SUMMARY_RE.match(last)
    if not match or int(match.group(1)) != jobs or int(match.group(2)) != jobs:
        row.problem = f"summary line: {last!r}"
        return row
    outputs = [
        line
        for log in (session / "workers").iterdir()
        for line in log.read_text().splitlines()
        if not line.startswith("== ")
    ]
    row.problem = check_lines(outputs, jobs)
    return row


def bench_parallel(
    hosts: TestHosts,
    jobs: int,
    env: dict[str, str],
    timeout: float,
    keep: set[int],
    ssh_wrapper: Path,
    controlmaster: bool,
) -> Row:
    logins = ",".join(f"1/{host.login}" for host in hosts)
    argv = ["parallel", "--will-cite", "--ssh", str(ssh_wrapper), "--sshlogin", logins]
    if controlmaster:
        argv.append("--controlmaster")
    tool = "parallel -M" if controlmaster else "parallel"
    row, out = run_tool(tool, [*argv, "echo"], jobs, env, timeout, keep)
    if row.problem is None:
        row.problem = check_lines(out.splitlines(), jobs)
    return row


async def asyncssh_loop(
    addresses: list[tuple[str, int]], key: str, known_hosts: str, jobs: int
) -> str | None:
    """Every job through one connection per host, one at a time per host."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(1, jobs + 1):
        queue.put_nowait(n)
    outputs: list[str] = []
    failures = 0

    async def worker(conn: asyncssh.SSHClientConnection) -> None:
        nonlocal failures
        while not queue.empty():
            n = queue.get_nowait()
            result = await conn.run(f"echo {n}", check=False)
            if result.exit_status != 0:
                failures += 1
            outputs.extend(str(result.stdout).splitlines())

    connections = await asyncio.gather(
        *(
            asyncssh.connect(
                address,
                port=port,
                username="root",
                client_keys=[key],
                known_hosts=known_hosts,
                kex_algs=["curve25519-sha256", "curve25519-sha256@libssh.org"],
                agent_path=None,
                config=None,
            )
            for address, port in addresses
        )
    )
    try:
        await asyncio.gather(*(worker(conn) for conn in connections))
    finally:
        for conn in connections:
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn in connections))
    return f"{failures} jobs failed" if failures else check_lines(outputs, jobs)


def floor_program(argv: list[str]) -> int:
    """The asyncssh floor as a program of its own (--floor JOBS KEY KNOWN_HOSTS
    ADDRESS:PORT...): its CPU is then counted as every other tool's, the
    interpreter, the imports and the connections included."""
    jobs, key, known_hosts, *targets = argv
    addresses = [(target.rsplit(":", 1)[0], int(target.rsplit(":", 1)[1])) for target in targets]
    problem = asyncio.run(asyncssh_loop(addresses, key, known_hosts, int(jobs)))
    print(problem or "ok")
    return 0 if problem is None else 1


def bench_asyncssh(hosts: TestHosts, jobs: int, timeout: float, keep: set[int]) -> Row:
    targets = [f"{host.address}:{host.port}" for host in hosts]
    argv = [
        sys.executable,
        __file__,
        "--floor",
        str(jobs),
        str(hosts.client_key),
        str(hosts.known_hosts_file()),
        *targets,
    ]
    row, out = run_tool("asyncssh floor", argv, jobs, dict(os.environ), timeout, keep)
    if row.problem is None and out.strip() != "ok":
        row.problem = out.strip() or "no answer"
    return row


def print_table(rows: list[Row], jobs: int, host_count: int) -> None:
    ours = next((row for row in rows if row.tool == "cloudtask" and row.problem is None), None)
    print(
        f"{jobs} `echo N` jobs on {host_count} test hosts, one job at a time per host "
        "(but for --slots)"
    )
    print(
        f"{'tool':<16}{'wall s':>9}{'jobs/s':>9}{'CPU s':>9}{'CPU ms/job':>12}{'cloudtask x':>13}"
    )
    for row in rows:
        rate = jobs / row.wall
        ratio = f"{(jobs / ours.wall) / rate:.2f}" if ours else "-"
        line = (
            f"{row.tool:<16}{row.wall:>9.2f}{rate:>9.0f}{row.cpu:>9.2f}"
            f"{row.cpu * 1000 / jobs:>12.2f}{ratio:>13}"
        )
        print(line + (f"  FAILED: {row.problem}" if row.problem else ""))
    print("controller CPU: user + system of the controller's process tree (ssh clients")
    print("and control masters included); the hosts' sshd and job processes are not counted.")
    print("cloudtask x: cloudtask's jobs/s divided by the row's.")
    if ours is None:
        return
    by_tool = {row.tool: row for row in rows if row.problem is None}
    rate = jobs / ours.wall
    checks = [
        (f"cloudtask CPU per job < {CPU_MS_PER_JOB} ms", ours.cpu * 1000 / jobs < CPU_MS_PER_JOB)
    ]
    if "asyncssh floor" in by_tool:
        floor = jobs / by_tool["asyncssh floor"].wall
        checks.append(
            (f"cloudtask >= {FLOOR_SHARE:g} x asyncssh floor jobs/s", rate >= FLOOR_SHARE * floor)
        )
    if "parallel -M" in by_tool:
        controlmaster = jobs / by_tool["parallel -M"].wall
        checks.append(
            (
                f"cloudtask >= {CONTROLMASTER_RATIO:g} x parallel -M jobs/s",
                rate >= CONTROLMASTER_RATIO * controlmaster,
            )
        )
    if "asyncssh floor" in by_tool:
        floor_row = by_tool["asyncssh floor"]
        checks.append(
            (
                f"cloudtask >= {AGENT_FLOOR_RATIO:g} x asyncssh floor jobs/s (issue 15)",
                rate >= AGENT_FLOOR_RATIO * jobs / floor_row.wall,
            )
        )
        checks.append(
            (
                f"cloudtask CPU per job <= {AGENT_CPU_SHARE:g} x the floor's (issue 15)",
                ours.cpu <= AGENT_CPU_SHARE * floor_row.cpu,
            )
        )
    print("targets:")
    for name, ok in checks:
        print(f"  {name}: {'met' if ok else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per tool (default 2000)")
    parser.add_argument("--hosts", type=int, default=4, help="test hosts (default 4)")
    parser.add_argument("--quick", action="store_true", help="200 jobs per tool")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds each tool may take (default 600)"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["cloudtask", "slots", "no-agent", "parallel-M", "parallel", "asyncssh"],
        help="leave a tool out (repeatable)",
    )
    args = parser.parse_args()
    jobs = 200 if args.quick else args.jobs
    if jobs < 1:
        parser.error("--jobs must be at least 1")
    if os.geteuid() != 0:
        print("ssh_jobs.py needs root (test hosts are network namespaces)", file=sys.stderr)
        return 2
    have_parallel = shutil.which("parallel") is not None
    if not have_parallel:
        print("GNU parallel not installed: its rows are skipped", file=sys.stderr)
    become_subreaper()
    rows: list[Row] = []
    with TestHosts(args.hosts) as hosts, tempfile.TemporaryDirectory() as scratch:
        keep = {pid for host in hosts if (pid := host._sshd.pid if host._sshd else None)}
        home = Path(scratch, "home")
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        shutil.copyfile(hosts.known_hosts_file(), home / ".ssh" / "known_hosts")
        env = {**os.environ, "HOME": str(home), "CLOUDTASK_SESSIONS": str(Path(scratch, "s"))}
        # GNU parallel runs `--ssh` as one word when it starts a control master,
        # so the client options go into a wrapper script rather than --ssh itself.
        ssh_wrapper = Path(scratch, "ssh")
        ssh_wrapper.write_text(f'#!/bin/sh\nexec ssh {shlex.join(hosts.ssh_options())} "$@"\n')
        ssh_wrapper.chmod(0o755)

        def progress(row: Row) -> None:
            rows.append(row)
            note = f" ({row.problem})" if row.problem else ""
            print(f"  {row.tool}: {row.wall:.1f} s{note}", file=sys.stderr, flush=True)

        print(f"{args.hosts} test hosts up; {jobs} jobs per tool", file=sys.stderr, flush=True)
        if "asyncssh" not in args.skip:
            progress(bench_asyncssh(hosts, jobs, args.timeout, keep))
        if "cloudtask" not in args.skip:
            progress(bench_cloudtask(hosts, jobs, env, args.timeout, keep))
        if "slots" not in args.skip:
            progress(
                bench_cloudtask(
                    hosts, jobs, env, args.timeout, keep, "cloudtask slots=4", "--slots=4"
                )
            )
        if have_parallel and "parallel-M" not in args.skip:
            progress(bench_parallel(hosts, jobs, env, args.timeout, keep, ssh_wrapper, True))
        if have_parallel and "parallel" not in args.skip:
            progress(bench_parallel(hosts, jobs, env, args.timeout, keep, ssh_wrapper, False))
        if "no-agent" not in args.skip:
            # Last: the hosts lose python3 (their sshd restarts with a PATH without it).
            for host in hosts:
                host.hide_python()
            keep = {pid for host in hosts if (pid := host._sshd.pid if host._sshd else None)}
            progress(bench_cloudtask(hosts, jobs, env, args.timeout, keep, "cloudtask no agent"))
    print_table(rows, jobs, args.hosts)
    return 1 if any(row.problem for row in rows) else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor"]:
        sys.exit(floor_program(sys.argv[2:]))
    sys.exit(main())
