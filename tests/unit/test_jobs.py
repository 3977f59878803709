"""Job input (SPEC sections 2 and 13): words, lines or NUL records; reading jobs; commands."""

from __future__ import annotations

import io
import itertools
import shlex
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtask.cli.exits import Program, exit_status
from cloudtask.errors import ExitStatus, InputError, UsageError
from cloudtask.jobs import (
    CHUNK,
    MAX_ARGUMENT,
    Command,
    Job,
    null_records,
    quote_words,
    read_jobs,
    split_words,
)

# Characters that stress quoting: shell syntax, blanks that do and do not split
# words, and some unicode.
_NASTY = " \t\r\n\x0b\x0c\xa0\u2003\u2028'\"\\#$`!*?;&|<>(){}[]~=%é漢😀"

# Any text without NUL (NUL cannot be in an input line at all).
_ANY_CHAR = st.characters(codec="utf-8", exclude_characters="\0")
_WORD = st.text(alphabet=st.one_of(_ANY_CHAR, st.sampled_from(_NASTY)), max_size=12)

# Blanks that str.split() would split on but a POSIX shell does not.
_OTHER_BLANKS = "\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2003\u2028\u2029\u3000"

# Text with no quoting characters: the lexer's fast path must agree with shlex.
_PLAIN_CHAR = st.characters(codec="utf-8", exclude_characters="\0'\"\\")
_PLAIN_LINE = st.text(
    alphabet=st.one_of(
        _PLAIN_CHAR,
        st.sampled_from(_OTHER_BLANKS + " \t\r\n#$"),
    ),
    max_size=40,
)


# -- split_words / quote_words -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORD, max_size=8))
def test_quote_then_split_gives_the_same_words(words: list[str]) -> None:
    assert split_words(quote_words(words)) == words


