"""Areas `options-cli`, `options-env`, `options-template`: values for every option
in config.OPTIONS on the command line, as CLOUDTASK_* variables, and as attributes
of a task template (a Python file run with the venv's python)."""

from __future__ import annotations

from hypothesis import strategies as st
from tests.fuzz.cases import Case, Template
from tests.fuzz.values import any_bytes, cli_values, template_values

from cloudtask.config import OPTIONS

ODD_ARGS = [
    b"-x", b"--spilt=2", b"--split", b"---split=1", b"--=x", b"--SPLIT=1", b"-h", b"--help",
    b"--version", b"--force=1", b"--force=", b"--", b"--workers", b"--no-such-option",
]  # fmt: skip
COMMANDS = [[b"true"], [b"true"], [b"true"], [b"true", b"x y"], [], [b"--", b"true"], [b"-"]]
JOB_STDIN = [b"1\n2\n", b"1\n", b"", b"# only a comment\n", b"1\n2\n"]


@st.composite
def cli_tokens(draw: st.DrawFn, max_size: int = 4) -> list[bytes]:
    tokens: list[bytes] = []
    for option in draw(st.lists(st.sampled_from(OPTIONS), max_size=max_size)):
        flag = b"--" + option.name.encode()
        if option.flag:
            tokens.append(draw(st.sampled_from([flag, flag, flag + b"=", flag + b"=1"])))
            continue
        value = draw(cli_values(option))
        if draw(st.booleans()):
            tokens.append(flag + b"=" + value)
        else:
            tokens += [flag, value]
    return tokens


@st.composite
def cli_cases(draw: st.DrawFn) -> Case:
    tokens = draw(cli_tokens())
    if draw(st.integers(0, 3)) == 0:
        tokens.insert(draw(st.integers(0, len(tokens))), draw(st.sampled_from(ODD_ARGS)))
    command = draw(st.sampled_from(COMMANDS))
    if command[:1] == [b"true"] and draw(st.integers(0, 4)) == 0:
        command = [*command, draw(any_bytes)]  # an odd word for `true` (quoted: it only is one)
    case = Case(
        "options-cli", "cloudtask", (*tokens, *command), stdin=draw(st.sampled_from(JOB_STDIN))
    )
    return case


UNKNOWN_ENV = [
    ("CLOUDTASK_SPILT", b"2"),
    ("CLOUDTASK_", b"x"),
    ("CLOUDTASK_SMTP_PASSWORD", b"secret"),
    ("CLOUDTASK_split", b"x"),
]


@st.composite
def env_cases(draw: st.DrawFn) -> Case:
    env: dict[str, bytes] = {}
    for option in draw(st.lists(st.sampled_from(OPTIONS), min_size=1, max_size=4)):
        env[option.env] = draw(cli_values(option))
    if draw(st.integers(0, 4)) == 0:
        key, value = draw(st.sampled_from(UNKNOWN_ENV))
        env[key] = value
    argv = draw(
        st.sampled_from([[b"true"], [b"true"], [b"--force", b"true"], [b"--split=2", b"true"]])
    )
    return Case(
        "options-env",
        "cloudtask",
        tuple(argv),
        tuple(env.items()),
        draw(st.sampled_from(JOB_STDIN)),
    )


TEMPLATE_COMMANDS = [
    '"true"', '"true"', '["true"]', '("true", "x y")', '""', '" "', "[]", '["true", 1]', "42",
    'b"true"', "\"true 'a b'\"", None, None,
]  # fmt: skip
TEMPLATE_NAMES = ["task.py", "task.py", "my task.py", "tâche.py", "t-1.py", "task"]
UNKNOWN_ATTRS = ["SPILT", "WORKER", "FOO", "_X", "COMMANDS", "DESCRIPTON", "lowercase", "Mixed"]


@st.composite
def template_settings(draw: st.DrawFn, max_size: int) -> tuple[tuple[str, object], ...]:
    values: dict[str, object] = {}
    for option in draw(st.lists(st.sampled_from(OPTIONS), max_size=max_size)):
        values[option.attr] = draw(template_values(option))
    if draw(st.integers(0, 5)) == 0:
        values[draw(st.sampled_from(UNKNOWN_ATTRS))] = draw(st.sampled_from([1, "x", None]))
    return tuple(values.items())


@st.composite
def template_cases(draw: st.DrawFn) -> Case:
    template = Template(
        name=draw(st.sampled_from(TEMPLATE_NAMES)),
        attrs=draw(template_settings(4)),
        base_attrs=draw(template_settings(2)) if draw(st.integers(0, 3)) == 0 else (),
        command=draw(st.sampled_from(TEMPLATE_COMMANDS)),
        description=draw(
            st.one_of(st.none(), st.text(max_size=20).map(repr), st.sampled_from(["42", "None"]))
        ),
    )
    extra = draw(
        st.sampled_from(
            [[], [], [b"x"], [b"true"], [b"--split=2"], [b"--help"], [b"--", b"x"], [b"--force"]]
        )
    )
    if template.command is None and (not extra or extra[-1] != b"true"):
        extra = [*extra, b"true"]
    tokens = draw(cli_tokens(max_size=1)) if draw(st.integers(0, 3)) == 0 else []
    return Case(
        "options-template",
        "template",
        (*tokens, *extra),
        stdin=draw(st.sampled_from(JOB_STDIN)),
        template=template,
    )
