"""The habits users bring from GNU parallel and xargs, and options that do
nothing for the run at hand (issue 13, item 7), through the CLI."""

from __future__ import annotations

import os

import pytest
from tests.support.helpers import (
    assert_usage_error,
    cloudtask,
    counts,
    env_with,
    session_ids,
)


@pytest.mark.parametrize(
    ("args", "ours"),
    [
        (["-j4"], "--split=N"),
        (["-j", "4"], "--split=N"),
        (["--jobs=4"], "--split=N"),
        (["-P", "8"], "--split=N"),
        (["--max-procs=8"], "--split=N"),
        (["-a", "list.txt"], "standard input: cloudtask COMMAND < FILE"),
        (["--arg-file=list.txt"], "standard input: cloudtask COMMAND < FILE"),
        (["-S", "host1,host2"], "--workers=LIST"),
    ],
)
def test_a_parallel_or_xargs_option_names_the_cloudtask_one(args: list[str], ours: str) -> None:
    result = cloudtask(*args, "echo", input=b"x\n")

    name = args[0].partition("=")[0]
    err = assert_usage_error(result, f"unknown option {name}", f"here: {ours}")
    assert err.startswith("cloudtask: ")
    assert session_ids() == []


def test_a_misspelt_option_still_gets_the_nearest_name() -> None:
    result = cloudtask("--splt=2", "echo", input=b"x\n")

    assert_usage_error(result, "unknown option --splt (did you mean --split?)")


def test_options_that_do_nothing_for_a_local_run_are_named_in_one_warning() -> None:
    result = cloudtask(
        "--budget=5", "--user=deploy", "--ami-id=ami-1", "--split=1", "echo", input=b"x\n"
    )

    assert result.returncode == 0, result.stderr
    assert counts(result) == (0, 1, 0, 0, 0, 1)
    warnings = [line for line in result.stderr.splitlines() if "do nothing" in line]
    assert len(warnings) == 1, result.stderr
    for name in ("--budget", "--user", "--ami-id"):
        assert name in warnings[0]
    assert "its jobs run on this machine" in warnings[0]


def test_options_that_act_and_ones_from_the_environment_are_not_named() -> None:
    result = cloudtask(
        "--split=1",
        "--timeout=1m",
        "--retries=1",
        "echo",
        input=b"x\n",
        env=env_with(CLOUDTASK_USER="deploy", CLOUDTASK_KEEPALIVE="9"),
    )

    assert result.returncode == 0, result.stderr
    assert "do nothing" not in result.stderr
    assert "nothing for this run" not in result.stderr


def test_a_mail_report_with_no_sendmail_and_no_smtp_host_is_refused_before_the_batch() -> None:
    if os.access("/usr/sbin/sendmail", os.X_OK):
        pytest.skip("this machine has /usr/sbin/sendmail: the mail report has a way out")
    result = cloudtask("--report=mail: ct@example.com ops@example.com", "echo", input=b"x\n")

    assert_usage_error(result, "--report: mail: no /usr/sbin/sendmail", "CLOUDTASK_SMTP_HOST")
    assert session_ids() == []


@pytest.mark.parametrize(
    ("smtp", "needle"),
    [
        ({"CLOUDTASK_SMTP_HOST": "no-such-mail-host.invalid"}, "unknown host 'no-such-mail"),
        (
            {"CLOUDTASK_SMTP_HOST": "127.0.0.1", "CLOUDTASK_SMTP_USER": "me"},
            "CLOUDTASK_SMTP_USER is set but CLOUDTASK_SMTP_PASSWORD",
        ),
        ({"CLOUDTASK_SMTP_HOST": "127.0.0.1", "CLOUDTASK_SMTP_TLS": "maybe"}, "SMTP_TLS"),
    ],
)
def test_a_mail_report_whose_smtp_settings_cannot_work_is_refused_before_the_batch(
    smtp: dict[str, str], needle: str
) -> None:
    result = cloudtask(
        "--report=mail: ct@example.com ops@example.com",
        "echo",
        input=b"x\n",
        env=env_with(**smtp),
    )

    assert_usage_error(result, "--report: mail: ", needle)
    assert session_ids() == []
