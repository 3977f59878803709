"""Input modes, the command's placeholder and dry runs (SPEC section 13, issue 13).

`--lines` and `--null` / `-0` make each input line or NUL-ended record one
argument, as it is; `--replace[=STR]` puts the job's quoted arguments in place
of every `{}` (or STR) instead of appending them; `--dry-run` prints each job's
command line and runs nothing. Every test runs the installed command and looks
at what the jobs actually received: a job that prints `ascii(sys.argv[1:])`
shows its exact arguments, whatever bytes they hold.
"""

from __future__ import annotations

import ast
import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from tests.support.helpers import (
    CLOUDTASK,
    PYTHON,
    TIMEOUT,
    assert_no_traceback,
    assert_usage_error,
    cloudtask,
    counts,
    env_with,
    lines,
    outputs_by_job,
    run,
    session_ids,
    sessions_dir,
    work_dir,
)

# A job that prints the arguments it received, exactly (ascii() escapes
# whatever is not printable ASCII), as one line.
ARGV = [PYTHON, "-c", "import sys; print(ascii(sys.argv[1:]))"]

# File names a user has: blanks, quotes, shell syntax, backslashes, a leading
# dash, a leading #, control and non-ASCII characters that are valid UTF-8.
NAMES = [
    "file 1.txt",
    "don't.txt",
    'say "hi".txt',
    "$HOME and `id`.txt",
    "back\\slash\\",
    "-n",
    "--help",
    "# not a comment",
    "  leading and trailing blanks  ",
    "tab\there",
    "bell\x07 and del\x7f",
    "é ü 漢 😀",
    "*?[a]",
    "a;b|c&d>e",
]


def received(stdout: str) -> dict[int, list[str]]:
    """Each job's arguments, from the ARGV job's one line of output."""
    return {job: ast.literal_eval(out[0]) for job, out in outputs_by_job(stdout).items()}


def assert_ran(result: subprocess.CompletedProcess[str], expected: list[list[str]]) -> None:
    """Exit 0, and job N (from 1) received expected[N - 1]."""
    assert_no_traceback(result)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert received(result.stdout) == dict(enumerate(expected, start=1))
    total = len(expected)
    assert counts(result) == (0, total, 0, 0, 0, total)


def stored_config(session: int) -> dict[str, str]:
    """The options the session stored, as cloudtask-logalyzer reports them."""
    result = run([str(Path(CLOUDTASK).parent / "cloudtask-logalyzer"), "--json", str(session)])
    assert result.returncode == 0, result.stderr
    config: dict[str, str] = json.loads(result.stdout)["config"]
    return config


# -- --lines -------------------------------------------------------------------


def test_lines_makes_each_line_one_argument_as_it_is() -> None:
    data = "".join(name + "\n" for name in NAMES).encode()

    result = cloudtask("--lines", "--split=3", *ARGV, input=data)

    assert_ran(result, [[name] for name in NAMES])


def test_the_default_mode_splits_the_same_input_into_words_or_refuses_it() -> None:
    # The neighbour of the test above: without --lines nothing changed.
    assert_ran(cloudtask(*ARGV, input=b"file 1.txt\n'a b' c\n"), [["file", "1.txt"], ["a b", "c"]])
    result = cloudtask(*ARGV, input=b"file 1.txt\ndon't.txt\n")
    assert_usage_error(result, "input line 2: unbalanced quote")
    assert session_ids() == [1]  # the first run's only


def test_lines_runs_empty_lines_as_an_empty_argument_and_skips_nothing() -> None:
    # As GNU parallel does: an empty line is a job, # starts no comment.
    result = cloudtask("--lines", *ARGV, input=b"a\n\n#b\n   \nlast")

    assert_ran(result, [["a"], [""], ["#b"], ["   "], ["last"]])


def test_lines_ends_a_line_at_the_newline_only() -> None:
    result = cloudtask("--lines", *ARGV, input=b"crlf\r\n\rcr\n")

    assert_ran(result, [["crlf\r"], ["\rcr"]])


