"""The option scanner shared by cloudtask, the fleet commands and the logalyzer (argv.py)."""

from __future__ import annotations

import pytest

from cloudtask.argv import scan
from cloudtask.errors import UsageError

KNOWN: dict[str, str | None] = {"split": "N", "force": None}


@pytest.mark.parametrize("arg", ["--help", "-h"])
def test_help_and_its_short_form(arg: str) -> None:
    parsed = scan([arg, "echo"], KNOWN, interleaved=False)
    assert parsed.help and not parsed.version
    assert parsed.positional == ["echo"]


def test_version() -> None:
    parsed = scan(["--split=2", "--version"], KNOWN, interleaved=True)
    assert parsed.version and not parsed.help
    assert parsed.options == {"split": "2"}


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--help=x", "--help takes no value"),
        ("--help=", "--help takes no value"),
        ("--version=x", "--version takes no value"),
        ("-h=x", "-h takes no value"),
        ("--force=1", "--force takes no value"),  # as every flag says
    ],
)
@pytest.mark.parametrize("interleaved", [False, True])
def test_help_version_and_flags_given_a_value_say_they_take_none(
    arg: str, message: str, interleaved: bool
) -> None:
    with pytest.raises(UsageError) as raised:
        scan([arg, "echo"], KNOWN, interleaved=interleaved)
    assert str(raised.value) == message


def test_after_the_command_or_double_dash_they_are_the_jobs_words() -> None:
    parsed = scan(["printf", "--help=x", "-h=x"], KNOWN, interleaved=False)
    assert not parsed.help and parsed.positional == ["printf", "--help=x", "-h=x"]
    parsed = scan(["--", "--version=x"], KNOWN, interleaved=True)
    assert not parsed.version and parsed.positional == ["--version=x"]


@pytest.mark.parametrize(
    ("arg", "message"), [("-x", "unknown option -x"), ("-hx", "unknown option -hx")]
)
def test_other_short_options_are_unknown(arg: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        scan([arg], KNOWN, interleaved=True)
