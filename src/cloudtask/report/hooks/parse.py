"""The --report option's text as a hook: parse_hook and the three kinds of hook.

A leaf: nothing of cloudtask is imported here, so the options table can check
--report with parse_hook while the hooks that run import what they need.

    mail: FROM TO [TO...]   MailHook (the addresses checked, commas allowed)
    sh: COMMAND             ShHook
    py: CODE | py: FILE     PyHook (code compiled now: a syntax error is found
                            before the session runs; a FILE must exist)
"""

from __future__ import annotations

import contextlib
import textwrap
from dataclasses import dataclass
from pathlib import Path

KINDS = ("mail", "sh", "py")
CODE_NAME = "<--report py>"  # the file name tracebacks and syntax errors give for py: CODE


@dataclass(frozen=True)
class MailHook:
    sender: str
    recipients: tuple[str, ...]

    def __str__(self) -> str:
        return f"mail: {self.sender} {' '.join(self.recipients)}"


@dataclass(frozen=True)
class ShHook:
    command: str

    def __str__(self) -> str:
        return f"sh: {self.command}"


@dataclass(frozen=True)
class PyHook:
    text: str  # the code, or the file's name as given
    file: Path | None = None  # absolute, when the text names a .py file

    def __str__(self) -> str:
        return f"py: {self.text}"


Hook = MailHook | ShHook | PyHook


def parse_hook(text: str) -> Hook:
    """The hook a --report text describes; ValueError says what is wrong with it."""
    kind, colon, rest = text.partition(":")
    kind = kind.strip().lower()
    if not colon or not kind:
        raise ValueError("expected KIND: ARGUMENTS, where KIND is mail, sh or py")
    if kind not in KINDS:
        raise ValueError(f"unknown hook {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "mail":
        return _parse_mail(rest)
    if not rest.strip():
        raise ValueError(f"{kind}: nothing to run")
    if kind == "sh":
        return ShHook(rest.strip())
    return _parse_py(rest)


def _parse_mail(rest: str) -> MailHook:
    addresses = rest.replace(",", " ").split()
    if len(addresses) < 2:
        raise ValueError("mail: expected FROM TO [TO...]")
    for address in addresses:
        _check_address(address)
    return MailHook(addresses[0], tuple(addresses[1:]))


def _check_address(address: str) -> None:
    local, _, domain = address.partition("@")
    if (
        address.count("@") != 1
        or not local
        or not domain
        or any(c in '<>()[]\\;:"' or not c.isprintable() for c in address)
    ):
        raise ValueError(f"mail: {address!r} is not an e-mail address (name@domain)")


def _parse_py(rest: str) -> PyHook:
    text = rest.strip()
    if text.endswith(".py") and "\n" not in text:
        path = Path(text).expanduser()
        with contextlib.suppress(OSError, ValueError):
            if path.is_file():
                return PyHook(text, path.resolve())
        # One word ending in .py is a file name, not Python worth running.
        if not any(c.isspace() for c in text):
            raise ValueError(f"py: no such file: {text}")
    code = textwrap.dedent(rest.strip("\n")).strip()
    try:
        compile(code, CODE_NAME, "exec")
    except SyntaxError as exc:
        # Found now, before the session runs, rather than when it is over.
        raise ValueError(f"py: {syntax_problem(exc, None)}") from None
    return PyHook(code)


def syntax_problem(exc: SyntaxError, file: Path | None) -> str:
    where = f"{file} line {exc.lineno}" if file else f"line {exc.lineno}"
    return f"syntax error at {where}: {exc.msg}"
