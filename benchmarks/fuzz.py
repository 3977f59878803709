#!/usr/bin/env python3
"""Fuzz cloudtask's inputs with hypothesis: every case runs the real command.

    .venv/bin/python benchmarks/fuzz.py [--cases 3000] [--seconds 540] [--jobs N] [--area NAME]

Areas (each a hypothesis strategy of whole cases):

- input: job input bytes (NUL, invalid UTF-8, unbalanced quotes, CR/LF mixes,
  comments, blank lines, very long lines, many lines), checked against the
  README's rules: the exit status, the line an error names, and every stored
  job command (each word quoted again, appended to the command).
- options-cli, options-env, options-template: values for every option in
  config.OPTIONS on the command line, as CLOUDTASK_* variables, and as
  attributes of a task template (a Python file run with the venv's python).
- workers: --workers lists and files (odd users, ports, IPv6, brackets).
- sessions: --resume/--retry ids (odd strings, huge, negative) against real
  sessions, some in odd states (a broken store, odd values, a held lock).
- logalyzer: cloudtask-logalyzer's arguments against the same sessions.

Every case must end with exit status 0, 1 or 2 (0 or 2 for the logalyzer),
no Python traceback, and on exit 2 a first line of stderr that starts with
the program's name and a colon (only "usage:" lines may follow). No session
directory may be left without a complete store, and nothing a session had
recorded may be lost.

Nothing leaves the machine: each case runs in a network namespace of its own
with only a loopback (when the kernel lets us make one), and whatever the
namespace, a case is only run when `unsafe()` finds nothing in it that could
reach out: worker addresses are `.invalid` names or loopback addresses on a
closed port, cloud endpoints are a closed loopback port, libcloud drivers are
"dummy", shell and Python given to --pre/--post/--report are from a harmless
set, and paths stay in the case's temporary directory.

Prints a table of area, cases, failing cases, distinct failures, timeouts
(cases stopped with SIGTERM) and seconds per case, then each distinct failure
with a shell reproducer (its smallest case), then observations (suspect, not
counted as failures); exits 1 when there is a failure. Default: 3000 cases,
no new case after --seconds (540), 2 at a time on 2 cores.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import ctypes
import fcntl
import ipaddress
import itertools
import json
import math
import multiprocessing.util
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from libcloud.compute.providers import DRIVERS as LIBCLOUD_DRIVERS

from cloudtask.addresses import Address, parse_address
from cloudtask.cli import parse_argv
from cloudtask.config import BY_ATTR, OPTIONS, Option, template_text
from cloudtask.errors import CloudtaskError
from cloudtask.logalyzer import parse_args as logalyzer_parse_args

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
if not (BIN / "cloudtask").exists():
    BIN = ROOT / ".venv" / "bin"
PYTHON = sys.executable
PROGRAMS = {"cloudtask": BIN / "cloudtask", "logalyzer": BIN / "cloudtask-logalyzer"}

# Placeholders, replaced when a case runs: its directory and a closed port.
TMP = "<TMP>"
PORT = "<PORT>"
MARK = "CLOUDTASK_FUZZ_MARK"  # in every case's environment: its leftovers are killed by it
MAX_ARG_STRLEN = 131072  # Linux: the longest single argument (sh -c COMMAND)
GRACE = 10.0  # seconds a case has to end after SIGTERM

# -- strategies: pieces ----------------------------------------------------------------------


def enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def dec(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def no_nul(raw: bytes) -> bytes:
    return raw.replace(b"\0", b"")


ODD = [
    "",
    " ",
    "\t",
    "\n",
    " x ",
    "-",
    "--",
    "=",
    "~",
    "~/",
    "~nosuchuser-fuzz/x",
    "$HOME",
    "'",
    '"',
    "\\",
    "\u2028",
    "\x1b[31m",
    "é",
    "\u0661",
    "\uff11",
    "None",
    "true",
    "0",
    "-1",
    "x" * 5000,
]
ODD_BYTES = [enc(text) for text in ODD] + [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"a\xffb",
    b"\x80\x80\x80",
]


def text_bytes(max_size: int = 30) -> st.SearchStrategy[bytes]:
    return st.text(max_size=max_size).map(lambda text: no_nul(enc(text)))


any_bytes = st.one_of(st.sampled_from(ODD_BYTES), text_bytes(), st.binary(max_size=24).map(no_nul))


def pool(values: Iterable[str]) -> st.SearchStrategy[bytes]:
    return st.sampled_from([enc(value) for value in values])


NUMBERS = [
    "0", "1", "2", "3", "-1", "+3", " 4 ", "1_0", "1e3", "1.5", "0.0", "-0.0", "inf", "-inf",
    "nan", "1e308", "1e309", "1e-320", "0x10", "\u0663", "\uff11", "9" * 30, "9" * 5000, "$5",
    "$-1", "5$", "1,5", "0.000001",
]  # fmt: skip
numbers = st.one_of(
    pool(NUMBERS),
    st.integers(-(10**30), 10**30).map(lambda n: str(n).encode()),
    st.floats().map(lambda f: repr(f).encode()),
    any_bytes,
)

# Shell commands that are harmless to run here (--pre, --post, --report=sh:).
SAFE_SHELL = [
    "true", "false", ":", "exit 3", "exit 255", "echo fuzz", "echo fuzz >&2", "sleep 0.2",
    "kill -TERM $$", "kill -INT $PPID", "kill -TERM $PPID", "'", "(", "`", "true; false",
    "exec 1>&-", "yes | head -c 200000", "printf '\\377\\n'", "echo $CLOUDTASK_HUB_APIKEY",
    "env | grep -c CLOUDTASK", "exit 0 # x",
]  # fmt: skip
# Python that is harmless to run in the controller (--report=py:).
SAFE_PY = [
    "pass", "1/0", "raise SystemExit(3)", "raise KeyboardInterrupt", "raise MemoryError",
    "raise RecursionError", "print('hook')", "print(session)", "print(list(jobs()))",
    "print(jobs)", "print(config)", "import sys; sys.exit(4)", "import sys; sys.stdout.close()",
    "x = '\\udcff'", "print('\\udcff')", "import sys; sys.stderr.write('a\\nb\\n')",
    "raise ValueError('line1\\nline2')", "(", "'''", "  pass", "\tpass", "import os",
]  # fmt: skip
BLANKS = ["", " ", "\t", "\n", " \n "]

shell_values = st.one_of(
    pool(SAFE_SHELL),
    text_bytes().map(lambda raw: b"true '" + raw.replace(b"'", b"") + b"'"),
    st.binary(max_size=12).map(lambda raw: b"true '" + no_nul(raw).replace(b"'", b"") + b"'"),
    text_bytes().map(lambda raw: b"#" + raw.replace(b"\n", b"")),
    pool(BLANKS),
)
py_values = st.one_of(
    pool(SAFE_PY),
    text_bytes().map(lambda raw: enc("x = " + repr(dec(raw)))),
    text_bytes().map(lambda raw: b"#" + raw.replace(b"\n", b"").replace(b"\r", b"")),
    text_bytes(),  # arbitrary text: unsafe() lets only harmless or broken Python through
)
REPORTS = [
    "mail: a@b.invalid c@d.invalid", "mail: a@b", "mail:", "mail: <a@b> c@d", "mail: a@b, c@d",
    "MAIL: x@y.invalid z@w.invalid", "mail: a@b c", "sh:", "sh: ", "py:", "py: hook.py",
    "py: badhook.py", "py: nohook.py", "py: dir.py", "py: ~/nohook.py", "py: hook.py\n",
    "py: ~nosuchuser-fuzz/x.py", "py: /nonexistent-cloudtask-fuzz/x.py", "py: a b.py",
    "SH: true", " sh : true", "sh true", ":", "", " ", "x: y", "ftp: x",
]  # fmt: skip
reports = st.one_of(
    pool(REPORTS),
    st.tuples(st.sampled_from([b"sh:", b"sh: ", b"SH:", b" sh :"]), shell_values).map(b"".join),
    st.tuples(st.sampled_from([b"py:", b"py: ", b"Py:\n"]), py_values).map(b"".join),
    any_bytes,  # mostly no hook at all; unsafe() refuses the rest
)
HALTS = [
    "fail=1", "fail=0", "fail=3", "fail=100%", "fail=101%", "fail=1%", "fail=0%", "fail=",
    "fail=x", "fail=-1", "FAIL=1", " fail=2 ", "fail=\u0663", "fail=" + "9" * 5000, "fail=1%%",
    "succeed=1", "fail=50%", "fail=1,fail=2",
]  # fmt: skip
PROVIDERS = ["local", "local", " local ", "LOCAL", "hub", "ec2", "libcloud", "ssh", "", " ", "x"]
USERS = ["root", "nobody", "a b", "-oProxyCommand=x", "ü", "x" * 300, "$USER", "root@x", ""]
HUB_URLS = [
    "http://127.0.0.1:<PORT>/api/", "https://127.0.0.1:<PORT>/", "http://localhost:<PORT>",
    "http://[::1]:<PORT>/api", "ftp://127.0.0.1:<PORT>/", "http://user:pw@127.0.0.1:<PORT>/",
    "http://127.0.0.1:<PORT>/?q=1", "http://127.0.0.1:<PORT>/#f", "http://nohost.invalid/",
    "https://nohost.invalid/api/", "http://127.0.0.1:99999/", "http://127.0.0.1:x/",
    "http://[::1/", "127.0.0.1:<PORT>", "http:///api", "HTTP://127.0.0.1:<PORT>/",
    " http://127.0.0.1:<PORT>/ ", "http://127.0.0.1:<PORT>/\n", "https://", "",
]  # fmt: skip
DRIVER_VALUES = [
    "dummy", " dummy ", "DUMMY", "Dummy", "", " ", "nosuchdriver", "dumm", "opsource", "ninefold",
    "rackspace_uk", "libcloud.compute.drivers.dummy:DummyNodeDriver",
    "libcloud.compute.drivers.dummy:Nope", "os:path", "json:JSONDecoder",
    "nonexistent_fuzz_module:X", ":", "dummy:", ":Dummy", "cloudtask:Task",
]  # fmt: skip
SAFE_DRIVER_MODULES = {
    "", "os", "json", "cloudtask", "dummy", "nonexistent_fuzz_module",
    "libcloud.compute.drivers.dummy",
}  # fmt: skip
REAL_DRIVERS = {str(name).lower() for name in LIBCLOUD_DRIVERS} - {"dummy"}
LIBCLOUD_OPTIONS = [
    "region=x", "a=b,c=d", "=", "x", "timeout=abc", "timeout=5", "a=1,a=2",
    "host=nohost.invalid", ",", "secure=false", "port=<PORT>", "creds=x",
]  # fmt: skip
SESSIONS_VALUES = [
    "sessions", "<TMP>/sessions", "<TMP>/other", "other/deeper", "~/s", "~", "file.txt",
    "file.txt/sub", "/dev/null", "/dev/null/x", "/proc/cloudtask-fuzz/x", "", " ",
    "~nosuchuser-fuzz/x", ".", "dir.py", "é", "a\nb", "\xff", "a" * 300, "x/" + "b" * 300,
]  # fmt: skip
JOBLOG_VALUES = [
    "joblog", "<TMP>/joblog", "~/joblog", "/dev/null", "/dev/full", "/dev/null/x",
    "/nonexistent-cloudtask-fuzz/joblog", "overlay", ".", "", " ", "file.txt",
    "~nosuchuser-fuzz/x", "sessions", "joblog\n", "a" * 300, "\x1b[31m",
]  # fmt: skip
OVERLAY_VALUES = [
    "overlay", "<TMP>/overlay", "~", "/", "/nonexistent-cloudtask-fuzz", "file.txt", "", " ",
    "nonexistent", "~nosuchuser-fuzz/x", "/dev/null", "overlay/", "a" * 300, "a/\nb",
]  # fmt: skip
IDENTITY_VALUES = [
    "key", "<TMP>/key", "~/.ssh/config", "/dev/null", "/nonexistent-cloudtask-fuzz", "overlay",
    "", "~nosuchuser-fuzz/x", "file.txt", "empty", "a" * 300, "a\nb",
]  # fmt: skip
FLAG_VALUES = ["1", "0", "true", "false", "yes", "no", "on", "off", "", " TRUE ", "maybe", "2"]

# Worker addresses: users, hosts and ports to combine; unsafe ones are made safe.
ADDRESS_USERS = [
    "", "", "root@", "a.b@", "a-b@", "x$@", "$@", "-a@", "@", "a@b@", "ü@", "_@", ".@", "a b@",
    "A" * 300 + "@",
]  # fmt: skip
ADDRESS_HOSTS = [
    "nohost.invalid", "a_b.invalid", "-x.invalid", "x-.invalid", "x..invalid", "127.0.0.1",
    "127.1.2.3", "localhost", "LOCALHOST", "[::1]", "::1", "[::1", "::1]", "[fe80::1%lo]",
    "[::ffff:127.0.0.1]", "[1.2.3.4]", "[nohost.invalid]", "1::2::3", "", ".", "alias-invalid",
    "alias-loop", "alias-jump", "x" * 64 + ".invalid", "ünï.invalid", "a/b", "*.invalid", "[]",
    "[::1]x", "10.0.0.1", "198.19.0.2", "0", "2130706433", "example.com", "::", "[::]",
    "h.odd.invalid", "127.0.0.01",
]  # fmt: skip
ADDRESS_PORTS = [
    "", "", ":", ":0", ":22", ":<PORT>", ":<PORT>", ":65535", ":65536", ":-1", ":\uff11",
    ":99999999999999999999", ":0x10", ": 22", ":<PORT>:1", "::<PORT>",
]  # fmt: skip
SSH_ALIASES = {"alias-invalid", "alias-loop", "alias-jump"}
SSH_CONFIG = """\
Host alias-invalid
    HostName nohost.invalid