@settings(max_examples=300, deadline=None)
@given(_PLAIN_LINE)
def test_fast_path_agrees_with_shlex(line: str) -> None:
    assert split_words(line) == shlex.split(line, posix=True)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("", []),
        ("   \t\r\n", []),
        ("a b", ["a", "b"]),
        ("  a \t b\r\n", ["a", "b"]),
        # Only ' \t\r\n' separate words; other unicode/ASCII blanks are data.
        ("a\x0bb", ["a\x0bb"]),
        ("a\x0cb", ["a\x0cb"]),
        ("a\xa0b c", ["a\xa0b", "c"]),
        ("a\u2003b\u3000c", ["a\u2003b\u3000c"]),
        ("\xa0", ["\xa0"]),
        ("a#b # c", ["a#b", "#", "c"]),
        ("$HOME `x` *", ["$HOME", "`x`", "*"]),
        ("'a b' c", ["a b", "c"]),
        ('"a b" c', ["a b", "c"]),
        ("it\\'s", ["it's"]),
        ("''", [""]),
        ("'' x \"\"", ["", "x", ""]),
        ('"a \\"q\\" b"', ['a "q" b']),
    ],
)
def test_split_words_examples(line: str, words: list[str]) -> None:
    assert split_words(line) == words


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("'abc", "unbalanced quote"),
        ('"abc', "unbalanced quote"),
        ("a 'b\" c", "unbalanced quote"),
        ("abc\\", "backslash at end of line"),
    ],
)
def test_split_words_refuses_bad_quoting(line: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        split_words(line)
    assert str(info.value) == reason


def test_quote_words_examples() -> None:
    assert quote_words([]) == ""
    assert quote_words(["a", "b"]) == "a b"
    assert quote_words(["a b", "c"]) == "'a b' c"
    assert quote_words([""]) == "''"


# -- read_jobs -----------------------------------------------------------------


def test_read_jobs_skips_blank_and_comment_lines() -> None:
    lines = [
        b"a b\n",  # 1
        b"\n",  # 2
        b"   \t \n",  # 3
        b"# a comment\n",  # 4
        b"   # indented comment\n",  # 5
        b"\t#tab comment\n",  # 6
        b"echo # not a comment\n",  # 7
        b"a#b\n",  # 8
        b"'#' x\n",  # 9
        b"\r\n",  # 10
        b"last",  # 11: no final newline
    ]
    assert list(read_jobs(lines)) == [
        Job(1, 1, ("a", "b")),
        Job(2, 7, ("echo", "#", "not", "a", "comment")),
        Job(3, 8, ("a#b",)),
        Job(4, 9, ("#", "x")),
        Job(5, 11, ("last",)),
    ]


def test_read_jobs_from_a_binary_file() -> None:
    data = "1\n2\n\n'a b' c\r\nx\\ y \"$z\"\né ü\n".encode()
    assert list(read_jobs(io.BytesIO(data))) == [
        Job(1, 1, ("1",)),
        Job(2, 2, ("2",)),
        Job(3, 4, ("a b", "c")),
        Job(4, 5, ("x y", "$z")),
        Job(5, 6, ("é", "ü")),
    ]


def test_duplicate_lines_are_separate_jobs() -> None:
    lines = [b"same\n", b"same\n", b"# c\n", b"same\n", b"other\n", b"same\n"]
    jobs = list(read_jobs(lines))
    assert [job.id for job in jobs] == [1, 2, 3, 4, 5]
    assert [job.line for job in jobs] == [1, 2, 4, 5, 6]
    assert [job.args for job in jobs] == [("same",)] * 3 + [("other",), ("same",)]


def test_read_jobs_of_empty_input_is_empty() -> None:
    assert list(read_jobs([])) == []
    assert list(read_jobs([b"\n", b"# only a comment\n", b"  \n"])) == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param(b"echo 'abc\n", "unbalanced quote", id="single-quote"),
        pytest.param(b'echo "abc\n', "unbalanced quote", id="double-quote"),
        pytest.param(b"echo 'a\" b\n", "unbalanced quote", id="mixed-quotes"),
        pytest.param(b"echo abc\\", "backslash at end of line", id="backslash-eof"),
        # A line read from a file ends in its newline: the backslash is still
        # the last thing on the line.
        pytest.param(b"echo abc\\\n", "backslash at end of line", id="backslash-newline"),
        pytest.param(b"echo abc\\\r\n", "backslash at end of line", id="backslash-crlf"),
        pytest.param(b"echo a\0b\n", "NUL byte", id="nul"),
        pytest.param(b"echo a\0'b\n", "NUL byte", id="nul-and-quote"),
        pytest.param(b"echo \xff\n", "invalid UTF-8", id="bad-utf8"),
        pytest.param(b"echo \xc3\n", "invalid UTF-8", id="truncated-utf8"),
        pytest.param(b"\xed\xa0\x80\n", "invalid UTF-8", id="utf8-surrogate"),
    ],
)
def test_bad_input_names_the_line_and_reason(bad: bytes, reason: str) -> None:
    lines = [b"good 1\n", b"# comment\n", bad, b"good 4\n"]
    jobs = read_jobs(lines)
    assert next(jobs) == Job(1, 1, ("good", "1"))
    with pytest.raises(InputError) as info:
        next(jobs)
    error = info.value
    assert error.line == 3
    assert str(error).startswith("input line 3: ")
    assert reason in str(error)
    assert error.reason.startswith(reason)
    assert exit_status(Program.CLOUDTASK, error) == ExitStatus.USAGE


def test_invalid_utf8_names_the_byte() -> None:
    with pytest.raises(InputError) as info:
        list(read_jobs([b"ab\xffc\n"]))
    assert str(info.value) == "input line 1: invalid UTF-8 at byte 3"


def _counting(lines: Iterator[bytes], pulled: list[int]) -> Iterator[bytes]:
    """Count the lines pulled; fail fast (not hang) if an endless input is slurped."""
    for line in lines:
        pulled[0] += 1
        if pulled[0] > 100_000:
            raise AssertionError("read_jobs reads ahead instead of streaming")
        yield line


