"""Job output as lines (SPEC sections 4, 12 and 15): what a terminal shows, in
time linear in the bytes and bounded memory, whatever the output's shape."""

from __future__ import annotations

import itertools
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtask.output import (
    LINE_LIMIT,
    TAIL_BYTES,
    TAIL_LINE_BYTES,
    TAIL_LINES,
    OutputLines,
    Tail,
)
from cloudtask.report.hooks import shell as hooks

MB = 1_000_000


def lines_of(chunks: Iterable[bytes], limit: int = LINE_LIMIT) -> list[str]:
    output = OutputLines(limit=limit)
    lines = [line for chunk in chunks for line in output.feed(chunk)]
    return lines + output.flush()


def shown(line: str) -> str:
    """What a terminal shows of one line redrawn with carriage returns (the oracle)."""
    line = line.rstrip("\r")
    return line[line.rfind("\r") + 1 :]


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- what a terminal shows ---------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (b"one\ntwo\n", ["one", "two"]),
        (b"no newline", ["no newline"]),
        (b"\n\n", ["", ""]),
        (b"abc\r\n", ["abc"]),
        (b"a\rb\r\n", ["b"]),
        (b"a\r\rb", ["b"]),
        (b"10%\r20%\r100%\ndone\n", ["100%", "done"]),
        (b"abc\r", ["abc"]),
        (b"\rabc\n", ["abc"]),
        (b"a\r\r\n", ["a"]),
        (b"\r\n", [""]),
        (b"progress 1\rprogress 2\rresult\r\nnext", ["result", "next"]),
        (b"tab\there", ["tab\there"]),
    ],
)
def test_redraws_show_what_a_terminal_shows(output: bytes, expected: list[str]) -> None:
    assert lines_of([output]) == expected
    assert lines_of(one_byte_at_a_time(output)) == expected


def test_nothing_written_is_no_line() -> None:
    assert lines_of([]) == []
    assert lines_of([b""]) == []


def test_a_carriage_return_and_newline_split_across_chunks_is_one_line_end() -> None:
    assert lines_of([b"abc\r", b"\ndef\n"]) == ["abc", "def"]
    assert lines_of([b"a\rb\r", b"\n"]) == ["b"]
    assert lines_of([b"old\r", b"new\n"]) == ["new"]
    assert lines_of([b"old\r", b"", b"\r", b"new"]) == ["new"]


def test_lines_come_as_they_are_completed() -> None:
    output = OutputLines()
    assert output.feed(b"first\nsec") == ["first"]
    assert output.feed(b"ond") == []
    assert output.feed(b"\n") == ["second"]
    assert output.flush() == []


# -- UTF-8 and binary bytes ----------------------------------------------------


TEXT = "é€😀 ascii ü"


@pytest.mark.parametrize("cut", range(1, len(TEXT.encode())))
def test_a_character_split_across_chunks_stays_whole(cut: int) -> None:
    data = TEXT.encode() + b"\n"
    assert lines_of([data[:cut], data[cut:]]) == [TEXT]


def test_a_character_split_across_pieces_of_a_long_line_stays_whole() -> None:
    text = "€" * 50 + "😀" * 30  # 3- and 4-byte characters cut at every 7 bytes
    for limit in (7, 8, 10, 64):
        pieces = lines_of([text.encode()], limit=limit)
        assert "".join(pieces) == text
        assert "\ufffd" not in "".join(pieces)
        assert lines_of(one_byte_at_a_time(text.encode()), limit=limit) == pieces


def test_binary_bytes_are_replaced_not_lost_and_never_raise() -> None:
    data = bytes(range(256)) * 4
    lines = lines_of([data])
    expected = [shown(line) for line in data.decode("utf-8", "replace").split("\n")]
    assert lines == expected
    assert "\x00" in lines[0]
    assert "\ufffd" in lines[-1]


def test_invalid_utf8_before_a_line_end_does_not_swallow_it() -> None:
    assert lines_of([b"ok\xe2\x82\nnext\xff\n"]) == ["ok\ufffd", "next\ufffd"]
    assert lines_of([b"half \xf0\x9f", b"\r\n"]) == ["half \ufffd"]


# -- long lines ----------------------------------------------------------------


def test_a_long_line_comes_out_in_pieces_of_the_limit() -> None:
    assert lines_of([b"x" * 100 + b"\n"], limit=30) == ["x" * 30] * 3 + ["x" * 10]
    assert lines_of([b"x" * 100], limit=30) == ["x" * 30] * 3 + ["x" * 10]


def test_a_line_of_exactly_the_limit_is_one_line_and_no_empty_one() -> None:
    assert lines_of([b"x" * 30 + b"\nnext\n"], limit=30) == ["x" * 30, "next"]
    assert lines_of([b"x" * 60 + b"\n"], limit=30) == ["x" * 30, "x" * 30]
    assert lines_of([b"x" * 60], limit=30) == ["x" * 30, "x" * 30]


