"""The cloudtask command end to end (SPEC sections 2, 3, 4, 5, 8).

Every test runs the installed command as a subprocess and looks at what a user
or a script would: exit status, output lines, the summary line, files made.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pexpect
import pytest
from tests.support.helpers import (
    CLOUDTASK,
    SUMMARY,
    TIMEOUT,
    assert_no_traceback,
    assert_usage_error,
    cloudtask,
    counts,
    env_with,
    job_output,
    lines,
    outputs_by_job,
    session_ids,
    sessions_dir,
    split_shown,
    summary,
)

from cloudtask.config import OPTIONS
from cloudtask.jobs import MAX_ARGUMENT, WRAPPER_ROOM

# -- job input (section 2) ---------------------------------------------------


def test_seq_3_echo_prints_each_job_and_the_summary_last() -> None:
    result = cloudtask("echo", input=b"1\n2\n3\n")

    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert job_output(result.stdout) == ["1", "2", "3"]
    last = lines(result.stdout)[-1]
    assert SUMMARY.fullmatch(last), last
    assert counts(result) == (0, 3, 0, 0, 0, 3)
    assert summary(result).seconds == 0


def test_summary_line_has_the_exact_spec_form() -> None:
    result = cloudtask("echo", input=b"1\n2\n3\n")

    last = lines(result.stdout)[-1]
    expected = r"session \d+ \(0 seconds\): 0/3 !OK - 0 pending, 0 timeouts, 0 errors, 3 OK"
    assert re.fullmatch(expected, last), last


def test_job_arguments_are_requoted() -> None:
    result = cloudtask("printf", "<%s>\\n", input=b"'a b' c\n")

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["<a b>", "<c>"]


def test_job_arguments_with_shell_syntax_reach_the_command_literally(tmp_path: Path) -> None:
    result = cloudtask(
        "printf", "<%s>\\n", input=b"'$HOME' '*' ';' 'x|y' \"`true`\"\n", cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["<$HOME>", "<*>", "<;>", "<x|y>", "<`true`>"]


def test_option_parsing_stops_at_the_first_positional() -> None:
    # If --split=5 or -l were taken as options they would not reach printf.
    result = cloudtask("printf", "[%s]\\n", "-l", "--split=5", input=b"a\n")

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["[-l]", "[--split=5]", "[a]"]
    assert split_shown(result.stdout) == 1


def test_double_dash_ends_the_options() -> None:
    result = cloudtask("--", "printf", "[%s]\\n", "--force", input=b"a\n")

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["[--force]", "[a]"]


def test_a_single_positional_with_shell_syntax_is_a_shell_string() -> None:
    # The job's words are appended to the shell string: "... ; echo c d".
    result = cloudtask("echo a | tr a b; echo", input=b"c d\n")

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["b", "c d"]


def test_several_positionals_are_quoted_one_by_one() -> None:
    result = cloudtask("echo", "a|b", "$HOME", input=b"c\n")

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["a|b $HOME c"]


def test_duplicate_lines_are_separate_jobs() -> None:
    result = cloudtask("echo", input=b"x\nx\nx\n")

    assert result.returncode == 0, result.stderr
    assert outputs_by_job(result.stdout) == {1: ["x"], 2: ["x"], 3: ["x"]}
    assert counts(result) == (0, 3, 0, 0, 0, 3)


def test_comment_and_blank_lines_are_skipped_but_hash_inside_a_line_is_data() -> None:
    text = b"# a comment\n\n   \n\t# indented comment\na # not a comment\n#\nb\n"
    result = cloudtask("echo", input=text)

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["a # not a comment", "b"]
    assert counts(result) == (0, 2, 0, 0, 0, 2)


def test_a_last_line_without_newline_is_a_job() -> None:
    result = cloudtask("echo", input=b"1\n2")

    assert job_output(result.stdout) == ["1", "2"]


BAD_LINES = {
    "unbalanced quote": b"'unbalanced",
    "NUL byte": b"a\0b",
    "invalid UTF-8": b"caf\xe9",
    "trailing backslash": b"a \\",
    "a command too long for any worker": b"x" * 130_000,
    "one that its quoting makes too long": b"\\'" * 30_000,
}


def test_the_longest_command_a_worker_runs_is_not_refused() -> None:
    quotes = 2  # the command is quoted whole into the SSH wrapper
    longest = b"x" * (MAX_ARGUMENT - WRAPPER_ROOM - len("echo ") - quotes)

    result = cloudtask("echo", input=longest + b"\n")

    assert result.returncode == 0, result.stderr[:500]
    assert counts(result) == (0, 1, 0, 0, 0, 1)


@pytest.mark.parametrize("bad", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_bad_input_is_refused_before_anything_runs(tmp_path: Path, bad: bytes) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    text = b"%s\n%s\n%s\n" % (bytes(first), bytes(second), bad)

    result = cloudtask("touch", input=text, cwd=tmp_path)

    assert_usage_error(result, "input line 3:")
    assert not first.exists(), "line 1's job ran although line 3 is bad"
    assert not second.exists()
    assert session_ids() == []


def test_a_last_line_ending_in_a_backslash_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    result = cloudtask("touch", input=bytes(marker) + b"\na \\", cwd=tmp_path)

    assert_usage_error(result, "input line 2:")
    assert not marker.exists()


def test_bad_input_line_numbers_count_comments_and_blank_lines(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    text = b"# comment\n%s\n\n'bad\nok\n" % bytes(marker)

    result = cloudtask("touch", input=text, cwd=tmp_path)

    err = assert_usage_error(result, "input line 4:")
    assert "input line 5" not in err
    assert not marker.exists()


def test_bad_input_far_down_a_long_input_names_its_line(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    text = bytes(marker) + b"\n" + b"ok\n" * 998 + b'bad "quote\n'

    result = cloudtask("touch", input=text, cwd=tmp_path)

    assert_usage_error(result, "input line 1000:")
    assert not marker.exists()


@pytest.mark.parametrize(
    "text", [b"", b"\n\n", b"# only\n  # comments\n\n"], ids=["empty", "blank", "comments"]
)
def test_no_jobs_is_an_error(text: bytes) -> None:
    result = cloudtask("echo", input=text)

    assert_usage_error(result, "no jobs")
    assert session_ids() == []


def test_stdin_from_a_terminal_prints_usage() -> None:
    child = pexpect.spawn(
        CLOUDTASK,
        ["echo"],
        env=dict(os.environ),
        encoding="utf-8",
        timeout=TIMEOUT,
        cwd=str(sessions_dir().parent),
    )
    child.expect(pexpect.EOF)
    child.close()
    output = child.before

    assert child.exitstatus == 2, output
    assert "usage:" in output
    assert "no jobs" in output
    assert "Traceback" not in output
    assert session_ids() == []


def test_no_command_is_a_usage_error() -> None:
    result = cloudtask(input=b"1\n")

    err = assert_usage_error(result, "no command", one_line=False)
    assert "usage:" in err


def test_options_but_no_command_is_a_usage_error() -> None:
    result = cloudtask("--split=2", "--timeout=5", input=b"1\n")

    assert_usage_error(result, "no command", one_line=False)


# -- exit status and summary counts (sections 5 and 8) -------------------------


def test_a_failing_job_makes_exit_status_1_and_counts_as_an_error() -> None:
    result = cloudtask("sh", "-c", 'exit "$0"', input=b"0\n3\n0\n")

    assert result.returncode == 1, result.stderr
    assert_no_traceback(result)
    assert counts(result) == (1, 3, 0, 0, 1, 2)


def test_a_job_over_its_timeout_counts_as_a_timeout() -> None:
    # "sleep 5; echo late 0": the job only ends by itself after 5 s.
    result = cloudtask("--timeout=0.5", "sleep 5; echo late", input=b"0\n")

    assert result.returncode == 1, result.stderr
    assert counts(result) == (1, 1, 0, 1, 0, 0)
    assert summary(result).seconds <= 3
    assert "late 0" not in job_output(result.stdout)


def test_timeouts_and_oks_are_counted_apart() -> None:
    result = cloudtask("--timeout=0.5", "sleep", input=b"5\n0\n5\n", timeout=20)

    assert result.returncode == 1, result.stderr
    assert counts(result) == (2, 3, 0, 2, 0, 1)


def counting_script(counter: Path) -> str:
    """A job that fails the first time it runs and succeeds from then on."""
    return (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
        "[ $n -ge 2 ] && echo"
    )


def test_retries_rerun_a_failed_job_until_it_succeeds(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    script = counting_script(counter)

    result = cloudtask("--retries=1", script, input=b"x\n")

    assert result.returncode == 0, (result.stdout, result.stderr)
    assert counter.read_text().strip() == "2"
    assert counts(result) == (0, 1, 0, 0, 0, 1)


def test_without_retries_a_failed_job_runs_once(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    script = counting_script(counter)

    result = cloudtask(script, input=b"x\n")

    assert result.returncode == 1
    assert counter.read_text().strip() == "1"
    assert counts(result) == (1, 1, 0, 0, 1, 0)


def test_retries_are_limited(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"

    result = cloudtask("--retries=2", f"echo try >> {attempts}; false", input=b"x\n")

    assert result.returncode == 1
    assert attempts.read_text().splitlines() == ["try"] * 3
    assert counts(result) == (1, 1, 0, 0, 1, 0)


def test_strikes_retire_a_worker_and_leave_the_rest_pending(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"

    result = cloudtask(
        "--split=1", "--strikes=2", f"echo >> {attempts}; false", input=b"1\n2\n3\n4\n"
    )

    assert result.returncode == 1, result.stderr
    assert len(attempts.read_text().splitlines()) == 2
    assert counts(result) == (4, 4, 2, 0, 2, 0)


def test_a_success_resets_the_strikes(tmp_path: Path) -> None:
    result = cloudtask("--split=1", "--strikes=2", "sh", "-c", 'exit "$0"', input=b"1\n0\n1\n0\n")

    assert result.returncode == 1
    assert counts(result) == (2, 4, 0, 0, 2, 2)


def test_job_stdin_is_empty() -> None:
    result = cloudtask(
        "--split=1", "--timeout=10", "sh", "-c", 'cat; echo "done $0"', input=b"x\ny\n"
    )

    assert result.returncode == 0, result.stderr
    assert summary(result).seconds < 5
    assert job_output(result.stdout) == ["done x", "done y"]


def test_a_job_reading_input_gets_end_of_file() -> None:
    result = cloudtask("--timeout=10", "sh", "-c", "read x", input=b"a\n")

    assert result.returncode == 1
    assert counts(result) == (1, 1, 0, 0, 1, 0)


def test_job_stderr_is_shown_too() -> None:
    result = cloudtask("sh", "-c", 'echo "err $0" >&2', input=b"a\n")

    assert job_output(result.stdout) == ["err a"]


# -- precedence end to end: command line > environment > default ---------------


def test_split_default_is_the_cpus_this_process_may_use_at_most_the_jobs() -> None:
    result = cloudtask("echo", input=b"1\n2\n3\n")

    split = min(len(os.sched_getaffinity(0)), 3)
    assert split_shown(result.stdout) == split
    workers = sorted(p.name for p in (sessions_dir() / "1" / "workers").iterdir())
    assert workers == [f"local{n}" for n in range(1, split + 1)]


def test_split_from_the_environment_beats_the_default() -> None:
    result = cloudtask("echo", input=b"1\n2\n3\n4\n", env=env_with(CLOUDTASK_SPLIT="3"))

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == 3
    workers = sorted(p.name for p in (sessions_dir() / "1" / "workers").iterdir())
    assert workers == ["local1", "local2", "local3"]


def test_split_on_the_command_line_beats_the_environment() -> None:
    result = cloudtask(
        "--split=2", "echo", input=b"1\n2\n3\n4\n", env=env_with(CLOUDTASK_SPLIT="3")
    )

    assert result.returncode == 0, result.stderr
    assert split_shown(result.stdout) == 2
    workers = sorted(p.name for p in (sessions_dir() / "1" / "workers").iterdir())
    assert workers == ["local1", "local2"]


def test_split_is_capped_at_the_number_of_jobs() -> None:
    result = cloudtask("--split=5", "echo", input=b"1\n2\n")

    assert split_shown(result.stdout) == 2
    assert counts(result) == (0, 2, 0, 0, 0, 2)


def test_split_runs_jobs_in_parallel() -> None:
    result = cloudtask("--split=4", "sleep", input=b"1\n1\n1\n1\n", timeout=20)

    assert result.returncode == 0
    assert summary(result).seconds <= 2


def test_timeout_from_the_environment_applies() -> None:
    result = cloudtask("sleep", input=b"5\n", env=env_with(CLOUDTASK_TIMEOUT="0.5"))

    assert result.returncode == 1
    assert counts(result) == (1, 1, 0, 1, 0, 0)


def test_timeout_on_the_command_line_beats_the_environment() -> None:
    result = cloudtask("--timeout=20", "sleep", input=b"1\n", env=env_with(CLOUDTASK_TIMEOUT="0.2"))

    assert result.returncode == 0, result.stdout
    assert counts(result) == (0, 1, 0, 0, 0, 1)


def test_force_from_the_environment_is_accepted() -> None:
    result = cloudtask("echo", input=b"1\n", env=env_with(CLOUDTASK_FORCE="yes"))

    assert result.returncode == 0, result.stderr


# -- bad options: one line, the option named, exit 2 ----------------------------

BAD_OPTIONS = [
    (["--split=-1"], ["--split"]),
    (["--split=0"], ["--split"]),
    (["--split=abc"], ["--split"]),
    (["--split=1.5"], ["--split"]),
    (["--split="], ["--split"]),
    (["--timeout=abc"], ["--timeout"]),
    (["--timeout=-1"], ["--timeout"]),
    (["--keepalive=0"], ["--keepalive"]),
    (["--timeout=inf"], ["--timeout"]),
    (["--timeout=nan"], ["--timeout"]),
    (["--retries=-1"], ["--retries"]),
    (["--retries=x"], ["--retries"]),
    (["--strikes=-1"], ["--strikes"]),
    (["--provider=nope"], ["--provider", "nope", "local", "hub", "ec2", "libcloud"]),
    (["--workers=/nonexistent/workers.txt"], ["--workers"]),
    (["--ssh-identity=/nonexistent/id_rsa"], ["--ssh-identity"]),
    (["--halt=sometimes"], ["--halt"]),
    (["--halt=fail=0"], ["--halt"]),
    (["--splt=2"], ["--splt", "did you mean --split"]),
    (["--timout", "5"], ["--timout", "did you mean --timeout"]),
    (["--force=1"], ["--force"]),
    (["--help=x"], ["--help takes no value"]),
    (["--version=x"], ["--version takes no value"]),
    (["-h=x"], ["-h takes no value"]),
    (["-x"], ["-x"]),
    (["--sessions=/dev/null"], ["--sessions"]),
    # Found by the fuzzer (tests/fuzz): each of these was a traceback.
    (["--overlay=~nosuchuser/dir"], ["--overlay", "~nosuchuser"]),
    (["--sessions=~nosuchuser/s"], ["--sessions", "~nosuchuser"]),
    (["--joblog=~nosuchuser/log"], ["--joblog", "~nosuchuser"]),
    (["--workers=/tmp/" + "w" * 300], ["--workers", "File name too long"]),
    (["--ssh-identity=/tmp/" + "k" * 300], ["--ssh-identity", "File name too long"]),
    (["--sessions=/tmp/" + "s" * 300], ["--sessions", "File name too long"]),
    (["--hub-apikey=cl\u00e9"], ["--hub-apikey", "printable ASCII"]),
    (["--joblog=/dev/full"], ["--joblog", "/dev/full", "No space left"]),
    (["--joblog=/nonexistent/a\nb"], ["--joblog", "a\\x0ab"]),
]


@pytest.mark.parametrize(
    ("args", "needles"), BAD_OPTIONS, ids=[" ".join(args) for args, _ in BAD_OPTIONS]
)
def test_a_bad_option_is_one_line_naming_it_and_exit_2(args: list[str], needles: list[str]) -> None:
    result = cloudtask(*args, "echo", input=b"1\n")

    assert_usage_error(result, *needles)
    assert session_ids() == []


def test_an_ssh_identity_that_is_not_a_private_key_is_refused(tmp_path: Path) -> None:
    not_a_key = tmp_path / "id_ed25519"
    not_a_key.write_text("this is not a key\n")

    result = cloudtask("--workers=127.0.0.1", f"--ssh-identity={not_a_key}", "echo", input=b"1\n")

    assert_usage_error(result, "--ssh-identity", str(not_a_key), "not a private key")
    assert session_ids() == []


def test_a_command_word_that_is_not_utf8_is_refused_before_anything_runs() -> None:
    result = cloudtask("echo", os.fsdecode(b"caf\xe9"), input=b"1\n")

    assert_usage_error(result, "command word 2", "not valid UTF-8")
    assert session_ids() == []


def test_an_option_missing_its_value_at_the_end() -> None:
    result = cloudtask("--split", input=b"1\n")

    assert_usage_error(result, "--split", "value")


def test_a_flag_given_a_value_says_it_takes_none() -> None:
    result = cloudtask("--force=1", "echo", input=b"1\n")

    assert_usage_error(result, "--force", "no value")


def test_a_missing_workers_file_is_named() -> None:
    result = cloudtask("--workers=/nonexistent/workers.txt", "echo", input=b"1\n")

    assert_usage_error(result, "--workers", "/nonexistent/workers.txt")


@pytest.mark.parametrize("value", ["abc", "0", "-2", ""])
def test_a_bad_environment_value_names_the_variable(value: str) -> None:
    result = cloudtask("echo", input=b"1\n", env=env_with(CLOUDTASK_SPLIT=value))

    assert_usage_error(result, "CLOUDTASK_SPLIT")


def test_a_bad_environment_timeout_names_the_variable() -> None:
    result = cloudtask("echo", input=b"1\n", env=env_with(CLOUDTASK_TIMEOUT="soon"))

    assert_usage_error(result, "CLOUDTASK_TIMEOUT")


def test_a_bad_environment_flag_names_the_variable() -> None:
    result = cloudtask("echo", input=b"1\n", env=env_with(CLOUDTASK_FORCE="maybe"))

    assert_usage_error(result, "CLOUDTASK_FORCE")


def test_a_bad_environment_value_is_ignored_when_the_command_line_overrides_it() -> None:
    result = cloudtask("--split=1", "echo", input=b"1\n", env=env_with(CLOUDTASK_SPLIT="abc"))

    assert result.returncode == 0, result.stderr


# -- options whose behaviour comes later: refused, never ignored ----------------


@pytest.mark.parametrize(
    ("name", "missing"),
    [("hub", "--hub-apikey"), ("ec2", "--ami-id"), ("libcloud", "--libcloud-driver")],
)
def test_a_cloud_provider_without_its_options_is_refused_before_input(
    tmp_path: Path, name: str, missing: str
) -> None:
    marker = tmp_path / "ran"

    result = cloudtask(
        f"--provider={name}",
        f"touch {marker}",
        input=b"1\n",
        cwd=tmp_path,
        env=env_with(AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true"),
    )

    assert_usage_error(result, missing)
    assert not marker.exists()
    assert session_ids() == []


def test_more_split_than_workers_with_the_local_provider_is_refused(tmp_path: Path) -> None:
    result = cloudtask("--workers=198.18.0.1", "--split=3", "true", input=b"1\n", cwd=tmp_path)

    assert_usage_error(result, "--split=3", "--provider")


def test_provider_local_explicitly_runs() -> None:
    result = cloudtask("--provider=local", "echo", input=b"1\n")

    assert result.returncode == 0, result.stderr
    assert job_output(result.stdout) == ["1"]


# -- --help ------------------------------------------------------------------


def help_blocks(text: str) -> dict[str, str]:
    """Each option's part of --help, keyed by its flag."""
    blocks: dict[str, str] = {}
    order = [option.flag_name for option in OPTIONS]
    for index, flag in enumerate(order):
        start = text.find(f"  {flag}")
        assert start >= 0, f"{flag} is not in --help"
        end = text.find(f"  {order[index + 1]}", start) if index + 1 < len(order) else len(text)
        blocks[flag] = text[start:end]
    return blocks


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--split=2", "--help"]])
def test_help_lists_every_option_with_its_env_var_and_default(argv: list[str]) -> None:
    result = cloudtask(*argv, input=None)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    blocks = help_blocks(result.stdout)
    for option in OPTIONS:
        block = blocks[option.flag_name]
        assert option.env in block, (option.name, block)
        default = option.default_help or (
            str(option.default) if option.default not in (None, False) else None
        )
        if default is not None:
            assert default in block, (option.name, default, block)
    assert session_ids() == []