Host alias-loop
    HostName 127.0.0.1
    Port <PORT>
Host alias-jump
    HostName target.invalid
    ProxyJump jump.invalid
Host *.odd.invalid
    User odd
"""

# Files every case directory has, by path relative to it.
STATIC_FILES: dict[str, bytes] = {
    "home/.ssh/config": SSH_CONFIG.encode(),
    "file.txt": b"a file, not a directory\n",
    "key": b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n",
    "empty": b"",
    "hook.py": b"print('hook.py ran')\n",
    "badhook.py": b"(\n",
    "overlay/etc/fuzz": b"overlay file\n",
    "workers-ok.txt": b"# workers\nnohost.invalid\n127.0.0.1:<PORT>  # closed\n\n",
    "workers-empty.txt": b"# no worker here\n\n",
    "workers-binary.txt": b"\xff\xfe bad\n",
    "workers-crlf.txt": b"nohost.invalid\r\n127.0.0.1:<PORT>\r\n",
}
STATIC_DIRS = ("home/.ssh", "dir.py", "overlay/etc")
WORKERS_FILES = [
    "workers-ok.txt", "<TMP>/workers-ok.txt", "workers-empty.txt", "workers-binary.txt",
    "workers-crlf.txt", "/dev/null", "/nonexistent-cloudtask-fuzz/w", "nofile/", "overlay/",
    "~/nofile", "w.txt", "./w.txt", "x" * 300 + ".invalid",
]  # fmt: skip


def safe_token(token: str) -> str:
    """A worker address that cannot reach beyond this machine, as like `token` as can be."""
    if address_safe(token):
        return token
    address = parse_address(token.replace(PORT, "65432"))
    if ":" in address.host or _loopback(address.host):
        host = "::1" if ":" in address.host else address.host
        return str(Address(host, address.user, 65432)).replace(":65432", ":" + PORT)
    if address.host in SSH_ALIASES:
        return str(Address(address.host, address.user, None))
    return str(Address(address.host + ".invalid", address.user, address.port))


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_words(text: str) -> str:
    """`text` with every word (between blanks, commas and #) made a safe address."""
    return re.sub(r"[^\s,#]+", lambda match: safe_token(match.group()), text.replace("\0", ""))


def address_safe(token: str) -> bool:
    """Whether cloudtask could only fail to reach this --workers word (or refuse it)."""
    try:
        address = parse_address(token.replace(PORT, "65432"))
    except ValueError:
        return True  # refused before anything runs
    host = address.host
    if host.lower().endswith(".invalid"):
        return True
    if host in SSH_ALIASES and address.port is None:
        return True  # the test ~/.ssh/config leads it to .invalid or a closed port
    return _loopback(host) and PORT in token


VALID_HOSTS = [
    "127.0.0.1", "127.0.0.1", "[::1]", "localhost", "127.0.0.2", "alias-loop", "alias-jump",
    "nohost.invalid", "alias-invalid", "h.odd.invalid",
]  # fmt: skip
valid_address_tokens = st.builds(
    lambda user, host, port: safe_token(user + host + port),
    st.sampled_from(["", "", "root@", "a.b@", "x$@", "_@"]),
    st.sampled_from(VALID_HOSTS),
    st.sampled_from(["", ":<PORT>"]),
)
address_tokens = st.one_of(
    valid_address_tokens,
    valid_address_tokens,
    st.builds(
        lambda user, host, port: safe_token(user + host + port),
        st.sampled_from(ADDRESS_USERS),
        st.one_of(
            st.sampled_from(ADDRESS_HOSTS), st.text(max_size=12).map(lambda t: t.replace("\0", ""))
        ),
        st.sampled_from(ADDRESS_PORTS),
    ),
    st.text(max_size=20).map(safe_words),
)
workers_lists = st.tuples(
    st.lists(address_tokens, min_size=1, max_size=4),
    st.sampled_from([",", " ", ", ", "\t", ",,", "\n", " , "]),
).map(lambda parts: enc(parts[1].join(parts[0])))
workers_values = st.one_of(workers_lists, workers_lists, pool(WORKERS_FILES), any_bytes)


@st.composite
def workers_file(draw: st.DrawFn) -> bytes:
    """The text of a --workers file: addresses, comments, blank lines, odd bytes."""
    lines = draw(
        st.lists(
            st.one_of(
                st.lists(address_tokens, min_size=1, max_size=3).map(" ".join).map(enc),
                pool(["# comment", "", "   ", "nohost.invalid # trailing", "\ufeffnohost.invalid"]),
                st.binary(max_size=8).map(lambda raw: enc(safe_words(dec(no_nul(raw))))),
                st.lists(address_tokens, min_size=1, max_size=3).map(" ".join).map(enc),
                st.lists(valid_address_tokens, min_size=1, max_size=2).map(" ".join).map(enc),
            ),
            max_size=5,
        )
    )
    newline = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    return newline.join(lines) + draw(st.sampled_from([b"", newline]))


def plain_text_values(examples: Sequence[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(pool(examples), any_bytes)


def path_values(examples: Sequence[str]) -> st.SearchStrategy[bytes]:
    relative = text_bytes(20).map(lambda raw: raw.lstrip(b"/~").replace(b"..", b"."))
    return st.one_of(pool(examples), pool(examples), relative, any_bytes)


def cli_values(option: Option) -> st.SearchStrategy[bytes]:
    """Text values for an option, valid and not: what a command line or environment gives."""
    name = option.name
    if name in ("split", "retries", "strikes", "resume", "retry", "timeout", "keepalive"):
        return numbers
    if name in ("hourly-price", "budget"):
        return st.one_of(numbers, pool(["$1", "$0.5", "0.01", "$", "$$1"]))
    special: dict[str, st.SearchStrategy[bytes]] = {
        "workers": workers_values,
        "pre": shell_values,
        "post": shell_values,
        "report": reports,
        "halt": plain_text_values(HALTS),
        "provider": plain_text_values(PROVIDERS),
        "user": plain_text_values(USERS),
        "hub-url": plain_text_values(HUB_URLS),
        "libcloud-driver": st.one_of(
            pool(DRIVER_VALUES), any_bytes.map(lambda raw: raw.replace(b":", b"_"))
        ),
        "libcloud-options": plain_text_values(LIBCLOUD_OPTIONS),
        "sessions": path_values(SESSIONS_VALUES),
        "joblog": path_values(JOBLOG_VALUES),
        "overlay": path_values(OVERLAY_VALUES),
        "ssh-identity": path_values(IDENTITY_VALUES),
        "force": pool(FLAG_VALUES),
        "ec2-type": plain_text_values(["spot", "on-demand", "s3", "ebs", "SPOT", "ondemand"]),
        "ec2-region": plain_text_values(["us-east-1", "eu-west-1", "not a region", "us-east-1/"]),
        "ec2-security-group": plain_text_values(["sg-1", "sg-1,sg-2", ",", "sg-1,,sg-2", "x"]),
        "ec2-subnet": plain_text_values(["subnet-1", "x", "subnet-1,subnet-2"]),
        "ami-id": plain_text_values(["ami-0abc", "ami-", "x"]),
    }
    return special.get(name, plain_text_values(["x", "fuzz", "a b", "ami-1", "1"]))


def template_values(option: Option) -> st.SearchStrategy[object]:
    """Python values for a template attribute: its text values, and other types."""
    texts = cli_values(option).map(dec)
    others = st.one_of(
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.booleans(),
        st.none(),
        st.binary(max_size=4),
        st.lists(texts, max_size=2),
        st.lists(texts, max_size=2).map(tuple),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        texts.map(Path),
        st.lists(st.integers(), min_size=1, max_size=2),
    )
    return st.one_of(texts, texts, others)


# -- cases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A task template file: `class Fuzz(Task)` with attributes, then `Fuzz.main()`."""

    name: str = "task.py"
    attrs: tuple[tuple[str, object], ...] = ()
    base_attrs: tuple[tuple[str, object], ...] = ()  # on a base class Fuzz inherits from
    command: str | None = '"true"'  # Python source of COMMAND (None: not set)
    description: str | None = None  # Python source of DESCRIPTION

    def source(self) -> str:
        lines = ["from pathlib import Path", "", "from cloudtask import Task", "", ""]
        base = "Task"
        if self.base_attrs:
            lines.append("class Base(Task):")
            lines += [f"    {attr} = {py_source(value)}" for attr, value in self.base_attrs]
            lines += ["", ""]
            base = "Base"
        body = [f"    {attr} = {py_source(value)}" for attr, value in self.attrs]
        if self.command is not None:
            body.append(f"    COMMAND = {self.command}")
        if self.description is not None:
            body.append(f"    DESCRIPTION = {self.description}")
        lines.append(f"class Fuzz({base}):")
        lines += body or ["    pass"]
        lines += ["", "", "Fuzz.main()", ""]
        return "\n".join(lines)

    def values(self) -> list[tuple[str, object]]:
        return [*self.base_attrs, *self.attrs]


def py_source(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, Path):
        return f"Path({str(value)!r})"
    if isinstance(value, list):
        return "[" + ", ".join(py_source(item) for item in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(py_source(item) + ", " for item in value) + ")"
    if isinstance(value, dict):
        items = ", ".join(f"{py_source(k)}: {py_source(v)}" for k, v in value.items())
        return "{" + items + "}"
    return repr(value)


@dataclass(frozen=True)
class Case:
    """One run of a command, with everything it is given."""

    area: str
    program: str  # cloudtask, logalyzer or template
    argv: tuple[bytes, ...]
    env: tuple[tuple[str, bytes], ...] = ()
    stdin: bytes = b""
    files: tuple[tuple[str, bytes], ...] = ()  # more files in the case directory
    template: Template | None = None
    fixtures: bool = False  # the sessions directory starts with the fixture sessions
    mutations: tuple[Mutation, ...] = ()  # applied to fixture sessions first
    locked: tuple[int, ...] = ()  # fixture sessions whose lock another process holds

    @property
    def prog(self) -> str:
        if self.program == "template":
            assert self.template is not None
            return self.template.name
        return PROGRAMS[self.program].name


@dataclass(frozen=True)
class Mutation:
    """A change to fixture session `session`: a named one, or a value set in its store."""

    session: int
    name: str  # a key of NAMED_MUTATIONS, or "set"
    table: str = ""
    column: str = ""
    value: object = None

    def statements(self) -> list[tuple[str, tuple[object, ...]]]:
        """The SQL (and its parameters) of a store change."""
        if self.name != "set":
            return [(sql, ()) for sql in NAMED_MUTATIONS[self.name].split("; ")]
        if self.table == "meta":
            sql = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
            return [(sql, (self.column, self.value))]
        sql = (
            f"UPDATE {self.table} SET {self.column} = ? "
            f"WHERE rowid = (SELECT min(rowid) FROM {self.table})"
        )
        return [(sql, (self.value,))]


_NO_STORE = (
    "for n in ('store.sqlite', 'store.sqlite-wal', 'store.sqlite-shm'): (s / n).unlink(True)"
)
# File changes: Python run with s, the session directory (a Path), and shutil.
FILE_MUTATIONS = {
    "no-store": _NO_STORE,
    "empty-store": _NO_STORE + "\n(s / 'store.sqlite').write_bytes(b'')",
    "garbage-store": _NO_STORE + "\n(s / 'store.sqlite').write_bytes(b'not a database' * 100)",
    "garbage-wal": "(s / 'store.sqlite-wal').write_bytes(b'\\xff' * 4096)",
    "lock-is-dir": "(s / 'lock').unlink(True)\n(s / 'lock').mkdir()",
    "log-is-dir": "(s / 'log').unlink(True)\n(s / 'log').mkdir()",
    "workers-is-file": "shutil.rmtree(s / 'workers')\n(s / 'workers').write_bytes(b'')",
    "session-is-file": "shutil.rmtree(s)\ns.write_bytes(b'')",
}
# Store changes: SQL statements separated by "; ".
NAMED_MUTATIONS: dict[str, str] = {
    **FILE_MUTATIONS,
    "no-command": "DELETE FROM meta WHERE key = 'command'",
    "no-config": "DELETE FROM meta WHERE key = 'config'",
    "schema-99": "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
    "schema-1": "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
    "schema-abc": "UPDATE meta SET value = 'abc' WHERE key = 'schema_version'",
    "job-running": "UPDATE jobs SET state = 'running' WHERE id = 1; "
    "INSERT INTO attempts (job, worker, started) VALUES (1, 'local1', 1.0)",
    "job-lost": "UPDATE jobs SET state = 'lost' WHERE id = 1",
    "job-bogus": "UPDATE jobs SET state = 'bogus' WHERE id = 1",
    "no-jobs": "DELETE FROM jobs",
    "drop-jobs": "DROP TABLE jobs",
    "drop-meta": "DROP TABLE meta",
    "drop-attempts": "DROP TABLE attempts",
    "drop-instances": "DROP TABLE instances",
    "state-running": "UPDATE meta SET value = 'running' WHERE key = 'state'",
    "open-instance": "INSERT INTO instances (token, provider, name, intended) "
    "VALUES ('fuzz-open', 'hub', 'hub9', 1.0)",
    "open-instance-unknown-provider": "INSERT INTO instances (token, provider, name, intended) "
    "VALUES ('fuzz-odd', 'nosuchprovider', 'x1', 1.0)",
}
# Values a mutation may put where cloudtask reads commands, options or process tags:
# only harmless ones (a stored command is run on resume).
GUARDED_META = {
    "command": ["true", "", "exit 3", "'"],
    "config": [
        "{", "[1, 2]", "null", '""', "{}", '{"split": "x"}', '{"timeout": "-1"}',
        '{"provider": "bogus"}', '{"nope": 1}', '{"sessions": "/dev/null"}',
        '{"workers": "nohost.invalid"}', '{"pre": "exit 3"}', '{"split": 99999999999999999999}',
        '{"force": "maybe"}', '{"force": true}', '{"report": "py: 1/0"}', '{"halt": "fail=1"}',
        '{"joblog": "/dev/full"}', '{"split": null}', '{"timeout": 1e999}', '{"user": 5}',
    ],
    "local_runs": ["x", "{", "[5]", "[null]", '["", "fuzz-tag-nowhere"]', "[[]]", '"s"', "{}"],
    "session_keys": ["x", "{", "[5]", '["not a key"]', "[]", '"s"'],
    "session_key_workers": ["x", "[]", '{"k": 5}', '{"k": [5]}', "{}", '{"k": ["bad@@address"]}'],
}  # fmt: skip
FREE_META = ["started", "ended", "state", "runs", "schema_version", "sweep_until"]
FREE_COLUMNS = {
    "jobs": ["line", "state", "attempts"],
    "attempts": ["job", "worker", "started", "ended", "outcome", "exit_status", "signal", "tail"],
    "instances": [
        "provider", "name", "size", "hourly_price", "instance_id", "address", "intended",
        "launched", "running", "destroyed", "note",
    ],
}  # fmt: skip
sql_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.none(),
    st.sampled_from(
        ["pending", "running", "ok", "failed", "timeout", "lost", "bogus", "", "1e999", "-1"]
    ),
)
FIXTURE_IDS = (1, 2, 3, 4, 5)
session_ids = st.sampled_from(FIXTURE_IDS)
mutations = st.one_of(
    st.builds(Mutation, session_ids, st.sampled_from(sorted(NAMED_MUTATIONS))),
    st.builds(
        lambda session, key, value: Mutation(session, "set", "meta", key, value),
        session_ids,
        st.sampled_from(FREE_META),
        sql_values,
    ),
    st.sampled_from(sorted(GUARDED_META)).flatmap(
        lambda key: st.builds(
            lambda session, value: Mutation(session, "set", "meta", key, value),
            session_ids,
            st.sampled_from(GUARDED_META[key]),
        )
    ),
    st.sampled_from(sorted(FREE_COLUMNS)).flatmap(
        lambda table: st.builds(
            lambda session, column, value: Mutation(session, "set", table, column, value),
            session_ids,
            st.sampled_from(FREE_COLUMNS[table]),
            sql_values,
        )
    ),
)

# Sessions made once per process and copied into each case that wants them:
# (argv, stdin) of the cloudtask run that makes each; the fifth is the third
# with a launched instance left open on the hub.
FIXTURE_RUNS: tuple[tuple[list[str], bytes], ...] = (
    (["test"], b"1 = 1\n2 = 2\n"),  # 1: finished, every job ok
    (["--retries=1", "test"], b"1 = 1\n1 = 2\n"),  # 2: one job failed
    (["--halt=fail=1", "test"], b"1 = 2\n1 = 1\n1 = 1\n"),  # 3: halted, two pending
    (["--timeout=0.3", "sleep"], b"0\n5\n"),  # 4: one job timed out
)
CLOUD_FIXTURE_SQL = (
    "INSERT INTO instances (token, provider, name, size, hourly_price, intended) "
    "VALUES ('fuzz-token', 'hub', 'hub1', 'small', 0.1, 1.0); "
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('config', "
    '\'{"halt": "fail=1", "hub_url": "http://127.0.0.1:<PORT>/api/", "provider": "hub", '
    '"sessions": "sessions"}\')'
)

SAFE_PROGRAMS = {"true", "-", "--split=2"}  # the first word of a command cases may run

# -- the areas ---------------------------------------------------------------------------------

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
    options = draw(st.sampled_from([[], [], [b"--split=2"], [b"--split=3", b"--retries=1"]]))
    return Case("input", "cloudtask", (*options, b"true"), stdin=draw(job_input()))


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
        [b"--timeout=0.5"], [b"--strikes=1"],
    ]  # fmt: skip
    for extra in draw(st.lists(st.sampled_from(extras), max_size=2)):
        argv += extra
    argv.append(b"true")
    stdin = draw(st.sampled_from([b"1\n2\n", b"1\n", b""]))
    return Case("workers", "cloudtask", tuple(argv), env, stdin, files)


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


# -- what may run: unsafe() ------------------------------------------------------------------


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


@st.composite
def fewer_cloud_runs(draw: st.DrawFn, cases: st.SearchStrategy[Case]) -> Case:
    """One case in four that may launch cloud workers keeps its jobs (each costs seconds)."""
    case = draw(cases.filter(lambda case: unsafe(case) is None))
    if case.stdin and cloudish(case) and draw(st.integers(0, 3)) != 0:
        case = replace(case, stdin=b"")
    return case


AREAS: dict[str, st.SearchStrategy[Case]] = {
    "input": input_cases(),
    "options-cli": fewer_cloud_runs(cli_cases()),
    "options-env": fewer_cloud_runs(env_cases()),
    "options-template": fewer_cloud_runs(template_cases()),
    "workers": fewer_cloud_runs(workers_cases()),
    "sessions": session_cases().filter(lambda case: unsafe(case) is None),
    "logalyzer": logalyzer_cases().filter(lambda case: unsafe(case) is None),
}

# -- running a case --------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40


def enter_network_namespace() -> None:
    """In the child, before exec: a network of its own, with only a loopback (up)."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.pack("16sH14x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
        fcntl.ioctl(sock, SIOCSIFFLAGS, flags)


def network_namespaces_work() -> bool:
    try:
        subprocess.run(["true"], preexec_fn=enter_network_namespace, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@dataclass
class Result:
    status: int
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool = False  # SIGTERM was sent
    slow_abort: bool = False  # still running GRACE seconds after SIGTERM: SIGTERM again
    hung: bool = False  # still running after the second SIGTERM: killed
    incomplete: list[str] = field(default_factory=list)  # session dirs without a complete store
    new_sessions: list[str] = field(default_factory=list)
    before: dict[int, StoreSummary | None] = field(default_factory=dict)
    after: dict[int, StoreSummary | None] = field(default_factory=dict)
    jobs: list[tuple[str, str]] | None = None  # (state, command) of session 1, input area


@dataclass(frozen=True)
class StoreSummary:
    states: tuple[tuple[int, str], ...]
    attempts: int
    command: str | None


def store_summary(session: Path) -> StoreSummary | None:
    """What a session has recorded, or None when its store cannot be read."""
    store = session / "store.sqlite"
    if not store.is_file():
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            states = tuple(db.execute("SELECT id, state FROM jobs ORDER BY id").fetchall())
            attempts = db.execute("SELECT count(*) FROM attempts").fetchone()[0]
            row = db.execute("SELECT value FROM meta WHERE key = 'command'").fetchone()
    except sqlite3.Error:
        return None
    return StoreSummary(states, int(attempts), None if row is None else str(row[0]))


def session_dirs(root: Path) -> list[Path]:
    """Directories that look like sessions (SESSIONS/ID/), anywhere in the case directory."""
    found = []
    for directory, names, files in os.walk(root):
        here = Path(directory)
        if len(here.relative_to(root).parts) > 4:
            names[:] = []
            continue
        if (
            here.name.isdigit()
            and here != root
            and ({"store.sqlite", "lock", "log"} & set(files) or "workers" in names)
        ):
            found.append(here)
            names[:] = []
    return found


def complete(session: Path) -> bool:
    summary = store_summary(session)
    return summary is not None and summary.command is not None


def kill_marked(mark: str) -> None:
    """Kill what a case left running (a watchdog, a job): every process with its mark."""
    needle = f"{MARK}={mark}".encode()
    for _ in range(3):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as file:
                    environment = file.read().split(b"\0")
            except OSError:
                continue
            if needle in environment:
                found = True
                with contextlib.suppress(OSError):
                    os.kill(int(entry.name), signal.SIGKILL)
        if not found:
            return
        time.sleep(0.05)


class Sandbox:
    """Runs cases: each in a fresh directory and, when possible, a network namespace."""

    def __init__(self, timeout: float = 5.0, *, fast: bool = False) -> None:
        self.timeout = timeout
        self.fast = fast  # no jobs for cases that may launch cloud workers
        self.netns = network_namespaces_work() and os.environ.get("CLOUDTASK_FUZZ_NETNS") != "0"
        # A bound socket that never listens: connections to its port are refused.
        self._sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM)]
        self._sockets[0].bind(("127.0.0.1", 0))
        self.port = self._sockets[0].getsockname()[1]
        with contextlib.suppress(OSError):
            six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            self._sockets.append(six)
            six.bind(("::1", self.port))
        self._fixtures: Path | None = None

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        if self._fixtures is not None:
            shutil.rmtree(self._fixtures.parent, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the environment of a case ---------------------------------------------------------

    def sub(self, raw: bytes, root: Path) -> bytes:
        return raw.replace(TMP.encode(), str(root).encode()).replace(
            PORT.encode(), str(self.port).encode()
        )

    def environment(self, root: Path, mark: str) -> dict[bytes, bytes]:
        closed = f"127.0.0.1:{self.port}"
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": f"{root}/home",
            "LANG": "C.UTF-8",
            "CLOUDTASK_SESSIONS": f"{root}/sessions",
            "CLOUDTASK_HUB_URL": f"http://{closed}/api/",
            "CLOUDTASK_SMTP_HOST": "127.0.0.1",
            "CLOUDTASK_SMTP_PORT": str(self.port),
            "AWS_ENDPOINT_URL": f"http://{closed}",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ACCESS_KEY_ID": "fuzz",
            "AWS_SECRET_ACCESS_KEY": "fuzz",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            MARK: mark,
        }
        return {key.encode(): value.encode() for key, value in env.items()}

    def prepare(self, case: Case, root: Path) -> None:
        for directory in STATIC_DIRS:
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "home").chmod(0o700)
        for name, content in [*STATIC_FILES.items(), *case.files]:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.sub(content, root))
        if case.template is not None:
            source = enc(case.template.source())
            (root / case.template.name).write_bytes(self.sub(source, root))
        if case.fixtures:
            shutil.copytree(self.fixtures(), root / "sessions")
            for mutation in case.mutations:
                self.mutate(root / "sessions" / str(mutation.session), mutation)

    def mutate(self, session: Path, mutation: Mutation) -> None:
        if not session.is_dir():
            return  # an earlier mutation made it a file
        if mutation.name in FILE_MUTATIONS:
            with contextlib.suppress(OSError):
                exec(FILE_MUTATIONS[mutation.name], {"s": session, "shutil": shutil})
            return
        statements = mutation.statements()
        if not (session / "store.sqlite").is_file():
            return
        with (
            contextlib.suppress(sqlite3.Error, OverflowError),
            contextlib.closing(sqlite3.connect(session / "store.sqlite")) as db,
            db,
        ):
            for sql, parameters in statements:
                db.execute(sql, parameters)

    def fixtures(self) -> Path:
        """The fixture sessions, made on first use (and kept for the process)."""
        if self._fixtures is None:
            base = Path(tempfile.mkdtemp(prefix="cloudtask-fuzz-fixtures-"))
            make_fixtures(base, self)
            self._fixtures = base / "sessions"
        return self._fixtures

    # -- one case --------------------------------------------------------------------------

    def effective(self, case: Case) -> Case:
        """The case as run: in fast mode, no jobs where a cloud provider may be chosen."""
        if self.fast and case.stdin and cloudish(case):
            return replace(case, stdin=b"")
        return case

    def run(self, case: Case) -> Result:
        root = Path(tempfile.mkdtemp(prefix="cloudtask-fuzz-"))
        mark = uuid.uuid4().hex
        locks: list[int] = []
        try:
            self.prepare(case, root)
            fixture_paths = (
                {n: root / "sessions" / str(n) for n in FIXTURE_IDS} if case.fixtures else {}
            )
            before = {n: store_summary(path) for n, path in fixture_paths.items()}
            for number in case.locked:
                locks.append(hold_lock(fixture_paths[number]))
            if case.program == "template":
                assert case.template is not None
                argv = [PYTHON.encode(), str(root / case.template.name).encode()]
            else:
                argv = [str(PROGRAMS[case.program]).encode()]
            argv += [self.sub(arg, root) for arg in case.argv]
            env = self.environment(root, mark)
            env.update({key.encode(): self.sub(value, root) for key, value in case.env})
            result = self._execute(argv, env, root, case.stdin)
            for fd in locks:
                os.close(fd)
            locks = []
            kill_marked(mark)
            found = session_dirs(root)
            known = {str(path) for path in fixture_paths.values()}
            result.new_sessions = [str(p.relative_to(root)) for p in found if str(p) not in known]
            result.incomplete = [
                str(path.relative_to(root))
                for path in found
                if str(path) not in known and not complete(path)
            ]
            result.before = before
            result.after = {n: store_summary(path) for n, path in fixture_paths.items()}
            if case.area == "input" and (root / "sessions" / "1").is_dir():
                result.jobs = stored_jobs(root / "sessions" / "1")
            return result
        finally:
            for fd in locks:
                os.close(fd)
            kill_marked(mark)
            shutil.rmtree(root, ignore_errors=True)

    def _execute(
        self, argv: list[bytes], env: dict[bytes, bytes], root: Path, stdin: bytes
    ) -> Result:
        start = time.monotonic()
        process = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=enter_network_namespace if self.netns else None,
        )
        result = Result(0, b"", b"", 0.0)
        try:
            out, err = process.communicate(stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # Stopped as a user would: SIGTERM; again to skip the cleanup; then SIGKILL.
            result.timed_out = True
            process.send_signal(signal.SIGTERM)
            try:
                out, err = process.communicate(timeout=GRACE)
            except subprocess.TimeoutExpired:
                result.slow_abort = True
                process.send_signal(signal.SIGTERM)
                try:
                    out, err = process.communicate(timeout=GRACE / 2)
                except subprocess.TimeoutExpired:
                    result.hung = True
                    process.kill()
                    out, err = process.communicate()
        result.status, result.stdout, result.stderr = process.returncode, out, err
        result.seconds = time.monotonic() - start
        return result


def hold_lock(session: Path) -> int:
    """Hold a session's lock as a running controller would (-1: it has no lock to hold)."""
    try:
        fd = os.open(session / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return os.open(os.devnull, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def stored_jobs(session: Path) -> list[tuple[str, str]] | None:
    store = session / "store.sqlite"
    try:
        with contextlib.closing(
            sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            rows = db.execute("SELECT state, command FROM jobs ORDER BY id").fetchall()
    except sqlite3.Error:
        return None
    return [(str(state), str(command)) for state, command in rows]


def make_fixtures(base: Path, sandbox: Sandbox) -> None:
    """The fixture sessions 1-5 in base/sessions, made by real cloudtask runs."""
    mark = uuid.uuid4().hex
    for argv, stdin in FIXTURE_RUNS:
        env = sandbox.environment(base, mark)
        command = [str(PROGRAMS["cloudtask"]), "--sessions=sessions", *argv]
        done = subprocess.run(
            command,
            cwd=base,
            env=env,
            input=stdin,
            capture_output=True,
            timeout=60,
            preexec_fn=enter_network_namespace if sandbox.netns else None,
        )
        if done.returncode not in (0, 1):
            raise RuntimeError(f"cannot make a fixture session: {command}: {done.stderr!r}")
    sessions = base / "sessions"
    shutil.copytree(sessions / "3", sessions / "5")
    with contextlib.closing(sqlite3.connect(sessions / "5" / "store.sqlite")) as db, db:
        for sql in CLOUD_FIXTURE_SQL.replace(PORT, str(sandbox.port)).split("; "):
            db.execute(sql)
    kill_marked(mark)


# -- checks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    area: str
    kind: str
    detail: str
    case: Case
    note: bool = False  # an observation, not a broken promise

    @property
    def signature(self) -> tuple[str, str, str]:
        return (self.area, self.kind, normalized(self.detail))


def normalized(detail: str) -> str:
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", detail)
    text = re.sub(r"/tmp/\S+", "PATH", text)
    return re.sub(r"\d+", "N", text)[:90]


TRACEBACK = b"Traceback (most recent call last)"


def traceback_summary(text: bytes) -> str:
    lines = dec(text).splitlines()
    start = max((i for i, line in enumerate(lines) if "Traceback (most" in line), default=0)
    frames = [line.strip() for line in lines[start:] if line.strip().startswith('File "')]
    where = ""
    if frames:
        match = re.match(r'File "([^"]+)", line \d+, in (\S+)', frames[-1])
        if match:
            where = f"{Path(match[1]).name}:{match[2]}: "
    tail = [line for line in lines[start:] if line and not line.startswith(" ")]
    return where + (tail[-1] if tail else "?")


def check(case: Case, result: Result) -> list[Failure]:
    """The contract's promises that this run broke."""
    failures: list[Failure] = []

    def fail(kind: str, detail: str, *, note: bool = False) -> None:
        failures.append(Failure(case.area, kind, detail, case, note))

    status = result.status
    allowed = {0, 2} if case.program == "logalyzer" else {0, 1, 2}
    tracebacks = [traceback_summary(s) for s in (result.stdout, result.stderr) if TRACEBACK in s]
    for summary in tracebacks:
        fail("traceback", f"{summary} (exit {status})")
    if result.hung:
        fail("hang", f"still running {GRACE * 1.5:.0f} s after SIGTERM, and SIGTERM again")
    elif result.slow_abort:
        fail(
            "slow-abort",
            f"still running {GRACE:.0f} s after SIGTERM; a second SIGTERM: exit {status}",
            note=True,
        )
    elif result.timed_out:
        if case.program == "logalyzer":
            fail("slow", "the logalyzer ran past the case's time limit")
        elif status not in (0, 1, 2, -signal.SIGTERM) and not tracebacks:
            fail("exit-status", f"exit status {status} after SIGTERM")
    elif status not in allowed and not tracebacks:
        fail("exit-status", f"exit status {status}")
    if status == 2 and not result.timed_out:
        problem = error_format(result.stderr, case.prog)
        if problem:
            fail("error-format", problem)
        first = dec(result.stderr).split("\n")[0]
        if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", first):
            fail("control-characters", f"the error shows them raw: {first[:100]!r}", note=True)
        where = error_names(case)
        if not problem and where and not any(name in first for name in where):
            fail("where", f"names none of {', '.join(where)}: {first[:100]!r}", note=True)
    if not result.timed_out:
        for path in result.incomplete:
            fail("half-made-session", f"{path} has no complete store (exit {status})")
        if status == 2 and result.new_sessions and not result.incomplete:
            fail("exit-2-kept-session", f"exit 2 left {', '.join(result.new_sessions)}", note=True)
    for number, before in result.before.items():
        lost = lost_records(before, result.after.get(number), status)
        if lost:
            fail("lost-records", f"session {number}: {lost}")
    if case.area == "input" and not result.timed_out and not failures:
        problem = input_problem(case, result)
        if problem:
            fail(*problem)
    if case.program == "logalyzer" and status == 0 and not result.timed_out:
        problem = logalyzer_output_problem(case, result)
        if problem:
            fail("logalyzer-output", problem)
    if case.area == "workers" and status == 0 and not result.timed_out and case.stdin:
        try:
            parsed = parse_argv([dec(arg) for arg in case.argv])
        except CloudtaskError:
            parsed = None
        if parsed is not None and not (parsed.help or parsed.version):
            fail("workers-ok", "exit 0 although no --workers address can be reached")
    return failures


def error_names(case: Case) -> list[str]:
    """For a case that sets one option (nothing else can be wrong): the names its error
    should give, the setting's own and the option's flag."""
    if case.area == "options-env" and case.argv == (b"true",) and case.stdin.startswith(b"1"):
        options = [option for option in OPTIONS if option.env in dict(case.env)]
        if len(case.env) == 1 and len(options) == 1:
            return [options[0].env, options[0].flag_name]
    template = case.template
    if (
        case.area == "options-template"
        and template is not None
        and len(template.values()) == 1
        and template.command == '"true"'
        and case.argv == ()
        and case.stdin.startswith(b"1")
    ):
        attr = template.values()[0][0]
        option = BY_ATTR.get(attr)
        return [attr] if option is None else [attr, option.flag_name]
    return []


def error_format(stderr: bytes, prog: str) -> str | None:
    lines = dec(stderr).removesuffix("\n").split("\n")
    if lines == [""]:
        lines = []
    if not lines:
        return "exit 2 with nothing on stderr"
    if not lines[0].startswith(prog + ": ") or not lines[0][len(prog) + 2 :].strip():
        return f"first line is not '{prog}: ERROR': {lines[0][:120]!r}"
    extra = [line for line in lines[1:] if not line.startswith("usage:")]
    if extra:
        return f"{len(lines)} lines: {lines[0][:80]!r} then {extra[0][:80]!r}"
    return None


def lost_records(before: StoreSummary | None, after: StoreSummary | None, status: int) -> str:
    if before is None:
        return ""
    if after is None:
        return "its store cannot be read any more"
    if len(after.states) != len(before.states):
        return f"{len(before.states)} jobs became {len(after.states)}"
    if after.attempts < before.attempts:
        return f"{before.attempts} attempts became {after.attempts}"
    if after.command != before.command:
        return f"its command {before.command!r} became {after.command!r}"
    was = dict(before.states)
    for job, state in after.states:
        if was.get(job) == "ok" and state != "ok":
            return f"job {job} was ok, now {state}"
    if status == 2 and after.states != before.states:
        changed = [(j, was.get(j), s) for j, s in after.states if was.get(j) != s]
        job, old, new = changed[0]
        return f"a refused run (exit 2) changed job states: job {job} {old} -> {new}"
    return ""


# The README: a command longer than this once quoted is refused with its line.
LONGEST_COMMAND = 126_976


def expected_jobs(stdin: bytes) -> tuple[int | None, list[list[str]]]:
    """By the README: (the line refused first, or None; the words of each job)."""
    jobs: list[list[str]] = []
    lines = stdin.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, 1):
        raw = raw.removesuffix(b"\r")
        if b"\0" in raw:
            return number, jobs
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return number, jobs
        stripped = text.lstrip(" \t\r\n")
        if not stripped or stripped.startswith("#"):
            continue
        try:
            words = shlex.split(text)
        except ValueError:
            return number, jobs
        if len(shlex.quote(job_command(words)).encode()) > LONGEST_COMMAND:
            return number, jobs
        jobs.append(words)
    return None, jobs


def job_command(words: list[str]) -> str:
    return " ".join(["true", *(shlex.quote(word) for word in words)])


def input_problem(case: Case, result: Result) -> tuple[str, str] | None:
    bad_line, jobs = expected_jobs(case.stdin)
    first = dec(result.stderr).split("\n")[:1] or [""]
    if bad_line is not None:
        if result.status != 2:
            return "input-oracle", f"line {bad_line} is bad input, but exit {result.status}"
        if not first[0].startswith(f"cloudtask: input line {bad_line}: "):
            return "input-oracle", f"expected 'input line {bad_line}:', got {first[0][:100]!r}"
        return None
    if not jobs:
        if result.status != 2 or "no jobs" not in first[0]:
            return "input-oracle", f"no job lines: exit {result.status}, {first[:1]!r}"
        return None
    commands = [job_command(words) for words in jobs]
    too_long = any(len(enc(command)) >= MAX_ARG_STRLEN for command in commands)
    if result.status != (1 if too_long else 0):
        return "input-oracle", f"{len(jobs)} good jobs, exit {result.status}: {first[:1]!r}"
    if result.jobs is None:
        return "input-oracle", "exit 0 but session 1 has no readable store"
    stored = [command for _, command in result.jobs]
    if len(stored) != len(commands):
        return "input-oracle", f"{len(commands)} jobs, {len(stored)} stored"
    for number, (want, got) in enumerate(zip(commands, stored, strict=True), 1):
        if want != got:
            return "input-oracle", f"job {number} stored as {got[:60]!r}, expected {want[:60]!r}"
    if not too_long and any(state != "ok" for state, _ in result.jobs):
        return "input-oracle", "exit 0 but not every job is ok"
    return None


def logalyzer_output_problem(case: Case, result: Result) -> str | None:
    args = logalyzer_parse_args([dec(arg) for arg in case.argv])
    if args.help or args.version or not args.json:
        return None
    try:
        json.loads(result.stdout)
    except ValueError as exc:
        return f"--json printed no JSON object: {exc}"
    return None


# -- reproducers -----------------------------------------------------------------------------


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
        lines.append('.venv/bin/python benchmarks/fuzz.py --make-fixtures "$T"')
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


# -- the run -----------------------------------------------------------------------------------


@dataclass
class AreaStats:
    area: str
    cases: int = 0
    failing: int = 0
    timeouts: int = 0
    seconds: float = 0.0
    failures: dict[tuple[str, str, str], tuple[int, Failure]] = field(default_factory=dict)
    notes: dict[tuple[str, str, str], tuple[int, Failure]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, case: Case, result: Result, failures: list[Failure]) -> None:
        self.cases += 1
        self.seconds += result.seconds
        self.timeouts += result.timed_out
        real = [f for f in failures if not f.note]
        self.failing += bool(real)
        for failure in failures:
            book = self.notes if failure.note else self.failures
            count, smallest = book.get(failure.signature, (0, failure))
            if case_size(failure.case) < case_size(smallest.case):
                smallest = failure
            book[failure.signature] = (count + 1, smallest)

    def merge(self, other: AreaStats) -> None:
        self.cases += other.cases
        self.failing += other.failing
        self.timeouts += other.timeouts
        self.seconds += other.seconds
        self.errors += other.errors
        for mine, theirs in ((self.failures, other.failures), (self.notes, other.notes)):
            for key, (count, failure) in theirs.items():
                had, smallest = mine.get(key, (0, failure))
                if case_size(failure.case) < case_size(smallest.case):
                    smallest = failure
                mine[key] = (had + count, smallest)


def case_size(case: Case) -> int:
    template = len(case.template.source()) if case.template else 0
    return (
        sum(len(arg) for arg in case.argv)
        + sum(len(v) for _, v in case.env)
        + len(case.stdin)
        + sum(len(c) for _, c in case.files)
        + template
        + 50 * len(case.mutations)
    )


_SANDBOX: Sandbox | None = None


def _process_sandbox(timeout: float) -> Sandbox:
    """This worker process's sandbox (its fixtures are made once), closed when it exits."""
    global _SANDBOX
    if _SANDBOX is None:
        _SANDBOX = Sandbox(timeout)
        multiprocessing.util.Finalize(_SANDBOX, _SANDBOX.close, exitpriority=10)
    return _SANDBOX


def explore(area: str, examples: int, deadline: float, seed: int, timeout: float) -> AreaStats:
    """One hypothesis run of an area (in a worker process); what it found."""
    sandbox = _process_sandbox(timeout)
    stats = AreaStats(area)

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(AREAS[area])
    def one(case: Case) -> None:
        if time.time() > deadline:
            return
        case = sandbox.effective(case)
        try:
            result = sandbox.run(case)
        except Exception as exc:  # the harness's own failure: say so, go on
            stats.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}: {case!r:.300}")
            return
        stats.add(case, result, check(case, result))

    try:
        one()
    except Exception as exc:  # the generator gave up: say so, keep the rest
        stats.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    return stats


WEIGHTS = {
    "input": 5,
    "options-cli": 6,
    "options-env": 4,
    "options-template": 4,
    "workers": 4,
    "sessions": 4,
    "logalyzer": 3,
}


def plan(cases: int, areas: Sequence[str], chunk: int = 60) -> list[tuple[str, int]]:
    """(area, examples) runs: each area's share of `cases` in chunks, areas interleaved."""
    total = sum(WEIGHTS[area] for area in areas)
    runs: list[tuple[float, str, int]] = []
    for area in areas:
        share = max(1, round(cases * WEIGHTS[area] / total))
        starts = range(0, share, chunk)
        # Each area's chunks spread evenly over the run: a time limit cuts every area alike.
        runs += [(start / share, area, min(chunk, share - start)) for start in starts]
    return [(area, examples) for _, area, examples in sorted(runs, key=lambda run: run[0])]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3000, help="cases in all (default 3000)")
    parser.add_argument("--seconds", type=float, default=540, help="stop starting cases after")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="cases at once")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before SIGTERM")
    parser.add_argument("--area", action="append", choices=sorted(AREAS), help="only these")
    parser.add_argument("--seed", type=int, help="base seed (default: random)")
    parser.add_argument("--make-fixtures", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_fixtures:
        with Sandbox() as sandbox:
            make_fixtures(Path(args.make_fixtures), sandbox)
        return 0
    areas = args.area or list(AREAS)
    base_seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    start = time.time()
    deadline = start + args.seconds
    with Sandbox() as probe:
        netns = probe.netns
    print(
        f"fuzzing {', '.join(areas)}: {args.cases} cases, {args.jobs} at a time, seed {base_seed}, "
        + ("each in a network namespace" if netns else "no network namespace (not permitted)"),
        file=sys.stderr,
    )
    totals = {area: AreaStats(area) for area in areas}
    with ProcessPoolExecutor(max_workers=args.jobs) as executor:
        futures = [
            executor.submit(explore, area, examples, deadline, base_seed + n, args.timeout)
            for n, (area, examples) in enumerate(plan(args.cases, areas))
        ]
        for future in futures:
            stats = future.result()
            totals[stats.area].merge(stats)
            print(f"  {stats.area}: {stats.cases} cases, {stats.failing} failing", file=sys.stderr)
    elapsed = time.time() - start
    print_report(totals, elapsed, base_seed)
    return 1 if any(stats.failing for stats in totals.values()) else 0


def print_report(totals: dict[str, AreaStats], elapsed: float, base_seed: int) -> None:
    print(
        f"\n{'area':<18} {'cases':>6} {'failures':>9} {'distinct':>9} {'timeouts':>9} {'s/case':>7}"
    )
    for stats in totals.values():
        per_case = stats.seconds / stats.cases if stats.cases else 0.0
        print(
            f"{stats.area:<18} {stats.cases:>6} {stats.failing:>9} {len(stats.failures):>9} "
            f"{stats.timeouts:>9} {per_case:>7.2f}"
        )
    all_cases = sum(stats.cases for stats in totals.values())
    all_failing = sum(stats.failing for stats in totals.values())
    print(f"{'total':<18} {all_cases:>6} {all_failing:>9}")
    print(f"\n{elapsed:.0f} s, seed {base_seed}")
    for title, attribute in (("failures", "failures"), ("observations", "notes")):
        found = [item for stats in totals.values() for item in getattr(stats, attribute).values()]
        if not found:
            continue
        print(f"\n== {title} ({len(found)} distinct) ==")
        for count, failure in sorted(found, key=lambda item: (item[1].area, item[1].kind)):
            print(f"\n[{failure.area}] {failure.kind}: {failure.detail} ({count} cases)")
            print(textwrap.indent(reproducer(failure.case), "    "))
    errors = [f"{s.area}: {e}" for s in totals.values() for e in s.errors]
    if errors:
        print("\n== generator errors ==")
        for error in errors:
            print(error)


if __name__ == "__main__":
    sys.exit(main())
