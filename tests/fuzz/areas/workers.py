"""Area `workers`: --workers lists and files (odd users, ports, IPv6, brackets)."""

from __future__ import annotations

from hypothesis import strategies as st
from tests.fuzz.cases import Case
from tests.fuzz.values import enc, pool, workers_file, workers_values


@st.composite
def workers_cases(draw: st.DrawFn) -> Case:
    files: tuple[tuple[str, bytes], ...] = ()
    if draw(st.booleans()):
        files = (("w.txt", draw(workers_file())),)
        value = draw(pool(["w.txt", "<TMP>/w.txt", "./w.txt", "~/../w.txt"]))
    else:
        value = draw(workers_values)
    form = draw(st.sampled_from(["eq", "sep", "env"]))
    argv: list[bytes] = []
    env: tuple[tuple[str, bytes], ...] = ()
    if form == "eq":
        argv.append(b"--workers=" + value)
    elif form == "sep":
        argv += [b"--workers", value]
    else:
        env = (("CLOUDTASK_WORKERS", value),)
    extras = [
        [b"--split=1"], [b"--split=2"], [b"--split=5"], [enc("--user=ü")], [b"--ssh-identity=key"],
        [b"--keepalive=0.1"], [b"--overlay=overlay"], [b"--pre=true"], [b"--provider=hub"],
        [b"--timeout=0.5"], [b"--strikes=1"], [b"--slots=2"], [b"--slots=auto"],
    ]  # fmt: skip
    for extra in draw(st.lists(st.sampled_from(extras), max_size=2)):
        argv += extra
    argv.append(b"true")
    stdin = draw(st.sampled_from([b"1\n2\n", b"1\n", b""]))
    return Case("workers", "cloudtask", tuple(argv), env, stdin, files)