def test_printf_shows_each_argument_of_ls_output(tmp_path: Path) -> None:
    # The case: `ls | cloudtask gzip` on "file 1.txt" and "don't.txt".
    folder = tmp_path / "files"
    folder.mkdir()
    for name in ("file 1.txt", "don't.txt", "-v"):
        (folder / name).write_text(name)
    listing = subprocess.run(
        ["ls"], cwd=folder, capture_output=True, check=True, env=env_with(LC_ALL="C")
    ).stdout

    result = cloudtask("--lines", "printf", "<%s>\\n", input=listing)

    assert result.returncode == 0, result.stderr
    assert outputs_by_job(result.stdout) == {
        1: ["<-v>"],
        2: ["<don't.txt>"],
        3: ["<file 1.txt>"],
    }


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (b"a\0b\n", "input line 3: NUL byte"),
        (b"\xff\xfe.txt\n", "input line 3: invalid UTF-8 at byte 1"),
        (b"ok\xc3\n", "input line 3: invalid UTF-8 at byte 3"),
    ],
)
def test_lines_refuses_bad_input_naming_its_line(tmp_path: Path, bad: bytes, error: str) -> None:
    marker = tmp_path / "ran"

    result = cloudtask("--lines", "touch", input=bytes(marker) + b"\n\n" + bad)

    assert_usage_error(result, error)
    assert not marker.exists()
    assert session_ids() == []


def test_lines_from_the_environment_and_a_template_attribute(tmp_path: Path) -> None:
    result = cloudtask(*ARGV, input=b"a b\n", env=env_with(CLOUDTASK_LINES="1"))
    assert_ran(result, [["a b"]])

    task = tmp_path / "task.py"
    task.write_text(
        "from cloudtask import Task\n\n"
        "class Job(Task):\n"
        f"    COMMAND = {ARGV!r}\n"
        "    LINES = True\n\n"
        "Job.main()\n"
    )
    result = run([PYTHON, str(task)], input=b"c 'd\n")
    assert_ran(result, [["c 'd"]])
    # The command line's -0 wins over the template's LINES.
    result = run([PYTHON, str(task), "-0"], input=b"e f\0g\n")
    assert_ran(result, [["e f"], ["g\n"]])


def test_the_input_mode_is_stored_with_the_session_and_a_retry_keeps_it() -> None:
    # Prints its arguments; fails the first time it runs for them, then succeeds.
    code = (
        "import os, sys; print(ascii(sys.argv[1:])); done = str(len(sys.argv[1]))\n"
        "if not os.path.exists(done): open(done, 'w'); sys.exit(1)"
    )
    result = cloudtask("--lines", PYTHON, "-c", code, input=b"a b\n'c\n")
    assert result.returncode == 1
    assert received(result.stdout) == {1: ["a b"], 2: ["'c"]}
    assert stored_config(1)["lines"] == "True"

    retried = cloudtask("--retry=1")

    assert_ran(retried, [["a b"], ["'c"]])
    assert stored_config(1)["lines"] == "True"


@pytest.mark.parametrize("option", ["--lines", "--null", "-0", "--replace", "--replace=@"])
def test_an_input_option_with_resume_is_refused(option: str) -> None:
    assert cloudtask("echo", input=b"1\n").returncode == 0
    name = option.split("=")[0].replace("-0", "--null")

    result = cloudtask("--resume=1", option)

    assert_usage_error(result, f"{name}: --resume runs the jobs the session made from its input")


# -- --null / -0 ---------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--null", "-0"])
def test_null_makes_each_record_one_argument(flag: str) -> None:
    records = [*NAMES, "new\nline", "", "last without its NUL"]
    data = "\0".join(records).encode()

    result = cloudtask(flag, "--split=2", *ARGV, input=data)

    assert_ran(result, [[record] for record in records])


def test_null_takes_what_find_print0_writes(tmp_path: Path) -> None:
    folder = tmp_path / "tree"
    folder.mkdir()
    names = [name for name in NAMES if "/" not in name] + ["new\nline", "\x01ctl"]
    for name in names:
        (folder / name).write_text("x")
    found = subprocess.run(
        ["find", ".", "-type", "f", "-print0"], cwd=folder, capture_output=True, check=True
    ).stdout
    check = "import os, sys; print(ascii(sys.argv[1:]), os.path.isfile(sys.argv[1]))"

    result = cloudtask("-0", PYTHON, "-c", check, input=found, cwd=folder)

    assert result.returncode == 0, result.stderr
    shown = [out[0] for out in outputs_by_job(result.stdout).values()]
    assert sorted(shown) == sorted(f"{['./' + name]!a} True" for name in names)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"ok\0\0\xff\0never\0", "input record 3: invalid UTF-8 at byte 1"),
        (b"ok\0ab\xc3", "input record 2: invalid UTF-8 at byte 3"),
        (b"ok\0" + b"x" * 200_000, "input record 2: over 131072 bytes without a NUL"),
    ],
)
def test_null_refuses_bad_input_naming_its_record(data: bytes, error: str) -> None:
    result = cloudtask("-0", "echo", input=data)

    assert_usage_error(result, error)
    assert session_ids() == []


