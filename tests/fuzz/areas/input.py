"""Area `input`: job input bytes (NUL, invalid UTF-8, unbalanced quotes, CR/LF mixes,
comments, blank lines, very long lines, many lines)."""

from __future__ import annotations

from hypothesis import strategies as st
from tests.fuzz.cases import Case
from tests.fuzz.values import enc, text_bytes

GOOD_LINES = [
    b"a", b"'a b' c", b'"x y"', b"a\\ b", b"#c", b"  # c", b"", b" ", b"\t", b"\r", b"a\r",
    b"\x0c", enc("\u00e9 \u00fc"), enc("\u2028"), b"$(echo x)", b"`x`", b"*", b"~", b"--", b"-n",
    b"'#'", b"# '", b"# \\", b"\\#x", b"''", b'""', b"a\r\rb", b"a\\\\", b"'\\'",
    b"a'b'c", b'a"b c"d', b"\xef\xbb\xbf1", b"# \xef\xbb\xbf", b"\t# c", b"a  \t b",
]  # fmt: skip
BAD_LINES = [
    b"'", b'"', b"a'", b"\\", b"a \\", b"\0", b"a\0b", b"# \0", b"\xff", b"\xc3(", b"# \xff",
    b"\xed\xa0\x80", b"a # b'", b"\\\r", b"'\\''", b"\xc0\x80", b"\xf4\x90\x80\x80", b'"\\"',
]  # fmt: skip
long_lines = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from([b"x", b"a ", b"\\ ", b"'a b' ", enc("\u00e9"), b"'", b"\xff", b"# "]),
    st.integers(1000, 150_000),
)
good_lines = st.one_of(
    st.sampled_from(GOOD_LINES),
    st.text(st.characters(exclude_characters="'\"\\\n\0"), max_size=40).map(enc),
)
input_lines = st.one_of(
    good_lines,
    good_lines,
    good_lines,
    good_lines,
    good_lines,
    st.sampled_from(BAD_LINES),
    st.binary(max_size=40),
    text_bytes(40),
    long_lines,
)
line_ends = st.sampled_from([b"\n", b"\n", b"\r\n", b"\r", b"\n\n", b"\r\r\n"])


@st.composite
def job_input(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # many short lines
        count = draw(st.integers(1, 120))
        return b"".join(b"%d\n" % number for number in range(count))
    parts = draw(st.lists(st.tuples(input_lines, line_ends), max_size=8))
    data = b"".join(line + end for line, end in parts)
    if parts and draw(st.booleans()):
        data = data.removesuffix(parts[-1][1])  # no line end after the last line
    return data


@st.composite
def input_cases(draw: st.DrawFn) -> Case:
    options = draw(
        st.sampled_from(
            [
                [],
                [],
                [b"--split=2"],
                [b"--split=3", b"--retries=1"],
                [b"--slots=3"],
                [b"--slots=auto"],
            ]
        )
    )
    return Case("input", "cloudtask", (*options, b"true"), stdin=draw(job_input()))