def test_help_states_the_spec_defaults() -> None:
    blocks = help_blocks(cloudtask("--help", input=None).stdout)

    assert "3600" in blocks["--timeout"]
    assert "root" in blocks["--user"]
    assert "~/.cloudtask" in blocks["--sessions"]
    assert "local" in blocks["--provider"]
    assert "1" in blocks["--split"]


def test_version() -> None:
    result = cloudtask("--version", input=None)

    assert result.returncode == 0
    assert result.stdout.startswith("cloudtask ")


@pytest.mark.parametrize("flag", ["--help", "-h", "--version"])
def test_help_and_version_given_a_value_say_they_take_none(flag: str) -> None:
    result = cloudtask(f"{flag}=x", input=None)

    err = assert_usage_error(result, f"{flag} takes no value")
    assert err == f"cloudtask: {flag} takes no value"
    assert result.stdout == ""


# -- the session directory (section 4) ----------------------------------------


def test_a_session_directory_is_private_and_holds_the_logs() -> None:
    result = cloudtask("--split=2", "echo", input=b"one\ntwo\nthree\n")

    assert result.returncode == 0, result.stderr
    session = sessions_dir() / str(summary(result).id)
    assert stat.S_IMODE(session.stat().st_mode) == 0o700
    assert stat.S_IMODE((session / "workers").stat().st_mode) == 0o700
    assert (session / "log").read_text() == result.stdout
    logs = sorted(p.name for p in (session / "workers").iterdir())
    assert logs == ["local1", "local2"]
    worker_text = "".join((session / "workers" / name).read_text() for name in logs)
    for word in ("one", "two", "three"):
        assert word in worker_text.splitlines()


