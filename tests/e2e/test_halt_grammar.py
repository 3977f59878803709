"""--halt in GNU parallel's grammar (SPEC section 13): `[now|soon,](fail|success|done)=(N|P%)`.

`soon` starts nothing new and lets the running jobs finish; `now` stops them
too (pending again, the session halted and resumable); a percentage needs at
least 3 finished jobs; the old `fail=N` means `soon,fail=N`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from tests.support.helpers import (
    assert_usage_error,
    cloudtask,
    counts,
    session_ids,
    sessions_dir,
    summary,
)

from cloudtask.halt import GRAMMAR
from cloudtask.store import meta as keys
from cloudtask.store.reader import StoreReader

# Job `fail` fails once jobs 2 and 3 have started. Those wait while the file
# `hold` exists, or with `until_halt` until the session log says that the
# halt was reached; then they end ok.
SCRIPT = """\
#!/bin/sh
cd {dir}
case $1 in
fail) while [ ! -e started.2 ] || [ ! -e started.3 ]; do sleep 0.05; done; exit 1 ;;
*) touch started.$1
   while [ -e hold ]; do sleep 0.1; done
   if [ -e until_halt ]; then
     until grep -q 'reached' {sessions}/*/log; do sleep 0.05; done
   fi ;;
esac
"""


def script(tmp_path: Path, wait: str = "hold") -> str:
    path = tmp_path / "job.sh"
    path.write_text(SCRIPT.format(dir=tmp_path, sessions=sessions_dir()))
    path.chmod(0o755)
    (tmp_path / wait).touch()
    return str(path)


def store(session: int) -> StoreReader:
    return StoreReader.open(sessions_dir() / str(session))


def states(session: int) -> dict[int, str]:
    with store(session) as reader:
        return reader.job_states()


def meta(session: int, key: keys.Key[keys.T]) -> keys.T | None:
    with store(session) as reader:
        return reader.meta(key)


def attempts(session: int, job: int) -> list[str | None]:
    with store(session) as reader:
        return [attempt.outcome for attempt in reader.attempts(job)]


def exits(*codes: int) -> bytes:
    return b"".join(b"%d\n" % code for code in codes)


EXIT = ("sh", "-c", "exit $0")


# -- now and soon --------------------------------------------------------------


def test_now_stops_the_running_jobs_which_are_pending_again(tmp_path: Path) -> None:
    job = script(tmp_path)
    started = time.monotonic()

    result = cloudtask("--split=3", "--halt=now,fail=1", job, input=b"fail\n2\n3\n")

    assert time.monotonic() - started < 20  # the held jobs did not run on
    assert result.returncode == 1, result.stderr
    assert counts(result) == (3, 3, 2, 0, 1, 0)
    stopped = re.findall(r"job (\d) stopped by --halt=now,fail=1: pending again", result.stdout)
    assert sorted(stopped) == ["2", "3"]
    assert "--halt=now,fail=1 reached: no new job starts; running jobs are stopped" in result.stderr
    session = summary(result).id
    assert f"session {session} halted (--halt=now,fail=1): the rest is pending" in result.stdout
    assert "abort" not in result.stdout + result.stderr
    assert states(session) == {1: "failed", 2: "pending", 3: "pending"}
    assert meta(session, keys.STATE) == "halted"
    assert meta(session, keys.STOP_REASON) == "--halt=now,fail=1"
    assert attempts(session, 2) == ["stopped"]


def test_a_session_halted_now_is_resumed_and_runs_the_stopped_jobs(tmp_path: Path) -> None:
    job = script(tmp_path)
    first = cloudtask("--split=3", "--halt=now,fail=1", job, input=b"fail\n2\n3\n")
    session = summary(first).id
    (tmp_path / "hold").unlink()

    resumed = cloudtask(f"--resume={session}")

    assert resumed.returncode == 1, resumed.stderr  # job 1 failed, in the first run
    assert counts(resumed) == (1, 3, 0, 0, 1, 2)
    assert states(session) == {1: "failed", 2: "ok", 3: "ok"}
    assert attempts(session, 2) == ["stopped", "ok"]
    assert meta(session, keys.STATE) == "finished"


def test_soon_lets_the_running_jobs_finish(tmp_path: Path) -> None:
    """The neighbour of `now`: the same run, the running jobs end on their own."""
    job = script(tmp_path, wait="until_halt")  # jobs 2 and 3 run on after the halt

    result = cloudtask("--split=3", "--halt=soon,fail=1", job, input=b"fail\n2\n3\n4\n5\n")

    session = summary(result).id
    assert "stopped by" not in result.stdout
    assert "--halt=soon,fail=1 reached: no new job starts; running jobs finish" in result.stderr
    assert states(session) == {1: "failed", 2: "ok", 3: "ok", 4: "pending", 5: "pending"}
    assert meta(session, keys.STATE) == "halted"


# -- success and done ------------------------------------------------------------


def test_success_halts_once_enough_jobs_are_ok() -> None:
    result = cloudtask("--split=1", "--halt=soon,success=2", *EXIT, input=exits(1, 0, 1, 0, 0, 0))

    assert result.returncode == 1
    assert counts(result) == (4, 6, 2, 0, 2, 2)
    session = summary(result).id
    assert states(session) == {
        1: "failed",
        2: "ok",
        3: "failed",
        4: "ok",
        5: "pending",
        6: "pending",
    }
    assert f"session {session} halted (--halt=soon,success=2)" in result.stdout


def test_done_counts_every_finished_job_whatever_its_outcome() -> None:
    result = cloudtask("--split=1", "--halt=done=3", *EXIT, input=exits(0, 1, 0, 1, 0))

    assert counts(result) == (3, 5, 2, 0, 1, 2)
    session = summary(result).id
    assert states(session) == {1: "ok", 2: "failed", 3: "ok", 4: "pending", 5: "pending"}
    assert "halted (--halt=done=3)" in result.stdout


def test_done_counts_timeouts_too() -> None:
    result = cloudtask("--split=1", "--timeout=0.2", "--halt=done=2", "sleep", input=b"5\n0\n5\n")

    assert counts(result) == (2, 3, 1, 1, 0, 1)


# -- percentages -----------------------------------------------------------------


def test_a_percentage_does_not_trigger_on_fewer_than_three_finished_jobs() -> None:
    result = cloudtask("--split=1", "--halt=fail=50%", *EXIT, input=exits(1, 1))

    assert result.returncode == 1
    assert counts(result) == (2, 2, 0, 0, 2, 0)
    assert "halted" not in result.stdout


def test_a_percentage_triggers_from_the_third_finished_job_on() -> None:
    """The neighbour: two failures of two did not halt; at the third job, 2 of 3 do."""
    result = cloudtask("--split=1", "--halt=fail=50%", *EXIT, input=exits(1, 1, 0, 0, 0))

    assert counts(result) == (4, 5, 2, 0, 2, 1)
    assert "halted (--halt=fail=50%)" in result.stdout


def test_a_success_percentage_with_now() -> None:
    result = cloudtask("--split=1", "--halt=now,success=60%", *EXIT, input=exits(0, 0, 1, 0, 0, 0))

    # 2 of 2 ok does not count yet; 2 of 3 (66%) does.
    assert counts(result) == (4, 6, 3, 0, 1, 2)
    assert "halted (--halt=now,success=60%)" in result.stdout


# -- the old syntax --------------------------------------------------------------


@pytest.mark.parametrize("spec", ["fail=2", "soon,fail=2"])
def test_the_old_syntax_means_soon(spec: str) -> None:
    result = cloudtask("--split=1", f"--halt={spec}", *EXIT, input=exits(0, 1, 1, 0, 0))

    assert result.returncode == 1
    assert counts(result) == (4, 5, 2, 0, 2, 1)
    assert f"--halt={spec} reached: no new job starts; running jobs finish" in result.stderr
    session = summary(result).id
    assert f"session {session} halted (--halt={spec})" in result.stdout
    assert (meta(session, keys.CONFIG) or {})["halt"] == spec


# -- what is refused -------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    ["now", "soon", "now,", "later,fail=1", "now,fail", "fail=1,now", "now,ok=1", "3", "done=1.5"],
)
def test_a_spec_outside_the_grammar_is_a_one_line_usage_error(spec: str) -> None:
    result = cloudtask(f"--halt={spec}", "true", input=b"1\n")

    assert_usage_error(result, "--halt", GRAMMAR)
    assert session_ids() == []


@pytest.mark.parametrize("spec", ["now,fail=0", "soon,success=101%", "done=0%"])
def test_a_threshold_out_of_range_is_a_usage_error(spec: str) -> None:
    assert_usage_error(cloudtask(f"--halt={spec}", "true", input=b"1\n"), "--halt", "range")