def test_read_jobs_streams_an_endless_input() -> None:
    pulled = [0]
    endless = (f"job {n}\n".encode() for n in itertools.count(1))
    jobs = read_jobs(_counting(endless, pulled))
    first = list(itertools.islice(jobs, 3))
    assert first == [Job(n, n, ("job", str(n))) for n in (1, 2, 3)]
    assert pulled[0] == 3
    # Further along, still lazily.
    assert next(itertools.islice(jobs, 996, None)) == Job(1000, 1000, ("job", "1000"))
    assert pulled[0] == 1000


def test_bad_line_is_refused_only_when_reached() -> None:
    pulled = [0]
    tail = (b"never read\n" for _ in itertools.count())
    lines = itertools.chain([b"one\n", b"two\n", b"'three\n"], tail)
    jobs = read_jobs(_counting(lines, pulled))
    assert next(jobs) == Job(1, 1, ("one",))
    assert next(jobs) == Job(2, 2, ("two",))
    assert pulled[0] == 2
    with pytest.raises(InputError) as info:
        next(jobs)
    assert info.value.line == 3
    assert pulled[0] == 3


# -- Command -------------------------------------------------------------------


def test_one_argument_is_a_shell_string() -> None:
    command = Command.from_argv(["foo | bar"])
    assert command.shell == "foo | bar"
    assert command.for_job([]) == "foo | bar"
    assert command.for_job(["x y"]) == "foo | bar 'x y'"


def test_several_arguments_are_quoted_one_by_one() -> None:
    command = Command.from_argv(["sh", "-c", "echo $0"])
    assert command.shell == "sh -c 'echo $0'"
    assert command.for_job(["a b"]) == "sh -c 'echo $0' 'a b'"


def test_for_job_requotes_the_job_words() -> None:
    command = Command.from_argv(["echo"])
    args = read_jobs([b"'a b' c\n"])
    assert command.for_job(next(args).args) == "echo 'a b' c"
    assert command.for_job(["it's"]) == "echo 'it'\"'\"'s'"


def test_with_extra() -> None:
    command = Command.from_argv(["grep", "-r"])
    assert command.with_extra([]) == command
    extended = command.with_extra(["--include", "*.py"])
    assert extended.shell == "grep -r --include '*.py'"
    assert extended.for_job(["a b"]) == "grep -r --include '*.py' 'a b'"
    # Extra arguments of a shell-string command are appended quoted.
    assert Command.from_argv(["ls | wc"]).with_extra(["-l x"]).shell == "ls | wc '-l x'"


def _sh(script: str) -> bytes:
    result = subprocess.run(
        ["/bin/sh", "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return result.stdout


def test_shell_runs_job_arguments_exactly() -> None:
    command = Command.from_argv(["printf", "%s\\n"])
    words = ["a b", "it's", '"q"', "$HOME", "`id`", "x;y", "\\", "#", "", "é"]
    assert _sh(command.for_job(words)).decode().split("\n") == [*words, ""]


def test_shell_string_keeps_its_syntax() -> None:
    command = Command.from_argv(['echo start; printf "%s\\n"'])
    job = next(read_jobs([b"'a b' c\n"]))
    assert _sh(command.for_job(job.args)) == b"start\na b\nc\n"


def test_sh_dash_c_gets_the_job_as_its_argument() -> None:
    command = Command.from_argv(["sh", "-c", 'echo "$0"'])
    assert _sh(command.for_job(["a  b $x"])) == b"a  b $x\n"


_SHELL_WORD = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_characters="\0\n"),
        st.sampled_from(_NASTY.replace("\n", "")),
    ),
    max_size=10,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_SHELL_WORD, min_size=1, max_size=6), st.lists(_SHELL_WORD, max_size=3))
def test_generated_commands_survive_the_shell(words: list[str], extra: list[str]) -> None:
    command = Command.from_argv(["printf", "%s\\n"]).with_extra(extra)
    out = _sh(command.for_job(words)).decode()
    assert out.split("\n") == [*extra, *words, ""]


