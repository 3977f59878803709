"""A shell reproducer for a case: its directory, files, fixtures and command."""

from __future__ import annotations

import itertools
import re
import shlex

from tests.fuzz.cases import FILE_MUTATIONS, Case
from tests.fuzz.values import PORT, PROGRAMS, PYTHON, ROOT, STATIC_FILES, TMP, enc


def sh_word(raw: bytes | str) -> str:
    """A shell word for raw bytes; $T stands for the case directory, $P for the closed port."""
    data = raw if isinstance(raw, bytes) else enc(raw)
    if TMP.encode() in data or PORT.encode() in data:
        parts = re.split(rb"(<TMP>|<PORT>)", data)
        return "".join(
            {b"<TMP>": '"$T"', b"<PORT>": '"$P"'}.get(part) or (sh_word(part) if part else "")
            for part in parts
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        return shlex.quote(text)
    out = []
    for byte in data:
        char = chr(byte)
        if char in "\\'":
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "$'" + "".join(out) + "'"


def bytes_expr(data: bytes) -> str:
    """A short Python expression for bytes (runs of one byte as b'x' * N)."""
    parts: list[str] = []
    literal = b""
    for byte, group in itertools.groupby(data):
        run = len(list(group))
        if run >= 20:
            if literal:
                parts.append(repr(literal))
                literal = b""
            parts.append(f"{bytes([byte])!r} * {run}")
        else:
            literal += bytes([byte]) * run
    if literal or not parts:
        parts.append(repr(literal))
    return " + ".join(parts)


def setup_code(case: Case) -> list[str]:
    """Python that makes the case's files and changes its fixture sessions."""
    mentioned = b" ".join([*case.argv, *(value for _, value in case.env)])
    if case.template:
        mentioned += enc(case.template.source())
    files = [
        (name, content)
        for name, content in STATIC_FILES.items()
        if enc(name.split("/")[0]) in mentioned
        or (name == "home/.ssh/config" and (b"alias" in mentioned or b"odd.invalid" in mentioned))
    ]
    files += list(case.files)
    if case.template is not None:
        files.append((case.template.name, enc(case.template.source())))
    code = []
    for name, content in files:
        code.append(f"put({name!r}, {bytes_expr(content)})")
    for mutation in case.mutations:
        session = f"T / 'sessions' / '{mutation.session}'"
        if mutation.name in FILE_MUTATIONS:
            code.append(f"s = {session}")
            code += FILE_MUTATIONS[mutation.name].split("\n")
            continue
        code.append(f"db = sqlite3.connect({session} / 'store.sqlite')")
        for sql, parameters in mutation.statements():
            code.append(f"db.execute({sql!r}, {parameters!r})")
        code.append("db.commit()")
    if not code:
        return []
    return [
        "import os, shutil, sqlite3",
        "from pathlib import Path",
        "T = Path(os.environ['T'])",
        "def put(name, data):",
        "    (T / name).parent.mkdir(parents=True, exist_ok=True)",
        "    data = data.replace(b'<TMP>', bytes(T)).replace(b'<PORT>', os.environb[b'P'])",
        "    (T / name).write_bytes(data)",
        *code,
    ]


def reproducer(case: Case) -> str:
    """Shell lines that run the case again, from the repository root."""
    lines = [
        f"cd {shlex.quote(str(ROOT))} && export T=$(mktemp -d) P=9  # P: a closed port",
        'mkdir -p "$T/home/.ssh" "$T/overlay/etc" "$T/dir.py"',
    ]
    if case.fixtures:
        lines.append('.venv/bin/python -m tests.fuzz --make-fixtures "$T"')
    code = setup_code(case)
    if code:
        lines += [".venv/bin/python - <<'EOF'", *code, "EOF"]
    for number in case.locked:
        lines.append(f'flock "$T/sessions/{number}/lock" sleep 60 &  # a controller holds it')
    if case.program == "template":
        assert case.template is not None
        program = f'{PYTHON} "$T"/{sh_word(case.template.name)}'
    else:
        program = str(PROGRAMS[case.program])
    stdin = ""
    if case.stdin:
        if len(case.stdin) < 200 and re.fullmatch(rb"[ -~\n]*", case.stdin):
            stdin = f"printf %s {sh_word(case.stdin)} | "
        else:
            code = f"import sys; sys.stdout.buffer.write({bytes_expr(case.stdin)})"
            stdin = f"{PYTHON} -c {shlex.quote(code)} | "
    words = [
        'HOME="$T/home"',
        'CLOUDTASK_SESSIONS="$T/sessions"',
        'CLOUDTASK_HUB_URL="http://127.0.0.1:$P/api/"',
        *(f"{key}={sh_word(value)}" for key, value in case.env),
        program,
        *(sh_word(arg) for arg in case.argv),
    ]
    lines.append(f'(cd "$T" && {stdin}env {" ".join(words)})')
    return "\n".join(lines)
