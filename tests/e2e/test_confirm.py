"""Confirmation before running (SPEC section 3): when stderr is a terminal and
--force is not given, cloudtask shows what it will run and asks for "yes".

The jobs come from a pipe (`seq 5 | cloudtask ...`) while stderr and /dev/tty
are a pseudo-terminal, as when a user types the command in a shell.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pexpect
import pytest
from tests.support.helpers import CLOUDTASK, SUMMARY, TIMEOUT, session_ids, sessions_dir, work_dir

PROMPT = "Type yes"


def spawn(pipeline: str, env: dict[str, str] | None = None) -> pexpect.spawn:
    """bash -c PIPELINE on a pseudo-terminal; {ct} in it is the cloudtask command."""
    return pexpect.spawn(
        "bash",
        ["-c", pipeline.format(ct=shlex.quote(CLOUDTASK))],
        env=dict(os.environ if env is None else env),
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(50, 200),
        cwd=str(work_dir()),
    )


def finish(child: pexpect.spawn) -> tuple[str, int]:
    """Everything the child printed until it exited, and its exit status."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return child.before, child.exitstatus


# Terminal control sequences (the live view's redraws), as a terminal would consume them.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> list[str]:
    return [CONTROL.sub("", line).rstrip() for line in text.replace("\r", "").split("\n")]


def job_lines(text: str) -> list[str]:
    """Job output lines the run showed. On a terminal they scroll above the live
    view's redraws, so they are read from the session log, which has every line
    the console showed (tests/e2e/test_live.py looks at the screen itself)."""
    logs = sorted(sessions_dir().glob("*/log")) if sessions_dir().is_dir() else []
    shown = [line for log in logs for line in log.read_text().splitlines()]
    return [line for line in shown if re.fullmatch(r"\S+ job \d+ \| .*", line)]


def ask(pipeline: str) -> tuple[pexpect.spawn, str]:
    """Start the pipeline and wait for the question; returns what came before it."""
    child = spawn(pipeline)
    if child.expect([PROMPT, pexpect.EOF]) != 0:
        output = child.before
        child.close()
        raise AssertionError(f"no question asked (exit {child.exitstatus}); output: {output!r}")
    return child, child.before


def test_yes_runs_the_jobs() -> None:
    child, _ = ask("seq 5 | {ct} --split=2 echo")
    child.sendline("yes")
    output, status = finish(child)

    assert status == 0, output
    assert sorted(line.split("| ")[1] for line in job_lines(output)) == ["1", "2", "3", "4", "5"]
    summary = [line for line in plain(output) if SUMMARY.fullmatch(line)]
    assert len(summary) == 1
    assert "0/5 !OK" in summary[0]
    assert session_ids() == [1]


def test_the_plan_shows_jobs_workers_first_and_last_job_and_options() -> None:
    child, shown = ask("seq 5 | {ct} --split=2 --timeout=30 echo")
    child.sendline("no")
    finish(child)
    text = plain(shown)

    assert any("5 jobs" in line for line in text), shown
    assert any("2 workers" in line for line in text), shown
    assert any(re.search(r"first job:\s+echo 1$", line) for line in text), shown
    assert any(re.search(r"last job:\s+echo 5$", line) for line in text), shown
    assert any(re.fullmatch(r"\s*split\s+2\s+command line", line) for line in text), shown
    assert any(re.fullmatch(r"\s*timeout\s+30(\.0)?\s+command line", line) for line in text)
    assert any(re.fullmatch(r"\s*retries\s+0\s+default", line) for line in text), shown


def test_the_plan_shows_where_options_came_from() -> None:
    child, shown = ask("seq 3 | CLOUDTASK_RETRIES=2 {ct} --split=2 echo")
    child.sendline("no")
    finish(child)

    assert any(re.fullmatch(r"\s*retries\s+2\s+environment", line) for line in plain(shown))


def test_the_plan_caps_split_at_the_number_of_jobs() -> None:
    child, shown = ask("seq 2 | {ct} --split=10 echo")
    child.sendline("no")
    finish(child)

    assert any("2 jobs" in line and "2 workers" in line for line in plain(shown)), shown


def test_no_runs_nothing() -> None:
    child, _ = ask("seq 5 | {ct} --split=2 echo")
    child.sendline("no")
    output, status = finish(child)

    assert status == 1, output
    assert "not confirmed" in output
    assert job_lines(output) == []
    assert not SUMMARY.search(output)
    assert "Traceback" not in output
    for session in session_ids():
        workers = sessions_dir() / str(session) / "workers"
        assert all(not log.read_text() for log in workers.iterdir()), "a job ran"


@pytest.mark.parametrize(
    ("answer", "confirms"),
    [("y", True), ("Y", True), (" yes ", True)]
    + [(refusal, False) for refusal in ("ye", "yep", "", "yes please", "oui")],
)
def test_only_yes_or_y_confirms(tmp_path: Path, answer: str, confirms: bool) -> None:
    marker = tmp_path / "ran"
    child, _ = ask(f"seq 1 | {{ct}} touch {shlex.quote(str(marker))}")
    child.sendline(answer)
    output, status = finish(child)

    assert status == (0 if confirms else 1), output
    assert marker.exists() == confirms
    assert ("not confirmed" in output) != confirms


def test_force_does_not_ask() -> None:
    child = spawn("seq 5 | {ct} --force --split=2 echo")
    output, status = finish(child)

    assert PROMPT not in output
    assert status == 0, output
    assert len(job_lines(output)) == 5


def test_force_from_the_environment_does_not_ask() -> None:
    child = spawn("seq 3 | CLOUDTASK_FORCE=1 {ct} echo")
    output, status = finish(child)

    assert PROMPT not in output
    assert status == 0, output
    assert len(job_lines(output)) == 3


def test_no_question_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    errors = tmp_path / "stderr.txt"
    child = spawn(f"seq 5 | {{ct}} --split=2 echo 2>{shlex.quote(str(errors))}")
    output, status = finish(child)

    assert PROMPT not in output
    assert PROMPT not in errors.read_text()
    assert status == 0, output
    assert len(job_lines(output)) == 5


def test_the_plan_of_an_ssh_run_names_no_local_provider() -> None:
    """Nothing is contacted before the answer: an address that no host has is fine."""
    child, shown = ask("seq 2 | {ct} --workers=198.18.0.2,198.18.0.6 echo")
    child.sendline("no")
    finish(child)
    text = plain(shown)

    assert any("2 workers (198.18.0.2, 198.18.0.6)" in line for line in text), shown
    assert not any(re.match(r"\s*provider\s", line) for line in text), shown
    assert any(
        re.fullmatch(r"\s*workers\s+198.18.0.2 198.18.0.6\s+command line", line) for line in text
    )


def test_the_plan_of_a_local_run_still_names_its_provider() -> None:
    child, shown = ask("seq 2 | {ct} echo")
    child.sendline("no")
    finish(child)

    assert any(re.fullmatch(r"\s*provider\s+local\s+default", line) for line in plain(shown)), shown
