"""What may run: `unsafe()` refuses a case that could reach beyond the machine or the
case's directory (worker addresses, cloud endpoints, libcloud drivers, shell and
Python for --pre/--post/--report, paths), from the command line, the environment
and a template alike."""

from __future__ import annotations

import ast
import os
import pwd
import re
import textwrap
from collections.abc import Callable
from urllib.parse import urlsplit

from tests.fuzz.cases import SAFE_PROGRAMS, Case
from tests.fuzz.values import (
    PORT,
    REAL_DRIVERS,
    SAFE_DRIVER_MODULES,
    SAFE_PY,
    SAFE_SHELL,
    STATIC_FILES,
    TMP,
    address_safe,
    dec,
    enc,
)

from cloudtask.cli.logalyzer import parse_args as logalyzer_parse_args
from cloudtask.cli.main import parse_argv
from cloudtask.config import BY_ATTR, OPTIONS, template_text
from cloudtask.errors import CloudtaskError


def unsafe(case: Case) -> str | None:
    """What in the case could reach beyond this machine or its directory; None: nothing."""
    env = {key: dec(value) for key, value in case.env}
    if case.program == "logalyzer":
        return _unsafe_logalyzer(case, env)
    try:
        parsed = parse_argv([dec(arg) for arg in case.argv])
    except CloudtaskError:
        return None  # refused before anything runs
    if parsed.help or parsed.version:
        return None
    template = case.template
    runs_positional = template is None or template.command is None
    if runs_positional and parsed.positional and parsed.positional[0] not in SAFE_PROGRAMS:
        return f"command {parsed.positional[0]!r}"
    values = [(name, value) for name, value in parsed.options.items() if isinstance(value, str)]
    values += [(option.name, env[option.env]) for option in OPTIONS if option.env in env]
    for attr, value in template.values() if template else ():
        option = BY_ATTR.get(attr)
        if option is None or value is None:
            continue
        try:
            values.append((option.name, template_text(option, value)))
        except ValueError:
            continue
    for name, value in values:
        check = SAFETY.get(name)
        if check is not None and not check(value, case):
            return f"--{name}={value!r}"
    return None


def _unsafe_logalyzer(case: Case, env: dict[str, str]) -> str | None:
    try:
        args = logalyzer_parse_args([dec(arg) for arg in case.argv])
    except CloudtaskError:
        return None
    for value in (args.sessions, env.get("CLOUDTASK_SESSIONS"), args.session):
        if value is not None and not value.isdigit() and not safe_path(value, READ_PATHS):
            return f"path {value!r}"
    return None


WRITE_DIRS = {"/dev/null", "/dev/null/x", "/proc/cloudtask-fuzz/x"}
WRITE_FILES = {
    "/dev/null", "/dev/full", "/dev/null/x", "/nonexistent-cloudtask-fuzz/joblog",
    "/proc/cloudtask-fuzz",
}  # fmt: skip
READ_PATHS = {"/", "/dev/null", "/nonexistent-cloudtask-fuzz", "/nonexistent-cloudtask-fuzz/x.py"}


def _home_user_exists(text: str) -> bool | None:
    """For ~user/...: whether that user exists (None: not that form)."""
    if not text.startswith("~") or text == "~" or text.startswith("~/"):
        return None
    try:
        pwd.getpwnam(text[1:].partition("/")[0])
    except (KeyError, ValueError, UnicodeError):
        return False
    return True


def _inside(text: str) -> str | None:
    """The path relative to the case directory, or None when it points elsewhere."""
    if text == "~" or text.startswith("~/"):
        text = TMP + "/home" + text[1:]
    if text.startswith(TMP):
        text = text[len(TMP) :].lstrip("/")
    elif text.startswith("/"):
        return None
    relative = os.path.normpath(text or ".")
    return None if relative == ".." or relative.startswith("../") else relative


def safe_path(text: str, allowed: set[str]) -> bool:
    if not text.strip():
        return True
    user = _home_user_exists(text)
    if user is not None:
        return not user  # an unknown user's ~ cannot be expanded: refused (or worse)
    return _inside(text) is not None or text in allowed


def _case_file(relative: str, case: Case) -> bytes | None:
    key = os.path.normpath(relative)
    return dict(case.files).get(key, STATIC_FILES.get(key))


def safe_workers(text: str, case: Case) -> bool:
    if not text.strip():
        return True
    user = _home_user_exists(text)
    if user is not None:
        return not user
    relative = _inside(text)
    if relative is not None:
        content = _case_file(relative, case)
        if content is not None:
            return all(address_safe(word) for word in file_words(content))
        if "/" in text:
            return True  # not a file: refused
    elif text.startswith("/"):
        return not os.path.isfile(text)  # no such file: refused
    else:
        return False  # a relative path out of the case directory
    return all(address_safe(word) for word in re.split(r"[\s,]+", text) if word)


