"""one_line() and scrub(): a message made fit for one line of a terminal, secrets masked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudtask.output import MASK, one_line, printable, scrub


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("  two\nlines \n", "two lines"),
        ("a\r\n\tb   c", "a b c"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("", ""),
        (" \n\t ", ""),
    ],
)
def test_one_line_collapses_whitespace_and_escapes_control_characters(
    text: str, expected: str
) -> None:
    assert one_line(text) == expected


def test_one_line_cuts_at_the_limit_with_a_mark() -> None:
    assert one_line("x" * 10, 10) == "x" * 10
    assert one_line("x" * 11, 10) == "x" * 7 + "..."
    assert one_line("word " * 100, 20) == "word word word wo..."


@given(st.text(), st.one_of(st.none(), st.integers(min_value=3, max_value=50)))
def test_one_line_is_one_printable_line_within_the_limit(text: str, limit: int | None) -> None:
    line = one_line(text, limit)
    assert line == " ".join(line.split())  # single spaces, none at either end
    assert printable(line) == line
    if limit is not None:
        assert len(line) <= limit


def test_scrub_masks_every_secret() -> None:
    text = "key hub-key-1234 refused; secret s3cret and s3cret again"
    assert scrub(text, ["hub-key-1234", "s3cret"]) == (
        f"key {MASK} refused; secret {MASK} and {MASK} again"
    )


def test_scrub_ignores_empty_secrets_and_leaves_other_text_alone() -> None:
    assert scrub("nothing to hide", ["", "absent"]) == "nothing to hide"
    assert scrub("nothing to hide", []) == "nothing to hide"


def test_scrub_masks_a_secret_that_holds_another_whole() -> None:
    # Masking "abcd" first would leave "-longer" of the longer secret shown.
    assert scrub("token abcd-longer", ["abcd", "abcd-longer"]) == f"token {MASK}"


def test_a_secret_across_lines_is_masked_before_the_message_is_collapsed() -> None:
    secret = "two\nlines"
    assert one_line(scrub(f"said: {secret}\n", [secret])) == f"said: {MASK}"