def test_null_with_an_empty_input_has_no_jobs() -> None:
    assert_usage_error(cloudtask("-0", "echo", input=b""), "no jobs: standard input has no job")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--lines", "--null"], "--lines and --null (command line): give one of them"),
        (["-0", "--lines"], "--lines and --null (command line): give one of them"),
        (["-0=1"], "-0 takes no value"),
        (["-00"], "unknown option -00"),
        (["--lines=yes"], "--lines takes no value"),
    ],
)
def test_bad_mode_options_are_one_line_errors(args: list[str], error: str) -> None:
    err = assert_usage_error(cloudtask(*args, "echo", input=b"a\n"), error)
    assert err == f"cloudtask: {error}"


def test_a_mode_in_the_environment_gives_way_to_the_command_line() -> None:
    result = cloudtask("--null", *ARGV, input=b"a b\0", env=env_with(CLOUDTASK_LINES="1"))
    assert_ran(result, [["a b"]])
    assert stored_config(1).get("lines") is None


# -- --replace -----------------------------------------------------------------


def test_replace_puts_the_arguments_at_every_placeholder_and_appends_nothing() -> None:
    result = cloudtask("--lines", "--replace", *ARGV, "{}", "x{}y", "{}.bak", input=b"a b\nit's\n")

    assert_ran(result, [["a b", "xa by", "a b.bak"], ["it's", "xit'sy", "it's.bak"]])


def test_replace_inserts_all_of_the_job_s_words_each_quoted() -> None:
    result = cloudtask("--replace", *ARGV, "<{}>", "-", "{}", input=b"a 'b c' $d\n")

    assert_ran(result, [["<a", "b c", "$d>", "-", "a", "b c", "$d"]])


def test_replace_with_a_string_of_its_own_in_shell_code(tmp_path: Path) -> None:
    (tmp_path / "a b.txt").write_text("one\n")
    (tmp_path / "it's").write_text("two\n")

    result = cloudtask(
        "--lines", "--replace=FILE", "gzip < FILE > FILE.gz", input=b"a b.txt\nit's\n"
    )

    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.glob("*.gz")) == ["a b.txt.gz", "it's.gz"]


def test_replace_given_alone_does_not_take_the_command_as_its_value() -> None:
    result = cloudtask("--replace", "printf", "<%s>\\n", "{}", input=b"x\n")

    assert result.returncode == 0, result.stderr
    assert outputs_by_job(result.stdout) == {1: ["<x>"]}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--replace", "echo", "x"], "--replace: the command has no {} for the job's arguments"),
        (["--replace", "echo", "{ }"], "--replace: the command has no {} for"),
        (["--replace=@@", "echo {}"], "--replace: the command has no @@ for"),
        (["--replace=", "echo"], "--replace: must not be empty"),
    ],
)
def test_replace_without_its_placeholder_is_refused(args: list[str], error: str) -> None:
    assert_usage_error(cloudtask(*args, input=b"a\n"), error)
    assert session_ids() == []


def test_replace_in_a_template_with_extra_arguments(tmp_path: Path) -> None:
    task = tmp_path / "task.py"
    task.write_text(
        "from cloudtask import Task\n\n"
        "class Job(Task):\n"
        f"    COMMAND = {[*ARGV, '{}']!r}\n"
        "    REPLACE = '{}'\n\n"
        "Job.main()\n"
    )

    result = run([PYTHON, str(task), "--lines", "[{}]"], input=b"a b\n")

    assert_ran(result, [["a b", "[a b]"]])


def test_replace_refuses_a_command_too_long_for_a_worker_naming_the_line() -> None:
    long = b"x" * 2000
    result = cloudtask("--replace", "echo" + " {}" * 80, input=b"short\n" + long + b"\n")

    assert_usage_error(result, "input line 2: the job's command is")


