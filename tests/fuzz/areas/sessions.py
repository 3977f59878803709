"""Area `sessions`: --resume/--retry ids (odd strings, huge, negative) against real
sessions, some in odd states (a broken store, odd values, a held lock)."""

from __future__ import annotations

from hypothesis import strategies as st
from tests.fuzz.cases import Case, mutations, session_ids
from tests.fuzz.values import any_bytes, pool

RESUME_IDS = [
    "1", "2", "3", "4", "5", "6", "0", "-1", "01", " 2 ", "\u0662", "+1", "1_0", "1e0", "",
    "9" * 30, "9" * 300, "9" * 4300, "9" * 5000, "abc", "2 3", "3.0", "-0",
]  # fmt: skip
RESUME_EXTRAS = [
    [b"--split=2"], [b"--split=0"], [b"--timeout=0.5"], [b"--provider=local"], [b"--provider=hub"],
    [b"--hub-apikey=fuzz"], [b"--workers=nohost.invalid"], [b"--workers=127.0.0.1:<PORT>"],
    [b"--force"], [b"--joblog=joblog"], [b"--joblog=/dev/null/x"], [b"--joblog=/dev/full"],
    [b"--sessions=<TMP>/sessions"], [b"--sessions=<TMP>/nowhere"], [b"--report=sh: true"],
    [b"--report=py: 1/0"], [b"--halt=fail=1"], [b"--retries=2"], [b"--overlay=overlay"],
    [b"--pre=exit 3"], [b"--post=false"], [b"--user=x"], [b"--sessions=file.txt"],
    [b"--slots=2"], [b"--slots=auto"], [b"--lease=1s"],
]  # fmt: skip


@st.composite
def session_cases(draw: st.DrawFn) -> Case:
    session_id = draw(
        st.one_of(pool("12345"), pool("12345"), pool("12345"), pool(RESUME_IDS), any_bytes)
    )
    form = draw(st.sampled_from(["resume=", "retry=", "resume", "retry", "env", "both"]))
    argv: list[bytes] = []
    env: list[tuple[str, bytes]] = []
    if form == "resume=":
        argv.append(b"--resume=" + session_id)
    elif form == "retry=":
        argv.append(b"--retry=" + session_id)
    elif form in ("resume", "retry"):
        argv += [b"--" + form.encode(), session_id]
    elif form == "env":
        env.append((draw(st.sampled_from(["CLOUDTASK_RESUME", "CLOUDTASK_RETRY"])), session_id))
    else:
        argv += [b"--resume=" + session_id, b"--retry=" + session_id]
    for extra in draw(st.lists(st.sampled_from(RESUME_EXTRAS), max_size=2)):
        argv += extra
    argv += draw(st.sampled_from([[], [], [], [b"true"]]))
    return Case(
        "sessions",
        "cloudtask",
        tuple(argv),
        tuple(env),
        stdin=draw(st.sampled_from([b"", b"1\n"])),
        fixtures=True,
        mutations=tuple(draw(st.lists(mutations, max_size=2))),
        locked=tuple(draw(st.lists(session_ids, max_size=1))),
    )