# -- --lines: each line, as it is, one argument (issue 13) ---------------------


def test_lines_mode_takes_each_line_as_it_is() -> None:
    lines = [
        b"file 1.txt\n",
        b"don't.txt\n",
        b"\n",  # an empty line is a job with one empty argument, as in GNU parallel
        b"  # not a comment \n",
        b'$HOME \\ `x` "q"\n',
        b"-n\n",
        b"crlf\r\n",  # only the newline ends a line: the CR is the argument's
        b"\x01\x7f\xc3\xa9\n",
        b"last",  # no final newline
    ]
    assert list(read_jobs(lines, "lines")) == [
        Job(1, 1, ("file 1.txt",)),
        Job(2, 2, ("don't.txt",)),
        Job(3, 3, ("",)),
        Job(4, 4, ("  # not a comment ",)),
        Job(5, 5, ('$HOME \\ `x` "q"',)),
        Job(6, 6, ("-n",)),
        Job(7, 7, ("crlf\r",)),
        Job(8, 8, ("\x01\x7fé",)),
        Job(9, 9, ("last",)),
    ]


def test_lines_mode_from_a_binary_file() -> None:
    data = b"a b\n'c\n\n"
    assert list(read_jobs(io.BytesIO(data), "lines")) == [
        Job(1, 1, ("a b",)),
        Job(2, 2, ("'c",)),
        Job(3, 3, ("",)),
    ]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(b"a\0b\n", "NUL byte"), (b"\xff.txt\n", "invalid UTF-8 at byte 1")],
)
def test_lines_mode_refuses_what_the_default_refuses_naming_the_line(
    bad: bytes, reason: str
) -> None:
    jobs = read_jobs([b"ok\n", b"\n", bad, b"never\n"], "lines")
    assert [next(jobs), next(jobs)] == [Job(1, 1, ("ok",)), Job(2, 2, ("",))]
    with pytest.raises(InputError) as info:
        next(jobs)
    assert str(info.value) == f"input line 3: {reason}"


def test_lines_mode_streams() -> None:
    pulled = [0]
    endless = (f"job {n}\n".encode() for n in itertools.count(1))
    jobs = read_jobs(_counting(endless, pulled), "lines")
    assert next(itertools.islice(jobs, 999, None)) == Job(1000, 1000, ("job 1000",))
    assert pulled[0] == 1000


# -- --null: records ended by NUL, each one argument ---------------------------


@pytest.mark.parametrize(
    ("chunks", "records"),
    [
        ([b""], []),
        ([b"a\0b\0"], [b"a", b"b"]),
        ([b"a\0b"], [b"a", b"b"]),  # a last record without its NUL counts
        ([b"\0"], [b""]),
        ([b"a\0\0b\0"], [b"a", b"", b"b"]),
        ([b"a", b"b\0c", b"", b"d", b"\0"], [b"ab", b"cd"]),  # records across chunks
        ([b"a\nb\0"], [b"a\nb"]),
        ([b"x" * 10, b"\0"], [b"x" * 10]),
    ],
)
def test_null_records(chunks: list[bytes], records: list[bytes]) -> None:
    assert list(null_records(chunks)) == records


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=20), max_size=10), st.integers(1, 7))
def test_null_records_from_a_file_whatever_the_chunks(records: list[bytes], size: int) -> None:
    data = b"".join(record.replace(b"\0", b"") + b"\0" for record in records)
    expected = [record.replace(b"\0", b"") for record in records]
    assert list(null_records(io.BytesIO(data))) == expected
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    assert list(null_records(chunks)) == expected


