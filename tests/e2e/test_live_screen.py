"""The live view as a person sees it: cloudtask run in tmux, the screen captured.

tmux gives cloudtask a real terminal (stderr is a tty), so the live view
draws; `capture-pane` returns the screen as a terminal shows it, after every
redraw and cursor move. Plain mode (stderr not a terminal) must have no
control characters at all.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.helpers import CLOUDTASK, cloudtask, sessions_dir, work_dir

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (scripts/setup installs it)"
)


class Screen:
    """A tmux session of its own, 100x30, running one shell command."""

    def __init__(self, command: str) -> None:
        self.name = f"ct-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                self.name,
                "-x",
                "100",
                "-y",
                "30",
                f"{command}; echo EXIT=$?; sleep 60",
            ],
            check=True,
            cwd=work_dir(),
        )

    def text(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def scrollback(self) -> list[str]:
        """Every line that scrolled off the screen, then the screen."""
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-S", "-", "-t", self.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()

    def wait_for(self, pattern: str, limit: float = 30) -> str:
        deadline = time.monotonic() + limit
        while True:
            shown = self.text()
            if re.search(pattern, shown, re.MULTILINE):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never on the screen:\n{shown}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False)


@pytest.fixture
def screen() -> Iterator[list[Screen]]:
    made: list[Screen] = []
    yield made
    for one in made:
        one.close()


def job_script(tmp: Path) -> Path:
    script = tmp / "job.sh"
    script.write_text(f'[ -e {tmp}/go ] || sleep 0.4\necho "out $1"\n')
    return script


def test_the_live_view_shows_counts_rate_and_workers_then_a_clean_end(
    screen: list[Screen],
) -> None:
    tmp = work_dir()
    script = job_script(tmp)
    # A word that makes each job's command too long for the 100 columns.
    command = (
        f"seq 30 | CLOUDTASK_SESSIONS={shlex.quote(str(sessions_dir()))} "
        f"{shlex.quote(CLOUDTASK)} --force --split=3 sh {script} {'x' * 60} > {tmp}/stdout"
    )
    view = Screen(command)
    screen.append(view)

    running = view.wait_for(r"^3 workers(.|\n)*^  local3 +job \d+")
    rate = r"^\d+\.\d jobs/s, elapsed \d+:\d\d, ETA (\d+:\d\d|\?); 3 running, \d+ pending$"
    assert re.search(r"^session 1: \d+/30 done - \d+ ok, 0 failed", running, re.M), running
    assert re.search(rate, running, re.M), running
    assert re.search(r"^3 workers", running, re.M), running
    for worker in ("local1", "local2", "local3"):
        # A command too long for the screen is cut, not wrapped.
        assert re.search(rf"^  {worker}  job \d+: sh /\S+( x*)?…$", running, re.M), running
    assert not re.search(r"^x", running, re.M), running

    (tmp / "go").touch()
    final = view.wait_for(r"EXIT=\d+")
    assert "EXIT=0" in final
    assert re.search(
        r"^session 1: 30/30 done - 30 ok, 0 failed, 0 timeouts, 0 lost$", final, re.M
    ), final
    assert re.search(r"^no worker left$", final, re.M), final
    # The picture is drawn once at the end, not left in pieces.
    assert final.count("30/30 done") == 1, final
    # Standard output (a file here) has the event lines and the summary, plain.
    stdout = (tmp / "stdout").read_text()
    assert stdout.splitlines()[-1].startswith("session 1 (")
    assert "\x1b" not in stdout


def test_event_lines_on_the_same_terminal_scroll_above_the_picture(
    screen: list[Screen],
) -> None:
    tmp = work_dir()
    script = job_script(tmp)
    (tmp / "go").touch()
    command = (
        f"seq 40 | CLOUDTASK_SESSIONS={shlex.quote(str(sessions_dir()))} "
        f"{shlex.quote(CLOUDTASK)} --force --split=3 sh {script}"
    )
    view = Screen(command)
    screen.append(view)
    view.wait_for(r"EXIT=\d+")

    lines = [line.rstrip() for line in view.scrollback()]
    text = "\n".join(lines)
    assert "EXIT=0" in lines, text
    for n in range(1, 41):
        assert (
            len([line for line in lines if re.fullmatch(rf"local\d job {n} \| out {n}", line)]) == 1
        )
    # The picture once, the last one, between the event lines and the summary.
    [picture] = [n for n, line in enumerate(lines) if re.match(r"session 1: \d+/40 done", line)]
    assert lines[picture].startswith("session 1: 40/40 done - 40 ok"), text
    assert lines[picture - 2].startswith("local"), text  # then the cursor's empty line
    assert lines[picture + 2] == "no worker left", text
    assert re.match(r"session 1 \(\d+ seconds?\): 0/40 !OK", lines[picture + 3]), text


def test_plain_mode_has_no_control_characters() -> None:
    tmp = work_dir()
    script = tmp / "job.sh"
    script.write_text("printf 'progress 10%%\\r progress 100%%\\n\\033[31mred\\033[0m\\n'\n")

    result = cloudtask("--split=2", "sh", str(script), input=b"1\n2\n3\n")

    assert result.returncode == 0, result.stderr
    for text in (result.stdout, result.stderr, (sessions_dir() / "1" / "log").read_text()):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text), repr(text)
