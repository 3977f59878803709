"""Defaults that fit the provider (SPEC section 13): on the local provider
--split defaults to the CPUs this process may use, capped at the jobs;
--timeout=0 is no limit."""

from __future__ import annotations

import os
import re

import pytest
from tests.e2e.test_confirm import ask, finish, plain
from tests.support.helpers import (
    CLOUDTASK,
    PYTHON,
    assert_usage_error,
    cloudtask,
    counts,
    run,
    sessions_dir,
    split_shown,
    summary,
)

from cloudtask.store import meta as keys
from cloudtask.store.reader import StoreReader


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def stored_options(session: int) -> dict[str, str]:
    with StoreReader.open(sessions_dir() / str(session)) as store:
        options = store.meta(keys.CONFIG)
    assert options is not None
    return dict(options)


# -- --split -------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2, 3, 10, 50])
def test_the_local_split_is_the_usable_cpus_capped_at_the_jobs(jobs: int) -> None:
    result = cloudtask("true", input=b"x\n" * jobs)

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == min(usable_cpus(), jobs)
    assert counts(result) == (0, jobs, 0, 0, 0, jobs)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_the_local_split_follows_the_cpus_this_process_may_use() -> None:
    """As under `taskset -c 0`: one CPU allowed, whatever the machine has."""
    (cpu, *_) = sorted(os.sched_getaffinity(0))
    pinned = (
        f"import os, sys; os.sched_setaffinity(0, {{{cpu}}}); os.execv(sys.argv[1], sys.argv[1:])"
    )

    result = run([PYTHON, "-c", pinned, CLOUDTASK, "true"], input=b"x\n" * 10)

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == 1


@pytest.mark.parametrize("split", ["1", "3"])
def test_a_split_given_is_kept(split: str) -> None:
    result = cloudtask(f"--split={split}", "true", input=b"x\n" * 10)

    assert split_shown(result.stdout) == int(split)


def test_a_resume_takes_the_default_again_capped_at_what_is_left() -> None:
    first = cloudtask("--split=1", "--halt=fail=1", "sh", "-c", "exit $0", input=b"1\n0\n0\n0\n")
    session = summary(first).id
    assert stored_options(session)["split"] == "1"

    resumed = cloudtask(f"--resume={session}", "--split=")

    assert split_shown(resumed.stdout) == min(usable_cpus(), 3)
    assert counts(resumed) == (1, 4, 0, 0, 1, 3)


def test_the_plan_says_where_the_split_comes_from() -> None:
    child, shown = ask("seq 50 | {ct} echo")
    child.sendline("no")
    finish(child)
    cpus = usable_cpus()

    text = plain(shown)
    assert any(f"about to run 50 jobs on {cpus} worker" in line for line in text), shown
    pattern = (
        rf"\s*split\s+{cpus}\s+default: the {cpus} CPUs? this process may use, at most the jobs"
    )
    assert any(re.fullmatch(pattern, line) for line in text), shown


def test_the_plan_of_a_split_given_says_so() -> None:
    child, shown = ask("seq 50 | {ct} --split=3 echo")
    child.sendline("no")
    finish(child)

    assert any(re.fullmatch(r"\s*split\s+3\s+command line", line) for line in plain(shown)), shown


def test_with_workers_the_split_is_their_number() -> None:
    """Nothing is contacted before the answer: addresses that no host has are fine."""
    child, shown = ask("seq 5 | {ct} --workers=198.18.0.2,198.18.0.6 echo")
    child.sendline("no")
    finish(child)
    text = plain(shown)

    assert any("about to run 5 jobs on 2 workers (198.18.0.2, 198.18.0.6)" in line for line in text)
    pattern = r"\s*split\s+2\s+default: the number of --workers"
    assert any(re.fullmatch(pattern, line) for line in text), shown


def test_help_says_the_split_default() -> None:
    result = cloudtask("--help", input=None)

    assert "on the local provider, the CPUs this process may use" in result.stdout


# -- --timeout=0 -----------------------------------------------------------------


def test_timeout_zero_is_no_limit() -> None:
    result = cloudtask("--timeout=0", "sleep", input=b"2\n")

    assert result.returncode == 0, result.stderr
    assert counts(result) == (0, 1, 0, 0, 0, 1)
    assert stored_options(summary(result).id)["timeout"] == "no limit"


