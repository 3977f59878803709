"""Area `logalyzer`: cloudtask-logalyzer's arguments against the same sessions."""

from __future__ import annotations

from hypothesis import strategies as st
from tests.fuzz.cases import Case, mutations, session_ids
from tests.fuzz.values import any_bytes, pool

LOGALYZER_FLAGS = [
    "--json", "--json", "--html", "--html", "--list", "--all", "--limit", "--limit=0",
    "--limit=-1", "--limit=x", "--limit=99999999999999999999", "--limit=" + "9" * 5000,
    "--limit=1", "--sessions", "--sessions=<TMP>/sessions", "--sessions=nonexistent",
    "--sessions=<TMP>/file.txt", "--sessions=", "--sessions=~nosuchuser-fuzz", "-h", "--help",
    "--version", "--", "-", "-x", "--jsn", "--json=1", "--sessions=sessions/1",
]  # fmt: skip
LOGALYZER_SESSIONS = [
    "1", "2", "3", "4", "5", "6", "0", "-1", "01", "\u0663", "<TMP>/sessions/1", "sessions/2",
    "sessions/5", "<TMP>/sessions", "<TMP>", "/", "/nonexistent-cloudtask-fuzz", "file.txt", "~",
    "~/x", "9" * 30, "sessions/3/", "./sessions/4", "sessions//1", "9" * 300, "9" * 5000,
    "a" * 300,
]  # fmt: skip


@st.composite
def logalyzer_cases(draw: st.DrawFn) -> Case:
    argv = draw(st.lists(pool(LOGALYZER_FLAGS), max_size=2))
    session = st.one_of(pool("12345"), pool(LOGALYZER_SESSIONS), any_bytes)
    for word in draw(st.lists(session, min_size=1, max_size=1) | st.lists(session, max_size=2)):
        argv.insert(draw(st.integers(0, len(argv))), word)
    env: tuple[tuple[str, bytes], ...] = ()
    if draw(st.integers(0, 5)) == 0:
        value = draw(pool(["<TMP>/file.txt", "<TMP>/nowhere", "", "~", "~nosuchuser-fuzz", "\xff"]))
        env = (("CLOUDTASK_SESSIONS", value),)
    return Case(
        "logalyzer",
        "logalyzer",
        tuple(argv),
        env,
        fixtures=True,
        mutations=tuple(draw(st.lists(mutations, max_size=2))),
        locked=tuple(draw(st.lists(session_ids, max_size=1))),
    )