# -- --dry-run -----------------------------------------------------------------


def test_dry_run_prints_each_command_in_input_order_and_makes_no_session() -> None:
    result = cloudtask("--dry-run", "--split=4", "echo", input=b"1\n# c\n'a b' $x\n3\n")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert lines(result.stdout) == ["echo 1", "echo 'a b' '$x'", "echo 3"]
    assert not sessions_dir().exists()


def test_dry_run_shows_the_modes_and_the_placeholder() -> None:
    result = cloudtask(
        "--dry-run", "-0", "--replace", "cp", "--", "{}", "{}.bak", input=b"a b\0-n\0it's"
    )

    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [
        "cp -- 'a b' 'a b'.bak",
        "cp -- -n -n.bak",
        "cp -- 'it'\"'\"'s' 'it'\"'\"'s'.bak",
    ]


def test_dry_run_prints_the_commands_the_run_runs() -> None:
    data = "".join(name + "\n" for name in NAMES).encode()
    dry = cloudtask("--dry-run", "--lines", "--replace", *ARGV, "-", "{}", input=data)
    ran = cloudtask("--lines", "--replace", *ARGV, "-", "{}", input=data)

    assert ran.returncode == 0, ran.stderr
    started = [line.split(" started: ", 1)[1] for line in lines(ran.stdout) if " started: " in line]
    assert len(started) == len(NAMES)
    # Both show control characters escaped (the bell and the delete of one name).
    assert lines(dry.stdout) == started


def test_dry_run_shows_a_newline_in_a_record_escaped_one_job_a_line() -> None:
    result = cloudtask("--dry-run", "-0", "echo", input=b"new\nline\0tab\tcr\r\0")

    assert lines(result.stdout) == ["echo 'new\\x0aline'", "echo 'tab\tcr\\x0d'"]


@pytest.mark.parametrize(
    ("args", "data", "error"),
    [
        ([], b"ok\n'bad\n", "input line 2: unbalanced quote"),
        (["--lines"], b"ok\nbad\0\n", "input line 2: NUL byte"),
        (["-0"], b"ok\0\xff", "input record 2: invalid UTF-8"),
        ([], b"# nothing\n\n", "no jobs: standard input has no job lines"),
        (["--replace"], b"a\n", "--replace: the command has no {}"),
    ],
)
def test_dry_run_refuses_bad_input_with_exit_2(args: list[str], data: bytes, error: str) -> None:
    result = cloudtask("--dry-run", *args, "echo", input=data)

    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.startswith(f"cloudtask: {error}")
    assert len(result.stderr.splitlines()) == 1
    assert not sessions_dir().exists()


def test_dry_run_prints_the_lines_before_a_bad_one() -> None:
    data = b"".join(b"%d\n" % n for n in range(2500)) + b"'bad\n" + b"never\n"

    result = cloudtask("--dry-run", "echo", input=data)

    assert_usage_error(result, "input line 2501: unbalanced quote")
    assert lines(result.stdout) == [f"echo {n}" for n in range(2500)]


def test_dry_run_contacts_no_worker_and_no_cloud() -> None:
    # A Hub URL where something listens: any API call would connect to it.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/api/"
        result = cloudtask(
            "--dry-run",
            "--provider=hub",
            f"--hub-url={url}",
            "--hub-apikey=key-of-no-account",
            "--workers=no-such-host.invalid",
            "--split=5",
            "echo",
            input=b"1\n2\n",
        )
        with pytest.raises(BlockingIOError):
            server.accept()

    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["echo 1", "echo 2"]
    assert result.stderr == ""
    assert not sessions_dir().exists()


def test_dry_run_from_the_environment() -> None:
    result = cloudtask("echo", input=b"1\n", env=env_with(CLOUDTASK_DRY_RUN="yes"))

    assert result.returncode == 0
    assert lines(result.stdout) == ["echo 1"]
    assert not sessions_dir().exists()


def test_dry_run_with_resume_is_refused() -> None:
    assert cloudtask("echo", input=b"1\n").returncode == 0

    result = cloudtask("--resume=1", "--dry-run")

    assert_usage_error(result, "--dry-run: --resume runs the jobs the session made")