def test_a_short_timeout_still_ends_the_same_job() -> None:
    """The neighbour: 0 is not a limit of no time, and a limit still holds."""
    result = cloudtask("--timeout=1", "sleep", input=b"2\n")

    assert counts(result) == (1, 1, 0, 1, 0, 0)


@pytest.mark.parametrize("given", ["0", "0s", "0m"])
def test_timeout_zero_in_any_unit_and_from_the_environment(given: str) -> None:
    env = dict(os.environ, CLOUDTASK_TIMEOUT=given)

    result = cloudtask("sleep", input=b"1.5\n", env=env)

    assert counts(result) == (0, 1, 0, 0, 0, 1)
    assert stored_options(summary(result).id)["timeout"] == "no limit"


def test_a_resume_keeps_no_limit() -> None:
    first = cloudtask(
        "--split=1",
        "--timeout=0",
        "--halt=fail=1",
        "sh",
        "-c",
        "sleep $0; exit $1",
        input=b"0 1\n1.5 0\n",
    )
    session = summary(first).id
    assert counts(first) == (2, 2, 1, 0, 1, 0)

    resumed = cloudtask(f"--resume={session}")

    assert counts(resumed) == (1, 2, 0, 0, 1, 1)
    assert stored_options(session)["timeout"] == "no limit"


def test_the_plan_shows_no_limit() -> None:
    child, shown = ask("seq 2 | {ct} --timeout=0 echo")
    child.sendline("no")
    finish(child)

    pattern = r"\s*timeout\s+no limit\s+command line"
    assert any(re.fullmatch(pattern, line) for line in plain(shown)), shown


@pytest.mark.parametrize(
    "option", ["--keepalive=0", "--connect-timeout=0", "--boot-timeout=0s", "--timeout=-1"]
)
def test_zero_stays_refused_for_the_other_durations(option: str) -> None:
    name = option.split("=")[0]
    assert_usage_error(cloudtask(option, "true", input=b"1\n"), name, "positive duration")


def test_help_says_timeout_zero_is_no_limit() -> None:
    result = cloudtask("--help", input=None)

    assert "0: no limit" in result.stdout


def test_the_default_split_fits_the_open_files_a_given_one_is_refused_past_them() -> None:
    """With a hard limit of 70 open files one local worker fits (64 + 4 each):
    the default takes 1 whatever the CPUs; a given --split=2 is refused."""
    if usable_cpus() < 2:
        pytest.skip("one CPU: the default split is 1 whatever the open files allow")
    command = f"ulimit -n 70 && seq 3 | {CLOUDTASK} --force true"
    result = run(["bash", "-c", command], input=None)

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == 1
    refused = run(["bash", "-c", command.replace("--force", "--force --split=2")], input=None)
    assert_usage_error(refused, "--split: 2 workers need about 72 open files")


# -- --slots ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "split"),
    [
        (["--split=4"], 4),  # one slot each: a worker per job, as before slots
        (["--split=4", "--slots=1"], 4),
        (["--split=4", "--slots=2"], 2),  # 4 jobs fill two workers of two slots
        (["--split=4", "--slots=3"], 2),
        (["--split=4", "--slots=8"], 1),
        (["--split=4", "--slots=auto"], 4),  # the CPUs are known on the workers only
    ],
)
def test_the_split_is_never_more_workers_than_the_jobs_fill(options: list[str], split: int) -> None:
    result = cloudtask(*options, "true", input=b"x\n" * 4)

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == split
    assert counts(result) == (0, 4, 0, 0, 0, 4)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_a_bad_slots_value_is_a_usage_error(value: str) -> None:
    result = cloudtask(f"--slots={value}", "true", input=b"x\n")

    assert_usage_error(result, "--slots")
    assert not sessions_dir().exists() or not any(sessions_dir().iterdir())


def test_slots_run_local_jobs_at_once(tmp_path: object) -> None:
    """Three jobs that each wait for all three to have started end only if
    one local worker runs them at the same time."""
    marks = f"{tmp_path}/marks"
    os.mkdir(marks)
    wait = (
        f"touch {marks}/$CLOUDTASK_JOB; n=0; "
        f"while [ $(ls {marks} | wc -l) -lt 3 ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); "
        f"done; [ $(ls {marks} | wc -l) -ge 3 ]"
    )
    result = cloudtask("--split=1", "--slots=3", "sh", "-c", wait, input=b"a\nb\nc\n")

    assert result.returncode == 0, result.stdout + result.stderr
    assert split_shown(result.stdout) == 1
    assert counts(result) == (0, 3, 0, 0, 0, 3)
