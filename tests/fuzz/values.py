"""The values cases are made of: odd bytes and text, option values by kind, worker
addresses and files, and the placeholders a case's directory and closed port replace.

Unsafe values (a reachable address, a path outside the case's directory) are
made safe here or refused by tests/fuzz/safety.py before a case runs.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from hypothesis import strategies as st
from libcloud.compute.providers import DRIVERS as LIBCLOUD_DRIVERS

from cloudtask.addresses import Address, parse_address
from cloudtask.config import Option

ROOT = Path(__file__).resolve().parents[2]
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
    if name in ("split", "retries", "strikes", "resume", "retry", "timeout", "keepalive", "lease"):
        return numbers
    if name == "slots":
        return st.one_of(numbers, pool(["auto", "AUTO", " auto ", "auto1", "2", "64"]))
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