def test_null_mode_jobs_and_their_record_numbers() -> None:
    data = b"file 1.txt\0don't\n.txt\0\0-n\0# x\0last"
    assert list(read_jobs(io.BytesIO(data), "null")) == [
        Job(1, 1, ("file 1.txt",)),
        Job(2, 2, ("don't\n.txt",)),
        Job(3, 3, ("",)),
        Job(4, 4, ("-n",)),
        Job(5, 5, ("# x",)),
        Job(6, 6, ("last",)),
    ]


def test_null_mode_names_the_record_of_bad_utf8() -> None:
    with pytest.raises(InputError) as info:
        list(read_jobs([b"ok\0\0ab\xff\0"], "null"))
    assert str(info.value) == "input record 3: invalid UTF-8 at byte 3"


def test_an_input_without_nul_is_not_read_whole() -> None:
    pulled = [0]

    def endless() -> Iterator[bytes]:
        yield b"a\0b\0"
        while True:
            pulled[0] += 1
            yield b"x" * CHUNK

    with pytest.raises(InputError) as info:
        list(read_jobs(endless(), "null"))
    assert str(info.value).startswith(f"input record 3: over {MAX_ARGUMENT} bytes without a NUL")
    assert pulled[0] <= MAX_ARGUMENT // CHUNK + 1


def test_null_mode_streams() -> None:
    data = itertools.chain.from_iterable([f"r {n}".encode(), b"\0"] for n in itertools.count(1))
    pulled = [0]
    jobs = read_jobs(_counting(data, pulled), "null")
    assert next(itertools.islice(jobs, 99, None)) == Job(100, 100, ("r 100",))
    assert pulled[0] <= 201


# -- --replace: the arguments in place of a placeholder ------------------------


def test_replace_in_words_quotes_the_text_around_the_placeholder() -> None:
    command = Command.from_argv(["cp", "{}", "{}.bak", "it's {}"]).replacing("{}")
    assert command.shell == "cp '{}' '{}.bak' 'it'\"'\"'s {}'"
    assert command.for_job(["a b"]) == "cp 'a b' 'a b'.bak 'it'\"'\"'s ''a b'"
    assert command.for_job(["a", "b c"]) == "cp a 'b c' a 'b c'.bak 'it'\"'\"'s 'a 'b c'"


def test_replace_in_a_shell_string() -> None:
    command = Command.from_argv(["gzip < @ > @.gz"]).replacing("@")
    assert command.for_job(["x y"]) == "gzip < 'x y' > 'x y'.gz"


def test_replace_appends_nothing_and_a_template_s_extra_words_are_replaced_too() -> None:
    command = Command.from_shell("echo start;").with_extra(["echo", "<{}>"]).replacing("{}")
    assert command.for_job(["a"]) == "echo start; echo '<'a'>'"
    assert Command.from_argv(["echo", "{}"]).with_extra(["{}"]).replacing("{}").for_job(["x"]) == (
        "echo x x"
    )


def test_replace_without_the_placeholder_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        Command.from_argv(["echo", "{ }"]).replacing("{}")
    assert str(info.value) == (
        "--replace: the command has no {} for the job's arguments to go in: echo '{ }'"
    )


def test_without_replace_braces_are_words_like_any_other() -> None:
    command = Command.from_argv(["echo", "{}"])
    assert command.for_job(["a"]) == "echo '{}' a"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(_SHELL_WORD, min_size=1, max_size=4),
    st.lists(_SHELL_WORD, min_size=1, max_size=3),
    st.sampled_from(["{}", "@", "X"]),
)
def test_generated_replacements_survive_the_shell(
    words: list[str], args: list[str], placeholder: str
) -> None:
    words = [word.replace(placeholder, "_") for word in words]  # "_" makes no new one
    template = ["printf", "%s\\n", *words, f"<{placeholder}>", placeholder]
    command = Command.from_argv(template).replacing(placeholder)
    out = _sh(command.for_job(args)).decode()
    # <{}> holds every argument: the first glued to "<", the last to ">".
    around = list(args)
    around[0] = "<" + around[0]
    around[-1] += ">"
    assert out.split("\n") == [*words, *around, *args, ""]
