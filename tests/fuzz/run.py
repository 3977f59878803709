"""Fuzz cloudtask's inputs with hypothesis: every case runs the real command.

    .venv/bin/python -m tests.fuzz [--cases 3000] [--seconds 540] [--jobs N] [--area NAME]

Areas (each a hypothesis strategy of whole cases):

- input: job input bytes (NUL, invalid UTF-8, unbalanced quotes, CR/LF mixes,
  comments, blank lines, very long lines, many lines), checked against the
  README's rules: the exit status, the line an error names, and every stored
  job command (each word quoted again, appended to the command).
- options-cli, options-env, options-template: values for every option in
  config.OPTIONS on the command line, as CLOUDTASK_* variables, and as
  attributes of a task template (a Python file run with the venv's python).
- workers: --workers lists and files (odd users, ports, IPv6, brackets).
- sessions: --resume/--retry ids (odd strings, huge, negative) against real
  sessions, some in odd states (a broken store, odd values, a held lock).
- logalyzer: cloudtask-logalyzer's arguments against the same sessions.

Every case must end with exit status 0, 1 or 2 (0 or 2 for the logalyzer),
no Python traceback, and on exit 2 a first line of stderr that starts with
the program's name and a colon (only "usage:" lines may follow). No session
directory may be left without a complete store, and nothing a session had
recorded may be lost.

Nothing leaves the machine: each case runs in a network namespace of its own
with only a loopback (when the kernel lets us make one), and whatever the
namespace, a case is only run when `unsafe()` finds nothing in it that could
reach out: worker addresses are `.invalid` names or loopback addresses on a
closed port, cloud endpoints are a closed loopback port, libcloud drivers are
"dummy", shell and Python given to --pre/--post/--report are from a harmless
set, and paths stay in the case's temporary directory.

Prints a table of area, cases, failing cases, distinct failures, timeouts
(cases stopped with SIGTERM) and seconds per case, then each distinct failure
with a shell reproducer (its smallest case), then observations (suspect, not
counted as failures); exits 1 when there is a failure. Default: 3000 cases,
no new case after --seconds (540), 2 at a time on 2 cores.

The package: values.py (what cases are made of), cases.py (a case, the
sessions fixtures and their mutations), areas/ (a strategy of cases per area),
safety.py (what may run), sandbox.py (running a case), checks.py (the
contract), reproduce.py (a shell reproducer), run.py (this: many cases at a
time for a while, and the report). tests/fuzz/test_fuzz_cli.py is the suite's
short run of the same areas and checks.
"""

from __future__ import annotations

import argparse
import multiprocessing.util
import os
import random
import sys
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from tests.fuzz.areas import AREAS
from tests.fuzz.cases import Case
from tests.fuzz.checks import Failure, check
from tests.fuzz.reproduce import reproducer
from tests.fuzz.sandbox import Result, Sandbox, make_fixtures


@dataclass
class AreaStats:
    area: str
    cases: int = 0
    failing: int = 0
    timeouts: int = 0
    seconds: float = 0.0
    failures: dict[tuple[str, str, str], tuple[int, Failure]] = field(default_factory=dict)
    notes: dict[tuple[str, str, str], tuple[int, Failure]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, case: Case, result: Result, failures: list[Failure]) -> None:
        self.cases += 1
        self.seconds += result.seconds
        self.timeouts += result.timed_out
        real = [f for f in failures if not f.note]
        self.failing += bool(real)
        for failure in failures:
            book = self.notes if failure.note else self.failures
            count, smallest = book.get(failure.signature, (0, failure))
            if case_size(failure.case) < case_size(smallest.case):
                smallest = failure
            book[failure.signature] = (count + 1, smallest)

    def merge(self, other: AreaStats) -> None:
        self.cases += other.cases
        self.failing += other.failing
        self.timeouts += other.timeouts
        self.seconds += other.seconds
        self.errors += other.errors
        for mine, theirs in ((self.failures, other.failures), (self.notes, other.notes)):
            for key, (count, failure) in theirs.items():
                had, smallest = mine.get(key, (0, failure))
                if case_size(failure.case) < case_size(smallest.case):
                    smallest = failure
                mine[key] = (had + count, smallest)


def case_size(case: Case) -> int:
    template = len(case.template.source()) if case.template else 0
    return (
        sum(len(arg) for arg in case.argv)
        + sum(len(v) for _, v in case.env)
        + len(case.stdin)
        + sum(len(c) for _, c in case.files)
        + template
        + 50 * len(case.mutations)
    )


_SANDBOX: Sandbox | None = None


def _process_sandbox(timeout: float) -> Sandbox:
    """This worker process's sandbox (its fixtures are made once), closed when it exits."""
    global _SANDBOX
    if _SANDBOX is None:
        _SANDBOX = Sandbox(timeout)
        multiprocessing.util.Finalize(_SANDBOX, _SANDBOX.close, exitpriority=10)
    return _SANDBOX