def file_words(content: bytes) -> list[str]:
    return [word for line in dec(content).splitlines() for word in line.split("#", 1)[0].split()]


def safe_shell(text: str) -> bool:
    stripped = text.strip(" \t\n")
    return (
        not stripped
        or stripped in SAFE_SHELL
        or re.fullmatch(r"true '[^']*'", stripped, re.DOTALL) is not None
        or re.fullmatch(r"#[^\n]*", stripped) is not None
    )


def safe_report(text: str, case: Case) -> bool:
    kind, colon, rest = text.partition(":")
    kind = kind.strip().lower()
    if not colon or kind not in ("sh", "py"):
        return True
    if kind == "sh":
        return safe_shell(rest.strip())
    return safe_python(rest)


_PY_NODES = (
    ast.Module, ast.Expr, ast.Pass, ast.Constant, ast.Name, ast.Load, ast.Store, ast.Assign,
    ast.Attribute, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.Tuple, ast.List, ast.Raise,
    ast.Call, ast.BinOp, ast.Eq, ast.NotEq, ast.Lt, ast.Gt, ast.LtE, ast.GtE, ast.Is, ast.IsNot,
    ast.In, ast.NotIn, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Invert, ast.Add,
    ast.Sub, ast.Div, ast.FloorDiv, ast.BitAnd, ast.BitOr, ast.BitXor, ast.RShift,
)  # fmt: skip
_PY_CALLS = {"print", "ValueError", "SystemExit", "KeyboardInterrupt", "RuntimeError", "len"}


def safe_python(rest: str) -> bool:
    text = rest.strip()
    if text.endswith(".py") and "\n" not in text:
        if not safe_path(text, READ_PATHS):
            return False
        if not any(c.isspace() for c in text):
            return True  # a file name: runs only the case's own hook files
    code = textwrap.dedent(rest.strip("\n")).strip()
    if code in SAFE_PY:
        return True
    try:
        tree = ast.parse(code)
    except Exception:  # what cannot be compiled is never run
        return True
    for node in ast.walk(tree):
        if not isinstance(node, _PY_NODES):
            return False
        if isinstance(node, ast.Call) and (
            not isinstance(node.func, ast.Name) or node.func.id not in _PY_CALLS or node.keywords
        ):
            return False
    return True


_URL_NETLOC = re.compile(
    r"(?:[\w.~-]+(?::[\w.~-]*)?@)?"
    r"(?P<host>\[::1\]|127\.0\.0\.1|localhost|[A-Za-z0-9.-]+\.invalid)"
    r"(?::(?P<port>[0-9]*|<PORT>))?",
    re.ASCII | re.IGNORECASE,
)


def safe_url(text: str, case: Case | None = None) -> bool:
    stripped = text.strip()
    try:
        parts = urlsplit(stripped)
        host = parts.hostname
    except ValueError:
        return True  # refused
    if parts.scheme not in ("http", "https") or not host:
        return True  # refused
    match = _URL_NETLOC.fullmatch(parts.netloc)
    if match is None:
        return False
    if match["host"].lower().endswith(".invalid"):
        return True
    port = match["port"]
    return port == PORT or (port is not None and port.isdigit() and int(port) > 65535)


def safe_driver(text: str, case: Case | None = None) -> bool:
    name = text.strip()
    if ":" in name:
        return name.partition(":")[0] in SAFE_DRIVER_MODULES
    return name.lower() not in REAL_DRIVERS


SAFETY: dict[str, Callable[[str, Case], bool]] = {
    "pre": lambda text, case: safe_shell(text),
    "post": lambda text, case: safe_shell(text),
    "report": safe_report,
    "sessions": lambda text, case: safe_path(text, WRITE_DIRS),
    "joblog": lambda text, case: safe_path(text, WRITE_FILES),
    "overlay": lambda text, case: safe_path(text, READ_PATHS),
    "ssh-identity": lambda text, case: safe_path(text, READ_PATHS),
    "workers": safe_workers,
    "hub-url": safe_url,
    "libcloud-driver": safe_driver,
}


def cloudish(case: Case) -> bool:
    """Whether the case may choose a cloud provider (whose launches take long to fail)."""
    text = b" ".join([*case.argv, *(enc(k) + b"=" + v for k, v in case.env)]).lower()
    if case.template is not None:
        text += enc(case.template.source()).lower()
    return any(word in text for word in (b"hub", b"ec2", b"libcloud", b"resume", b"retry"))
