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


# -- short flags and optional values (cloudtask's -0 and --replace[=STR]) ------

OPTIONS_13: dict[str, str | None] = {"null": None, "replace": "STR", "split": "N"}
SHORT = {"-0": "null"}
BARE = {"replace": "{}"}


def scan_13(argv: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    parsed = scan(argv, OPTIONS_13, interleaved=False, short=SHORT, bare=BARE)
    return parsed.options, parsed.positional


def test_a_short_flag_is_its_long_flag() -> None:
    assert scan_13(["-0", "gzip"]) == ({"null": True}, ["gzip"])
    assert scan_13(["--null", "gzip"]) == ({"null": True}, ["gzip"])


def test_a_short_flag_takes_no_value() -> None:
    with pytest.raises(UsageError, match=r"^-0 takes no value$"):
        scan_13(["-0=1", "gzip"])


def test_a_short_flag_after_the_command_is_the_command_s() -> None:
    assert scan_13(["gzip", "-0"]) == ({}, ["gzip", "-0"])


@pytest.mark.parametrize("arg", ["-00", "-1", "-0x"])
def test_other_short_forms_stay_unknown(arg: str) -> None:
    with pytest.raises(UsageError, match=f"^unknown option {arg}$"):
        scan_13([arg, "gzip"])


def test_an_optional_value_given_alone_takes_its_bare_value_not_the_next_argument() -> None:
    assert scan_13(["--replace", "cp", "{}", "x"]) == ({"replace": "{}"}, ["cp", "{}", "x"])


def test_an_optional_value_comes_after_equals() -> None:
    assert scan_13(["--replace=@", "cp", "@"]) == ({"replace": "@"}, ["cp", "@"])
    assert scan_13(["--replace=", "cp"]) == ({"replace": ""}, ["cp"])  # refused by resolve


def test_without_short_and_bare_the_scanner_is_as_before() -> None:
    with pytest.raises(UsageError, match=r"^unknown option -0$"):
        scan(["-0"], OPTIONS_13, interleaved=False)
    parsed = scan(["--replace", "x", "cmd"], OPTIONS_13, interleaved=False)
    assert parsed.options == {"replace": "x"} and parsed.positional == ["cmd"]