def test_the_session_log_and_files_are_private() -> None:
    result = cloudtask("echo", input=b"1\n")

    session = sessions_dir() / str(summary(result).id)
    assert stat.S_IMODE((session / "log").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((session / "workers" / "local1").stat().st_mode) & 0o077 == 0


def test_the_session_log_holds_failures_too() -> None:
    result = cloudtask("false", input=b"1\n")

    session = sessions_dir() / str(summary(result).id)
    log = (session / "log").read_text().splitlines()
    assert log[-1] == lines(result.stdout)[-1]
    assert SUMMARY.fullmatch(log[-1])


def test_consecutive_runs_get_ids_1_and_2() -> None:
    first = cloudtask("echo", input=b"a\n")
    second = cloudtask("echo", input=b"b\n")

    assert summary(first).id == 1
    assert summary(second).id == 2
    assert session_ids() == [1, 2]
    assert "a" in (sessions_dir() / "1" / "workers" / "local1").read_text().splitlines()
    assert "b" in (sessions_dir() / "2" / "workers" / "local1").read_text().splitlines()


def test_sessions_option_relative_to_the_working_directory(tmp_path: Path) -> None:
    result = cloudtask("--sessions=here", "echo", input=b"a\n", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "here" / "1" / "log").is_file()
    assert session_ids() == []


def waiting_for_input(pid: int) -> bool:
    """Whether the process is blocked reading a pipe (its standard input here)."""
    try:
        return "pipe" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def test_concurrent_runs_get_different_ids() -> None:
    count = 8
    pipes = [os.pipe() for _ in range(count)]
    procs = []
    results = []
    try:
        for read_end, _ in pipes:
            procs.append(
                subprocess.Popen(
                    [CLOUDTASK, "echo"],
                    stdin=read_end,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
            os.close(read_end)
        # Once every process waits for its jobs, they all get them at the same
        # instant and race for a session id.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            waiting_for_input(proc.pid) for proc in procs
        ):
            time.sleep(0.01)
        for index, (_, write_end) in enumerate(pipes):
            os.write(write_end, f"{index}\n".encode())
        for _, write_end in pipes:
            os.close(write_end)
        pipes = []
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            results.append(
                subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())
            )
    finally:
        for _, write_end in pipes:
            os.close(write_end)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    for result in results:
        assert result.returncode == 0, result.stderr
    ids = [summary(result).id for result in results]
    assert sorted(ids) == list(range(1, count + 1))
    assert session_ids() == list(range(1, count + 1))
    for index, result in enumerate(results):
        assert job_output(result.stdout) == [str(index)]


# -- standard output closed early (`cloudtask ... | head -1`) ---------------------


def run_with_closed_stdout(*args: str, input: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run cloudtask with stdout a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [CLOUDTASK, *args],
            input=input,
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=sessions_dir().parent,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        os.close(write_end)


def test_help_into_a_closed_pipe_is_no_traceback() -> None:
    result = run_with_closed_stdout("--help", input=b"")

    assert b"Traceback" not in result.stderr, result.stderr.decode()


def test_a_session_whose_stdout_is_closed_still_ends_with_its_summary_logged() -> None:
    result = run_with_closed_stdout("echo", input=b"1\n2\n3\n")

    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert session_ids() == [1]
    log = (sessions_dir() / "1" / "log").read_text().splitlines()
    assert log, "empty session log"
    assert SUMMARY.fullmatch(log[-1]), log
