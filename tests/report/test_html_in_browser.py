"""The HTML report opened in a real browser: headless Chromium (Debian's chromium).

Chromium runs in a network namespace of its own with no interface up
(`unshare -n`), so the page loads with no network at all. Its console
messages (a blocked resource, a script error, a refused style) are logged to
stderr as `:CONSOLE` lines: there must be none. The screenshot is kept in the
test's directory (and its size checked).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from tests.support.helpers import BIN, cloudtask, env_with, sessions_dir

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or os.geteuid() != 0,
    reason="needs Debian's chromium (scripts/setup installs it) and root for unshare -n",
)
WIDTH, HEIGHT = 1100, 1300


def open_in_browser(page: Path, screenshot: Path) -> list[str]:
    """Load the page offline and screenshot it; the console messages it caused."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            "unshare",
            "-n",
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WIDTH},{HEIGHT}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={screenshot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_the_html_report_loads_offline_with_no_console_error(tmp_path: Path) -> None:
    result = cloudtask(
        "--split=2", "sh", "-c", "sleep 0.$0; exit $(( $0 % 4 == 0 ))", input=b"1\n2\n3\n4\n5\n6\n"
    )
    assert result.returncode == 1
    report = subprocess.run(
        [str(BIN / "cloudtask-logalyzer"), "--html", "1"],
        capture_output=True,
        text=True,
        env=env_with(),
        check=False,
    )
    assert report.returncode == 0, report.stderr
    page = Path(report.stdout.strip())
    assert page == sessions_dir() / "1" / "report.html"

    screenshot = tmp_path / "report.png"
    console = open_in_browser(page, screenshot)

    assert console == []
    assert png_size(screenshot) == (WIDTH, HEIGHT)
    assert screenshot.stat().st_size > 20_000  # a page drawn, not a blank one


def test_the_check_sees_console_errors(tmp_path: Path) -> None:
    """The browser check can fail: a page with a blocked image and a script error."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><head><meta http-equiv="Content-Security-Policy" content="default-src none">'
        '</head><body><img src="http://198.18.0.1/x.png"></body></html>'
    )

    console = open_in_browser(page, tmp_path / "bad.png")

    assert any("violates the following Content Security Policy" in line for line in console)