def test_pieces_come_out_while_the_line_is_still_being_written() -> None:
    output = OutputLines(limit=10)
    assert output.feed(b"a" * 25) == ["a" * 10, "a" * 10]
    assert output.feed(b"a" * 5) == []
    assert output.feed(b"a") == ["a" * 10]
    assert output.flush() == ["a"]


def test_a_redraw_after_pieces_shows_the_new_text_only() -> None:
    assert lines_of([b"x" * 25 + b"\rnew\n"], limit=10) == ["x" * 10, "x" * 10, "new"]
    assert lines_of([b"x" * 25 + b"\r\n"], limit=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_text_between_redraws_comes_out_only_if_it_had_pieces() -> None:
    data = b"start\r" + b"y" * 25 + b"\rshort\rend\r\n"
    assert lines_of([data], limit=10) == ["y" * 10, "y" * 10, "end"]
    assert lines_of(one_byte_at_a_time(data), limit=10) == ["y" * 10, "y" * 10, "end"]


# -- any chunking gives the same lines -----------------------------------------

ALPHABET = st.sampled_from([b"a", b"b", b"\n", b"\r", b"\xe2\x82\xac", b"\xff", b"\x00"])


@st.composite
def output_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = b"".join(draw(st.lists(ALPHABET, max_size=80)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    return data, cuts


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(output_and_cuts(), st.sampled_from([4, 5, 9, 1000]))
def test_any_chunking_gives_the_same_lines(case: tuple[bytes, list[int]], limit: int) -> None:
    data, cuts = case
    whole = lines_of([data], limit=limit)
    assert lines_of(chunked(data, cuts), limit=limit) == whole
    assert lines_of(one_byte_at_a_time(data), limit=limit) == whole


@settings(max_examples=300, deadline=None)
@given(output_and_cuts())
def test_lines_under_the_limit_are_what_a_terminal_shows(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    expected = [shown(line) for line in data.decode("utf-8", "replace").split("\n")]
    if expected[-1] == "":  # the output ended with a newline (or was empty)
        expected.pop()
    assert lines_of(chunked(data, cuts)) == expected


# -- the tail ------------------------------------------------------------------


def tail_of(data: bytes, chunk: int = LINE_LIMIT) -> str:
    output = OutputLines()
    for start in range(0, len(data), chunk):
        output.feed(data[start : start + chunk])
    output.flush()
    return output.tail_text()


def test_the_tail_is_the_last_lines() -> None:
    data = b"".join(b"line %d\n" % n for n in range(100))
    assert tail_of(data).split("\n") == [f"line {n}" for n in range(100 - TAIL_LINES, 100)]
    assert tail_of(b"one\ntwo") == "one\ntwo"
    assert tail_of(b"") == ""
    assert tail_of(b"\n\n") == "\n"


def test_the_tail_is_bounded_in_bytes_and_keeps_the_newest_lines() -> None:
    data = b"".join(b"%d " % n + b"y" * 500 + b"\n" for n in range(100))
    tail = tail_of(data)
    assert len(tail.encode()) <= TAIL_BYTES
    assert tail.split("\n")[-1].startswith("99 ")
    assert len(tail.split("\n")) == TAIL_BYTES // 505


def cut_line(line: str) -> tuple[str, int, str]:
    """A tail line cut in the middle: its start, the bytes cut, its end."""
    head, mark, rest = line.partition(" [...")
    count, mark_end, end = rest.partition(" bytes cut...] ")
    assert mark and mark_end, f"no mark in {line!r}"
    return head, int(count.replace(",", "")), end


def test_a_line_too_long_for_the_tail_is_cut_in_the_middle_with_a_mark() -> None:
    line = "START" + "m" * 5000 + "END"
    tail = tail_of(f"before\n{line}\nafter\n".encode())
    before, cut, after = tail.split("\n")
    assert (before, after) == ("before", "after")
    assert len(cut.encode()) <= TAIL_LINE_BYTES
    head, count, end = cut_line(cut)
    assert head.startswith("START") and end.endswith("END")
    assert len(head) + count + len(end) == len(line)
    assert f" [...{count:,} bytes cut...] " in cut  # a count easy to read: 4,0xx
    assert len(head) + len(end) > TAIL_LINE_BYTES * 0.9  # the room is used


def test_the_pieces_of_a_huge_line_are_one_line_of_the_tail() -> None:
    size = 10 * LINE_LIMIT + 123
    tail = tail_of(b"first\n" + b"h" + b"x" * (size - 2) + b"t" + b"\nlast\n")
    first, huge, last = tail.split("\n")
    assert (first, last) == ("first", "last")
    assert huge.startswith("hxxx") and huge.endswith("xxxt")
    head, count, end = cut_line(huge)
    assert len(head) + count + len(end) == size
    assert len(huge.encode()) <= TAIL_LINE_BYTES


def test_the_tail_of_a_redrawn_huge_line_is_what_came_out() -> None:
    tail = tail_of(b"x" * (3 * LINE_LIMIT) + b"\rdone\n")
    assert tail.split("\n")[-1] == "done"
    assert tail.split("\n")[0].startswith("xxx")


def test_a_tail_cut_inside_characters_keeps_them_whole() -> None:
    for prefix in range(4):
        line = "a" * prefix + "€😀é" * 2000
        tail = tail_of(line.encode() + b"\n")
        assert "\ufffd" not in tail
        head, count, end = cut_line(tail)
        assert line.startswith(head) and line.endswith(end)
        assert len(head.encode()) + count + len(end.encode()) == len(line.encode())


def test_every_shape_of_output_leaves_a_bounded_tail() -> None:
    shapes = [
        b"x" * (5 * MB),
        bytes(range(256)) * 20_000,
        b"".join(b"%d%%\r" % (n % 100) for n in range(200_000)),
        b"".join(b"line %d\n" % n for n in range(200_000)),
        "€".encode() * MB,
    ]
    for data in shapes:
        tail = tail_of(data)
        assert 0 < len(tail.encode()) <= TAIL_BYTES
        assert len(tail.split("\n")) <= TAIL_LINES


def test_a_tail_can_keep_nothing() -> None:
    tail = Tail(0)
    tail.add("text")
    tail.add("more", continued=True)
    assert tail.text() == ""


# -- linear time, bounded memory ---------------------------------------------


def peak_memory(feed: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        feed()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


BOUND = 1 * 2**20  # the line being built, its pieces and the tail: well under 1 MiB


@pytest.mark.parametrize(
    ("unit", "size"),
    [
        (b"x" * LINE_LIMIT, 100 * MB),  # one huge line
        (b"\x00\xff\xfe" * (LINE_LIMIT // 3), 100 * MB),  # binary with no newline at all
        (b"".join(b"%5d%%\r" % n for n in range(LINE_LIMIT // 7)), 100 * MB),  # redraws
        (bytes(range(256)) * (LINE_LIMIT // 256), 20 * MB),  # binary, a newline every 256 bytes
    ],
    ids=["one-line", "binary-no-newline", "redraws", "binary"],
)
def test_mbs_of_output_in_64_kib_chunks_cost_bounded_memory(unit: bytes, size: int) -> None:
    output = OutputLines()
    total = 0

    def feed() -> None:
        nonlocal total
        while total < size:
            output.feed(unit)
            total += len(unit)
            # Checked as it goes: unbounded growth fails here, not after minutes.
            assert tracemalloc.get_traced_memory()[1] < BOUND, f"after {total:,} bytes"
        output.flush()

    assert peak_memory(feed) < BOUND
    assert len(output.tail_text().encode()) <= TAIL_BYTES


def test_a_long_line_written_a_byte_at_a_time_costs_bounded_memory() -> None:
    output = OutputLines()
    byte = b"x"

    def feed() -> None:
        for done in range(1, 3 * LINE_LIMIT):
            output.feed(byte)
            if done % 4096 == 0:
                assert tracemalloc.get_traced_memory()[1] < BOUND // 2, f"after {done:,} bytes"

    assert peak_memory(feed) < BOUND // 2


def cpu_seconds(feeds: list[bytes]) -> float:
    """The least CPU time of three runs of OutputLines over feeds."""
    best = float("inf")
    for _ in range(3):
        output = OutputLines()
        started = time.process_time()
        for data in feeds:
            output.feed(data)
        output.flush()
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize("byte", [b"x", b"\r", b"\xff"], ids=["one-line", "redraws", "binary"])
def test_four_times_the_bytes_a_byte_at_a_time_cost_about_four_times_the_time(
    byte: bytes,
) -> None:
    # Linear: the ratio is about 4. Quadratic (the line copied again on each
    # write): about 16. The bound is generous against a busy machine.
    small = cpu_seconds([byte] * 40_000)
    large = cpu_seconds([byte] * 160_000)
    assert large < 8 * small + 0.05, (small, large)


def test_a_chunk_with_many_lines_costs_about_as_much_as_the_same_lines_one_by_one() -> None:
    lines = [b"line %d\n" % n for n in range(50_000)]
    one_by_one = cpu_seconds(lines)
    in_chunks = cpu_seconds([b"".join(lines[n : n + 5000]) for n in range(0, len(lines), 5000)])
    assert in_chunks < 3 * one_by_one + 0.05, (one_by_one, in_chunks)


# -- report hooks split their output with the same lines -------------------------


def test_a_hook_command_s_output_comes_in_the_same_lines() -> None:
    script = (
        "printf 'one\\n'; printf '10%%\\r50%%\\rdone\\r\\n';"
        f" head -c {2 * LINE_LIMIT + 10} /dev/zero | tr '\\0' x; printf 'end'"
    )
    process = subprocess.Popen(
        ["/bin/sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    said: list[str] = []
    assert hooks._relay(process, said.append, time.monotonic() + 30)
    assert said == ["one", "done", "x" * LINE_LIMIT, "x" * LINE_LIMIT, "x" * 10 + "end"]
