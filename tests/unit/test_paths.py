"""write_private(): a private file replaced whole."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloudtask.paths import write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_writes_the_text_readable_by_the_user_only(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_private(path, "café\n")
    assert path.read_text(encoding="utf-8") == "café\n"
    assert mode(path) == 0o600
    assert os.listdir(tmp_path) == ["report.html"]


def test_write_private_replaces_a_file_and_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "timeline.svg"
    path.write_text("old and longer\n")
    path.chmod(0o644)
    write_private(path, "new\n")
    assert path.read_text() == "new\n"
    assert mode(path) == 0o600


def test_write_private_replaces_a_symlink_rather_than_writing_through_it(
    tmp_path: Path,
) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    path = tmp_path / "timeline.svg"
    path.symlink_to(target)
    write_private(path, "new\n")
    assert target.read_text() == "untouched\n"
    assert not path.is_symlink() and path.read_text() == "new\n"


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_private(path, "half \udc80")  # a lone surrogate cannot be UTF-8
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["report.html"]


def test_a_missing_directory_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_private(tmp_path / "gone" / "report.html", "text")
