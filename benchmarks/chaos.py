#!/usr/bin/env python3
"""Chaos: random faults while a batch runs on SSH test hosts and launched workers.

    .venv/bin/python benchmarks/chaos.py [--seed N] [--rounds 3] [--jobs 60]
                                         [--hosts 2] [--launched 2] [--fault-seconds 60]
                                         [--max-runs 15]

Needs root. Each round runs one session on --hosts SSH test hosts (--workers)
plus --launched workers on the test cloud (the Hub API test server on
loopback, whose instances are real SSH test hosts), and injects faults at
random moments: hosts and instances killed, sshd stopped, links cut and
healed, the controller SIGKILLed or sent Ctrl-C twice, broken --report hooks.
The session is resumed until it finishes; then the round checks the store,
the jobs' own marks, the test cloud, the machine's processes and root's
authorized_keys (tests/support/chaos.py has the rules). Round i uses seed N+i.

Prints one table of faults and outcomes, then every problem found with the
seed that replays it; exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.chaos import RoundResult, Settings, run_round, table
from tests.support.hosts import unavailable_reason


def one_round(temporary: Path, number: int, seed: int, args: argparse.Namespace) -> RoundResult:
    directory = temporary / f"round{number}"
    directory.mkdir()
    os.environ["CLOUDTASK_SESSIONS"] = str(directory / "sessions")
    settings = Settings(
        seed=seed,
        jobs=args.jobs,
        hosts=args.hosts,
        launched=args.launched,
        fault_seconds=args.fault_seconds,
        max_runs=args.max_runs,
    )
    result = run_round(settings, directory)
    verdict = "ok" if result.ok else f"{len(result.problems)} problems"
    print(
        f"round {number} (seed {result.seed}): {sum(result.faults.values())} faults, "
        f"{result.runs} runs, {result.seconds:.0f} s: {verdict}",
        flush=True,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Settings(seed=0)
    parser.add_argument("--seed", type=int, default=None, help="first round's seed (random)")
    parser.add_argument("--rounds", type=int, default=3, help="sessions, each its own seed")
    parser.add_argument("--jobs", type=int, default=defaults.jobs, help="jobs per round")
    parser.add_argument("--hosts", type=int, default=defaults.hosts, help="--workers hosts")
    parser.add_argument("--launched", type=int, default=defaults.launched, help="cloud workers")
    parser.add_argument(
        "--fault-seconds",
        type=float,
        default=defaults.fault_seconds,
        help="faults come for this long in each round",
    )
    parser.add_argument(
        "--max-runs", type=int, default=defaults.max_runs, help="controller runs per round"
    )
    parser.add_argument("--keep", action="store_true", help="keep the rounds' files")
    args = parser.parse_args()
    if (reason := unavailable_reason()) is not None:
        print(f"chaos: {reason}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    results: list[RoundResult] = []
    temporary = Path(tempfile.mkdtemp(prefix="cloudtask-chaos-"))
    if args.keep:
        print(f"files in {temporary}", flush=True)
    try:
        for number in range(args.rounds):
            results.append(one_round(temporary, number, seed + number, args))
    finally:
        if not args.keep:
            shutil.rmtree(temporary, ignore_errors=True)
    print()
    print(table(results))
    failed = [result for result in results if not result.ok]
    for result in failed:
        replay = f"--seed {result.seed} --rounds 1 --jobs {args.jobs} --hosts {args.hosts} "
        replay += f"--launched {args.launched} --fault-seconds {args.fault_seconds:g}"
        print(f"\nseed {result.seed} (replay: benchmarks/chaos.py {replay}):")
        for problem in result.problems:
            print(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