def explore(area: str, examples: int, deadline: float, seed: int, timeout: float) -> AreaStats:
    """One hypothesis run of an area (in a worker process); what it found."""
    sandbox = _process_sandbox(timeout)
    stats = AreaStats(area)

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(AREAS[area])
    def one(case: Case) -> None:
        if time.time() > deadline:
            return
        case = sandbox.effective(case)
        try:
            result = sandbox.run(case)
        except Exception as exc:  # the harness's own failure: say so, go on
            stats.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}: {case!r:.300}")
            return
        stats.add(case, result, check(case, result))

    try:
        one()
    except Exception as exc:  # the generator gave up: say so, keep the rest
        stats.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    return stats


WEIGHTS = {
    "input": 5,
    "options-cli": 6,
    "options-env": 4,
    "options-template": 4,
    "workers": 4,
    "sessions": 4,
    "logalyzer": 3,
}


def plan(cases: int, areas: Sequence[str], chunk: int = 60) -> list[tuple[str, int]]:
    """(area, examples) runs: each area's share of `cases` in chunks, areas interleaved."""
    total = sum(WEIGHTS[area] for area in areas)
    runs: list[tuple[float, str, int]] = []
    for area in areas:
        share = max(1, round(cases * WEIGHTS[area] / total))
        starts = range(0, share, chunk)
        # Each area's chunks spread evenly over the run: a time limit cuts every area alike.
        runs += [(start / share, area, min(chunk, share - start)) for start in starts]
    return [(area, examples) for _, area, examples in sorted(runs, key=lambda run: run[0])]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--cases", type=int, default=3000, help="cases in all (default 3000)")
    parser.add_argument("--seconds", type=float, default=540, help="stop starting cases after")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="cases at once")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before SIGTERM")
    parser.add_argument("--area", action="append", choices=sorted(AREAS), help="only these")
    parser.add_argument("--seed", type=int, help="base seed (default: random)")
    parser.add_argument("--make-fixtures", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_fixtures:
        with Sandbox() as sandbox:
            make_fixtures(Path(args.make_fixtures), sandbox)
        return 0
    areas = args.area or list(AREAS)
    base_seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    start = time.time()
    deadline = start + args.seconds
    with Sandbox() as probe:
        netns = probe.netns
    print(
        f"fuzzing {', '.join(areas)}: {args.cases} cases, {args.jobs} at a time, seed {base_seed}, "
        + ("each in a network namespace" if netns else "no network namespace (not permitted)"),
        file=sys.stderr,
    )
    totals = {area: AreaStats(area) for area in areas}
    with ProcessPoolExecutor(max_workers=args.jobs) as executor:
        futures = [
            executor.submit(explore, area, examples, deadline, base_seed + n, args.timeout)
            for n, (area, examples) in enumerate(plan(args.cases, areas))
        ]
        for future in futures:
            stats = future.result()
            totals[stats.area].merge(stats)
            print(f"  {stats.area}: {stats.cases} cases, {stats.failing} failing", file=sys.stderr)
    elapsed = time.time() - start
    print_report(totals, elapsed, base_seed)
    return 1 if any(stats.failing for stats in totals.values()) else 0


def print_report(totals: dict[str, AreaStats], elapsed: float, base_seed: int) -> None:
    print(
        f"\n{'area':<18} {'cases':>6} {'failures':>9} {'distinct':>9} {'timeouts':>9} {'s/case':>7}"
    )
    for stats in totals.values():
        per_case = stats.seconds / stats.cases if stats.cases else 0.0
        print(
            f"{stats.area:<18} {stats.cases:>6} {stats.failing:>9} {len(stats.failures):>9} "
            f"{stats.timeouts:>9} {per_case:>7.2f}"
        )
    all_cases = sum(stats.cases for stats in totals.values())
    all_failing = sum(stats.failing for stats in totals.values())
    print(f"{'total':<18} {all_cases:>6} {all_failing:>9}")
    print(f"\n{elapsed:.0f} s, seed {base_seed}")
    for title, attribute in (("failures", "failures"), ("observations", "notes")):
        found = [item for stats in totals.values() for item in getattr(stats, attribute).values()]
        if not found:
            continue
        print(f"\n== {title} ({len(found)} distinct) ==")
        for count, failure in sorted(found, key=lambda item: (item[1].area, item[1].kind)):
            print(f"\n[{failure.area}] {failure.kind}: {failure.detail} ({count} cases)")
            print(textwrap.indent(reproducer(failure.case), "    "))
    errors = [f"{s.area}: {e}" for s in totals.values() for e in s.errors]
    if errors:
        print("\n== generator errors ==")
        for error in errors:
            print(error)