def test_dry_run_on_a_terminal_asks_nothing() -> None:
    child = pexpect.spawn(
        "bash",
        ["-c", f"printf 'a\\nb\\n' | {CLOUDTASK} --dry-run echo"],
        env=dict(os.environ),
        encoding="utf-8",
        timeout=TIMEOUT,
        cwd=str(work_dir()),
    )
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0
    assert child.before.replace("\r", "").splitlines() == ["echo a", "echo b"]
    assert not sessions_dir().exists()


def test_dry_run_into_a_closed_pipe_ends_quietly() -> None:
    data = b"".join(b"%d\n" % n for n in range(100_000))
    result = run(["bash", "-c", f"{CLOUDTASK} --dry-run echo | head -n 2"], input=data)

    assert_no_traceback(result)
    assert result.returncode == 0
    assert lines(result.stdout) == ["echo 0", "echo 1"]
    assert result.stderr == ""


def test_dry_run_into_a_full_disk_is_an_error() -> None:
    result = run(["bash", "-c", f"{CLOUDTASK} --dry-run echo > /dev/full"], input=b"1\n")

    assert_no_traceback(result)
    assert result.returncode == 1
    assert "cannot write standard output" in result.stderr


# -- a million lines: streamed, in bounded time and memory --------------------

MILLION = 1_000_000
# CPU seconds allowed: about 5 on an idle machine; the bound leaves room for a busy one.
CPU_LIMIT = 60.0
MEMORY_LIMIT_KB = 150_000  # far below what a million jobs held at once would take


def measured(args: list[str], data: bytes, out: Path) -> tuple[int, float, int]:
    """Run cloudtask from a fresh Python, stdout to `out`: its exit status, the
    CPU seconds and the peak memory (KiB) of cloudtask alone."""
    script = (
        "import resource, subprocess, sys\n"
        "with open(sys.argv[1], 'wb') as out:\n"
        "    status = subprocess.run(sys.argv[2:], stdout=out).returncode\n"
        "used = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(status, used.ru_utime + used.ru_stime, used.ru_maxrss)\n"
    )
    result = run(
        [sys.executable, "-c", script, str(out), CLOUDTASK, *args], input=data, timeout=120
    )
    assert result.returncode == 0, result.stderr
    status, cpu, peak = result.stdout.split()
    return int(status), float(cpu), int(peak)


@pytest.mark.parametrize(
    ("mode", "line", "shown"),
    [
        # Lines without quotes: the words mode's quick path (a line with quotes
        # goes through shlex, some 10 times slower: 40 s for a million here).
        ([], b"file %d of a.txt", "gzip file %d of a.txt"),
        (["--lines"], b"file %d of don't.txt", "gzip 'file %d of don'\"'\"'t.txt'"),
    ],
    ids=["words", "lines"],
)
def test_dry_run_of_a_million_lines(
    tmp_path: Path, mode: list[str], line: bytes, shown: str
) -> None:
    out = tmp_path / "out"
    data = b"".join(line % n + b"\n" for n in range(MILLION))

    status, cpu, peak = measured(["--dry-run", *mode, "gzip"], data, out)

    assert status == 0
    with out.open("rb") as printed:
        assert printed.readline().decode() == shown % 0 + "\n"
        count = 1 + sum(1 for _ in printed)
    assert count == MILLION
    assert out.read_bytes().endswith((shown % (MILLION - 1)).encode() + b"\n")
    assert cpu < CPU_LIMIT, f"{cpu:.1f} CPU seconds"
    assert peak < MEMORY_LIMIT_KB, f"{peak} KiB at its peak"
    assert not sessions_dir().exists()


def test_dry_run_prints_while_its_input_is_still_coming() -> None:
    proc = subprocess.Popen(
        [CLOUDTASK, "--dry-run", "--lines", "echo"],
        bufsize=0,  # the first line read leaves the rest for communicate()
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work_dir(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # More than one batch of output (less than a pipe holds), then the input stays open.
        proc.stdin.write(b"".join(b"line %d\n" % n for n in range(2000)))
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready, "nothing printed while the input is open"
        assert proc.stdout.readline() == b"echo 'line 0'\n"
        assert proc.poll() is None  # still reading
        rest, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert rest.count(b"\n") == 1999
    assert rest.endswith(b"echo 'line 1999'\n")
    assert proc.returncode == 0, err
